//! Socket collector: listening TCP/UDP ports and established TCP connections, IPv4 and IPv6.
//!
//! Sources: netlink `sock_diag` (one dump per family and protocol, states filtered in the kernel)
//! or the `/proc/net` tables (`procfs_net.rs`). Both yield [`RawSocket`]s, which the pure
//! [`classify_tcp`] / [`classify_udp`] turn into sample entries.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{SockDiagMessage, AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use super::interfaces::{normalise, InterfaceMap};
use super::procfs_net::{
    parse_proc_net_into, Proto, RawSocket, WordOrder, STATE_CLOSE, STATE_ESTABLISHED, STATE_LISTEN,
};
use super::{read_bounded, Error, SocketSource};
use crate::sample::{Connection, ListeningPort};

/// Largest `/proc/net` table we read: 32 MiB is ~200,000 sockets at 150 bytes a line.
const MAX_PROC_NET_BYTES: u64 = 32 * 1024 * 1024;

/// Receive buffer for one netlink datagram: the kernel never builds dump messages above 32 KiB
/// (`netlink_dump`), so a smaller buffer could truncate one.
const NETLINK_RECV_BYTES: usize = 32 * 1024;

/// Most sockets one dump may return before we call it a runaway (matches the procfs bound).
const MAX_SOCKETS_PER_DUMP: usize = 200_000;

/// One of the four socket tables.
#[derive(Debug, Clone, Copy)]
struct Table {
    name: &'static str,
    file: &'static str,
    family: u8,
    proto: Proto,
    /// Absent on kernels without IPv6: a missing file means "no sockets", not a failure.
    v6: bool,
}

const TCP4: Table = Table {
    name: "tcp4",
    file: "net/tcp",
    family: AF_INET,
    proto: Proto::Tcp,
    v6: false,
};
const TCP6: Table = Table {
    name: "tcp6",
    file: "net/tcp6",
    family: AF_INET6,
    proto: Proto::Tcp,
    v6: true,
};
const UDP4: Table = Table {
    name: "udp4",
    file: "net/udp",
    family: AF_INET,
    proto: Proto::Udp,
    v6: false,
};
const UDP6: Table = Table {
    name: "udp6",
    file: "net/udp6",
    family: AF_INET6,
    proto: Proto::Udp,
    v6: true,
};
const TABLES: [Table; 4] = [TCP4, TCP6, UDP4, UDP6];

/// The socket blocks of one sample; `None` = that part failed (its error is in `errors`).
#[derive(Debug, Default)]
pub(crate) struct SocketBlocks {
    pub(crate) tcp_listen: Option<Vec<ListeningPort>>,
    pub(crate) connections: Option<Vec<Connection>>,
    pub(crate) udp_listen: Option<Vec<ListeningPort>>,
    pub(crate) errors: Vec<Error>,
}

/// Where sockets are read from, resolved from [`SocketSource`] at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Netlink,
    Procfs,
    /// Netlink, falling back to procfs per table.
    Auto,
}

/// Reads the socket tables from netlink or procfs.
#[derive(Debug)]
pub(crate) struct SocketCollector {
    mode: Mode,
    proc_root: PathBuf,
    /// Per table (index into `TABLES`): netlink said it cannot serve it; use procfs from now on.
    netlink_unavailable: [AtomicBool; 4],
    /// The fallback is logged once per process (spec: the lead's brief).
    fallback_logged: AtomicBool,
}

impl SocketCollector {
    /// `Auto` with a `proc_root` other than `/proc` reads procfs: netlink only ever shows the
    /// agent's own network namespace, a fixture tree or a mounted host `/proc` is the point
    /// (spec: metrics-report.md D.15).
    pub(crate) fn new(source: SocketSource, proc_root: &Path) -> Self {
        let mode = match source {
            SocketSource::Netlink => Mode::Netlink,
            SocketSource::Procfs => Mode::Procfs,
            SocketSource::Auto if proc_root != Path::new("/proc") => Mode::Procfs,
            SocketSource::Auto => Mode::Auto,
        };
        SocketCollector {
            mode,
            proc_root: proc_root.to_owned(),
            netlink_unavailable: Default::default(),
            fallback_logged: AtomicBool::new(false),
        }
    }

    /// Samples all four tables and classifies them against the current interface map.
    pub(crate) fn collect(&self) -> SocketBlocks {
        let mut blocks = SocketBlocks::default();
        let map = match InterfaceMap::from_system() {
            Ok(map) => map,
            Err(source) => {
                // Without the map a bound listener would look like a wildcard one: omit, don't lie.
                blocks.errors.push(Error::Interfaces { source });
                return blocks;
            }
        };
        let mut raw = Vec::new();
        match self.read_tables(&[0, 1], &mut raw) {
            Ok(()) => {
                let (listen, connections) = classify_tcp(&raw, &map);
                blocks.tcp_listen = Some(listen);
                blocks.connections = Some(connections);
            }
            Err(e) => blocks.errors.push(e),
        }
        raw.clear();
        match self.read_tables(&[2, 3], &mut raw) {
            Ok(()) => blocks.udp_listen = Some(classify_udp(&raw, &map)),
            Err(e) => blocks.errors.push(e),
        }
        blocks
    }

    fn read_tables(&self, indexes: &[usize], out: &mut Vec<RawSocket>) -> Result<(), Error> {
        for &i in indexes {
            // Invariant: callers pass indexes 0..4 of TABLES.
            let table = TABLES[i];
            match self.mode {
                Mode::Procfs => self.read_procfs(table, out)?,
                Mode::Netlink => read_netlink(table, out)?,
                Mode::Auto if self.netlink_unavailable[i].load(Ordering::Relaxed) => {
                    self.read_procfs(table, out)?
                }
                Mode::Auto => {
                    let mark = out.len();
                    if let Err(error) = read_netlink(table, out) {
                        out.truncate(mark);
                        if let Error::Netlink { source, .. } = &error {
                            if is_unavailable(source) {
                                self.netlink_unavailable[i].store(true, Ordering::Relaxed);
                            }
                        }
                        if !self.fallback_logged.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                %error,
                                proc_root = %self.proc_root.display(),
                                "Netlink sock_diag failed; reading sockets from /proc/net instead."
                            );
                        }
                        self.read_procfs(table, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn read_procfs(&self, table: Table, out: &mut Vec<RawSocket>) -> Result<(), Error> {
        let path = self.proc_root.join(table.file);
        let text = match read_bounded(&path, MAX_PROC_NET_BYTES) {
            Ok(text) => text,
            Err(e) if table.v6 && e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(Error::ProcNetRead { path, source }),
        };
        parse_proc_net_into(&text, table.proto, WordOrder::NATIVE, out)
            .map_err(|source| Error::ProcNetParse { path, source })
    }
}

/// Errors after which netlink will not start working by itself: no sock_diag in this kernel or
/// emulator (EPROTONOSUPPORT under qemu-user), no permission, no module for this family/protocol.
fn is_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTONOSUPPORT
                | libc::EAFNOSUPPORT
                | libc::EACCES
                | libc::EPERM
                | libc::ENOENT
                | libc::EOPNOTSUPP
                | libc::EINVAL
        )
    )
}

/// One sock_diag dump. TCP asks the kernel for LISTEN and ESTABLISHED only, UDP for CLOSE only
/// (unconnected sockets), so the kernel does the filtering.
fn read_netlink(table: Table, out: &mut Vec<RawSocket>) -> Result<(), Error> {
    netlink_dump(table, out).map_err(|source| Error::Netlink {
        table: table.name,
        source,
    })
}

fn netlink_dump(table: Table, out: &mut Vec<RawSocket>) -> io::Result<()> {
    let (protocol, states) = match table.proto {
        Proto::Tcp => (IPPROTO_TCP, StateFlags::LISTEN | StateFlags::ESTABLISHED),
        Proto::Udp => (IPPROTO_UDP, StateFlags::CLOSE),
    };
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: table.family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: SocketId::new_v4(), // ignored by dumps
        })
        .into(),
    );
    request.finalize();
    let mut send_buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut send_buf);
    socket.send(&send_buf, 0)?;

    let mut buf = vec![0u8; NETLINK_RECV_BYTES];
    let mut count = 0usize;
    loop {
        let len = socket.recv(&mut &mut buf[..], 0)?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink dump ended without NLMSG_DONE",
            ));
        }
        // Invariant: recv never reports more bytes than the buffer holds.
        let mut rest = &buf[..len.min(buf.len())];
        while !rest.is_empty() {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            // Messages are padded to 4 bytes (NLMSG_ALIGN).
            // Saturate: on 32-bit targets a length near u32::MAX must not overflow (audit).
            let step = (message.header.length as usize).saturating_add(3) & !3;
            if step == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "zero-length netlink message",
                ));
            }
            rest = rest.get(step..).unwrap_or(&[]);
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    count += 1;
                    if count > MAX_SOCKETS_PER_DUMP {
                        return Err(io::Error::other(format!(
                            "more than {MAX_SOCKETS_PER_DUMP} sockets in one dump"
                        )));
                    }
                    let id = &response.header.socket_id;
                    out.push(RawSocket {
                        proto: table.proto,
                        local: std::net::SocketAddr::new(id.source_address, id.source_port),
                        remote: std::net::SocketAddr::new(
                            id.destination_address,
                            id.destination_port,
                        ),
                        state: response.header.state,
                    });
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(io::Error::other("netlink dump overrun"));
                }
                _ => {}
            }
        }
    }
}

/// Listening TCP ports (state LISTEN) and established connections (state ESTABLISHED).
///
/// Listeners are deduplicated by (port, interface) — the same port on `0.0.0.0` and `::` is one
/// entry — with wildcard binds as `interface: None` (spec: metrics-report.md D.6, D.8). Port 0 is
/// never reported. Connection addresses have IPv4-mapped IPv6 normalised to IPv4 (D.7). Both lists
/// come out sorted, so samples compare deterministically.
pub fn classify_tcp(
    raw: &[RawSocket],
    map: &InterfaceMap,
) -> (Vec<ListeningPort>, Vec<Connection>) {
    let mut listen = BTreeSet::new();
    let mut connections = BTreeSet::new();
    for s in raw.iter().filter(|s| s.proto == Proto::Tcp) {
        match s.state {
            STATE_LISTEN => {
                if let Some(port) = listening_port(s, map) {
                    listen.insert(port);
                }
            }
            STATE_ESTABLISHED => {
                connections.insert(Connection {
                    remote: std::net::SocketAddr::new(normalise(s.remote.ip()), s.remote.port()),
                    local_port: s.local.port(),
                    local_interface: map.resolve(s.local.ip()).map(str::to_owned),
                });
            }
            _ => {}
        }
    }
    (
        listen.into_iter().collect(),
        connections.into_iter().collect(),
    )
}

/// Listening UDP ports: bound and unconnected — state CLOSE with an all-zero remote address and
/// port 0 (spec: metrics-report.md D.5). A connected UDP socket (state ESTABLISHED) is a client,
/// not a listener. Same deduplication and interface rules as [`classify_tcp`].
pub fn classify_udp(raw: &[RawSocket], map: &InterfaceMap) -> Vec<ListeningPort> {
    raw.iter()
        .filter(|s| {
            s.proto == Proto::Udp
                && s.state == STATE_CLOSE
                && s.remote.ip().is_unspecified()
                && s.remote.port() == 0
        })
        .filter_map(|s| listening_port(s, map))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn listening_port(s: &RawSocket, map: &InterfaceMap) -> Option<ListeningPort> {
    let port = s.local.port();
    (port != 0).then(|| ListeningPort {
        port,
        interface: map.resolve(s.local.ip()).map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn raw(proto: Proto, local: &str, remote: &str, state: u8) -> RawSocket {
        RawSocket {
            proto,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
        }
    }

    fn map() -> InterfaceMap {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        InterfaceMap::from_pairs(
            [
                (ip("192.0.2.10"), "eth0"),
                (ip("2001:db8::10"), "eth0"),
                (ip("10.1.0.1"), "br-lan"),
            ],
            None,
        )
    }

    fn port(port: u16, interface: Option<&str>) -> ListeningPort {
        ListeningPort {
            port,
            interface: interface.map(str::to_owned),
        }
    }

    #[test]
    fn the_same_wildcard_port_on_ipv4_and_ipv6_is_one_listener() {
        let sockets = [
            raw(Proto::Tcp, "0.0.0.0:22", "0.0.0.0:0", STATE_LISTEN),
            raw(Proto::Tcp, "[::]:22", "[::]:0", STATE_LISTEN),
            raw(Proto::Tcp, "192.0.2.10:22", "0.0.0.0:0", STATE_LISTEN),
            raw(Proto::Tcp, "[2001:db8::10]:22", "[::]:0", STATE_LISTEN),
            raw(Proto::Tcp, "127.0.0.1:8080", "0.0.0.0:0", STATE_LISTEN),
            raw(Proto::Tcp, "[::1]:8080", "[::]:0", STATE_LISTEN),
            raw(Proto::Tcp, "0.0.0.0:0", "0.0.0.0:0", STATE_LISTEN),
        ];
        let (listen, connections) = classify_tcp(&sockets, &map());
        assert_eq!(
            listen,
            [
                port(22, None),
                port(22, Some("eth0")),
                port(8080, Some("lo"))
            ]
        );
        assert!(connections.is_empty());
    }

    #[test]
    fn established_connections_normalise_mapped_addresses_and_name_the_local_interface() {
        let sockets = [
            raw(
                Proto::Tcp,
                "192.0.2.10:49822",
                "203.0.113.10:8883",
                STATE_ESTABLISHED,
            ),
            raw(
                Proto::Tcp,
                "[::ffff:10.1.0.1]:51000",
                "[::ffff:10.1.0.7]:443",
                STATE_ESTABLISHED,
            ),
            raw(
                Proto::Tcp,
                "[2001:db8::10]:40000",
                "[2001:db8::99]:443",
                STATE_ESTABLISHED,
            ),
            raw(Proto::Tcp, "192.0.2.10:40001", "203.0.113.10:80", 0x06), // TIME_WAIT
        ];
        let (_, connections) = classify_tcp(&sockets, &map());
        let view: Vec<_> = connections
            .iter()
            .map(|c| {
                (
                    c.remote.to_string(),
                    c.local_port,
                    c.local_interface.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                ("10.1.0.7:443".to_string(), 51000, Some("br-lan")),
                ("203.0.113.10:8883".to_string(), 49822, Some("eth0")),
                ("[2001:db8::99]:443".to_string(), 40000, Some("eth0")),
            ]
        );
    }

    #[test]
    fn connected_udp_sockets_are_not_listeners() {
        let sockets = [
            raw(Proto::Udp, "0.0.0.0:5353", "0.0.0.0:0", STATE_CLOSE),
            raw(Proto::Udp, "[::]:5353", "[::]:0", STATE_CLOSE),
            raw(
                Proto::Udp,
                "192.0.2.10:40000",
                "198.51.100.1:53",
                STATE_ESTABLISHED,
            ),
            raw(Proto::Udp, "192.0.2.10:123", "0.0.0.0:0", STATE_CLOSE),
            raw(Proto::Udp, "0.0.0.0:0", "0.0.0.0:0", STATE_CLOSE),
            raw(Proto::Tcp, "0.0.0.0:7", "0.0.0.0:0", STATE_CLOSE),
        ];
        assert_eq!(
            classify_udp(&sockets, &map()),
            [port(123, Some("eth0")), port(5353, None)]
        );
    }

    #[test]
    fn auto_with_another_proc_root_reads_procfs() {
        let c = SocketCollector::new(SocketSource::Auto, Path::new("/host/proc"));
        assert_eq!(c.mode, Mode::Procfs);
        let c = SocketCollector::new(SocketSource::Auto, Path::new("/proc"));
        assert_eq!(c.mode, Mode::Auto);
    }

    #[test]
    fn unavailable_errnos_make_the_fallback_permanent() {
        assert!(is_unavailable(&io::Error::from_raw_os_error(
            libc::EPROTONOSUPPORT
        )));
        assert!(is_unavailable(&io::Error::from_raw_os_error(libc::ENOENT)));
        assert!(!is_unavailable(&io::Error::from_raw_os_error(
            libc::ENOBUFS
        )));
    }
}
