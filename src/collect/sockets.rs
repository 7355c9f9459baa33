//! Socket collector: listening TCP/UDP ports and established TCP connections, IPv4 and IPv6.
//!
//! Sources: netlink `sock_diag` (states filtered in the kernel; TCP of both families in one walk
//! of the kernel's hash table, UDP one dump per family) or the `/proc/net` tables
//! (`procfs_net.rs`). Both yield [`RawSocket`]s, which the pure
//! [`classify_tcp`] / [`classify_udp`] turn into sample entries.
//!
//! Interface names come from `getifaddrs`, i.e. the agent's own network namespace, even when the
//! tables are read from another `proc_root`; a bound address it does not know gets no interface.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
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
    /// Per protocol (TCP, UDP): netlink said it cannot serve it; use procfs from now on.
    netlink_unavailable: [AtomicBool; 2],
    /// The fallback is logged once per process (spec: the lead's brief).
    fallback_logged: AtomicBool,
    /// The netlink reader: `read_netlink`, or a failing stand-in in tests of the fallback.
    netlink: NetlinkReader,
}

type NetlinkReader = fn(Proto, &mut Vec<RawSocket>) -> Result<(), Error>;

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
            netlink: read_netlink,
        }
    }

    /// Samples all four tables and classifies them against the current interface map. The map
    /// only names the interface of a socket bound to an address (a wildcard has none), so it is
    /// read (`getifaddrs`: two netlink dumps, a sixth of an idle sample) only when some socket
    /// is bound to one.
    pub(crate) fn collect(&self) -> SocketBlocks {
        let mut blocks = SocketBlocks::default();
        let mut tcp = Vec::new();
        let tcp_read = self.read_proto(Proto::Tcp, &mut tcp);
        let mut udp = Vec::new();
        let udp_read = self.read_proto(Proto::Udp, &mut udp);
        let needs_map = tcp
            .iter()
            .chain(&udp)
            .any(|s| !normalise(s.local.ip()).is_unspecified());
        let map = if needs_map {
            match InterfaceMap::from_system() {
                Ok(map) => map,
                Err(source) => {
                    // Without the map a bound listener would look like a wildcard one: omit,
                    // don't lie.
                    blocks.errors.push(Error::Interfaces { source });
                    return blocks;
                }
            }
        } else {
            InterfaceMap::default()
        };
        match tcp_read {
            Ok(()) => {
                let (listen, connections) = classify_tcp(&tcp, &map);
                blocks.tcp_listen = Some(listen);
                blocks.connections = Some(connections);
            }
            Err(e) => blocks.errors.push(e),
        }
        match udp_read {
            Ok(()) => blocks.udp_listen = Some(classify_udp(&udp, &map)),
            Err(e) => blocks.errors.push(e),
        }
        blocks
    }

    /// Reads both tables of one protocol (IPv4 and IPv6) from the configured source.
    fn read_proto(&self, proto: Proto, out: &mut Vec<RawSocket>) -> Result<(), Error> {
        let (tables, group) = match proto {
            Proto::Tcp => ([TCP4, TCP6], 0),
            Proto::Udp => ([UDP4, UDP6], 1),
        };
        let procfs = |out: &mut Vec<RawSocket>| {
            tables
                .iter()
                .try_for_each(|table| self.read_procfs(*table, out))
        };
        match self.mode {
            Mode::Procfs => procfs(out),
            Mode::Netlink => (self.netlink)(proto, out),
            // Invariant: group is 0 or 1 (the match above); the array has 2.
            Mode::Auto if self.netlink_unavailable[group].load(Ordering::Relaxed) => procfs(out),
            Mode::Auto => {
                let mark = out.len();
                let Err(error) = (self.netlink)(proto, out) else {
                    return Ok(());
                };
                out.truncate(mark);
                if let Error::Netlink { source, .. } = &error {
                    if is_unavailable(source) {
                        // Invariant: group < 2, as above.
                        self.netlink_unavailable[group].store(true, Ordering::Relaxed);
                    }
                }
                if !self.fallback_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        %error,
                        proc_root = %self.proc_root.display(),
                        "Netlink sock_diag failed; reading sockets from /proc/net instead."
                    );
                }
                procfs(out)
            }
        }
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

/// Both tables of `proto` over netlink. The kernel filters states: TCP asks for LISTEN and
/// ESTABLISHED, UDP for CLOSE (unconnected sockets) only.
fn read_netlink(proto: Proto, out: &mut Vec<RawSocket>) -> Result<(), Error> {
    match proto {
        Proto::Tcp => {
            let mark = out.len();
            let states = tcp_states(read_curr_estab());
            if tcp_dump_both_families(out, states).is_ok() {
                return Ok(());
            }
            // A kernel without the compat request still has per-family dumps: two walks.
            out.truncate(mark);
            per_family([TCP4, TCP6], out)
        }
        Proto::Udp => per_family([UDP4, UDP6], out),
    }
}

fn per_family(tables: [Table; 2], out: &mut Vec<RawSocket>) -> Result<(), Error> {
    tables.into_iter().try_for_each(|table| {
        netlink_dump(table, out).map_err(|source| Error::Netlink {
            table: table.name,
            source,
        })
    })
}

/// `TCPDIAG_GETSOCK`: the original inet_diag request type, still served by every kernel with
/// inet_diag. Its dump runs with family `AF_UNSPEC` (`inet_diag_dump_compat`), so IPv4 and IPv6
/// come from ONE walk of the kernel's connection hash table, where `SOCK_DIAG_BY_FAMILY` needs one
/// walk per family — and that walk is most of a sample's cost.
const TCPDIAG_GETSOCK: u16 = 18;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req`: family, src_len, dst_len, ext, sockid (48), states, dbs.
const INET_DIAG_REQ_LEN: usize = 60;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid (48), 5 × u32.
const INET_DIAG_MSG_LEN: usize = 72;

/// `/proc/net/snmp` of the agent's own network namespace, the one netlink answers for (never
/// under `proc_root`, as netlink is not).
const PROC_NET_SNMP: &str = "/proc/net/snmp";

/// `CurrEstab` of [`PROC_NET_SNMP`]; `None` when it cannot be read or parsed.
fn read_curr_estab() -> Option<u64> {
    parse_curr_estab(&std::fs::read_to_string(PROC_NET_SNMP).ok()?)
}

/// `CurrEstab` from the text of `/proc/net/snmp`: TCP sockets of both families in state
/// ESTABLISHED or CLOSE_WAIT (the kernel's `TCP_MIB_CURRESTAB`, counted in `tcp_set_state`). The
/// first `Tcp:` line names the columns, the second holds the values.
fn parse_curr_estab(text: &str) -> Option<u64> {
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let column = tcp
        .next()?
        .split_whitespace()
        .position(|c| c == "CurrEstab")?;
    tcp.next()?.split_whitespace().nth(column)?.parse().ok()
}

/// The TCP states to dump, given `CurrEstab`. Dumping ESTABLISHED walks the kernel's whole
/// established hash table, whose size follows the RAM (one bucket per 128 KiB: 262,144 on a
/// 24 GiB host, ~0.7 ms of kernel CPU, most of an idle sample) however few sockets it holds;
/// LISTEN walks the small listener table only. With no socket ESTABLISHED (`CurrEstab` 0) the
/// established walk would find nothing, so it is skipped; an unknown count walks it.
fn tcp_states(curr_estab: Option<u64>) -> u32 {
    match curr_estab {
        Some(0) => StateFlags::LISTEN.bits(),
        _ => (StateFlags::LISTEN | StateFlags::ESTABLISHED).bits(),
    }
}

/// Listening and established TCP sockets (`states`) of both families in one dump.
fn tcp_dump_both_families(out: &mut Vec<RawSocket>, states: u32) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket.send(&tcp_compat_request(states), 0)?;
    let mut buf = vec![0u8; NETLINK_RECV_BYTES];
    let limit = out.len().saturating_add(2 * MAX_SOCKETS_PER_DUMP);
    loop {
        let len = socket.recv(&mut &mut buf[..], 0)?;
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "netlink dump ended without NLMSG_DONE",
            ));
        }
        if parse_inet_diag_datagram(buf.get(..len).unwrap_or(&buf), Proto::Tcp, out)? {
            return Ok(());
        }
        if out.len() > limit {
            return Err(io::Error::other(format!(
                "more than {} sockets in one dump",
                2 * MAX_SOCKETS_PER_DUMP
            )));
        }
    }
}

/// The `TCPDIAG_GETSOCK` dump request: netlink header + `struct inet_diag_req` (host order, as
/// netlink is; the socket id is ignored by dumps).
fn tcp_compat_request(states: u32) -> Vec<u8> {
    let len = NLMSG_HDR_LEN + INET_DIAG_REQ_LEN;
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&[0u8; 8]); // sequence, port id
    msg.extend_from_slice(&[AF_INET, 0, 0, 0]); // family (ignored: the dump is AF_UNSPEC)
    msg.extend_from_slice(&[0u8; 48]); // inet_diag_sockid
    msg.extend_from_slice(&states.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes()); // dbs
    msg
}

/// Parses one netlink datagram of `inet_diag_msg` records into `out`. Returns `true` at
/// `NLMSG_DONE`; a kernel `NLMSG_ERROR` becomes its errno.
fn parse_inet_diag_datagram(
    mut rest: &[u8],
    proto: Proto,
    out: &mut Vec<RawSocket>,
) -> io::Result<bool> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    while rest.len() >= NLMSG_HDR_LEN {
        let len = u32_at(rest, 0).ok_or_else(|| invalid("short netlink header"))? as usize;
        // Invariant: the loop condition guarantees a full 16-byte header.
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDR_LEN {
            return Err(invalid("netlink message shorter than its header"));
        }
        let body = rest
            .get(NLMSG_HDR_LEN..len)
            .ok_or_else(|| invalid("netlink message longer than its datagram"))?;
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or_else(|| invalid("short NLMSG_ERROR"))? as i32;
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(code.saturating_abs()));
                }
            }
            NLMSG_NOOP => {}
            NLMSG_OVERRUN => return Err(io::Error::other("netlink dump overrun")),
            _ => {
                if body.len() < INET_DIAG_MSG_LEN {
                    return Err(invalid("short inet_diag_msg"));
                }
                // Invariant: body holds at least INET_DIAG_MSG_LEN (72) bytes, checked above.
                let family = body[0];
                let state = body[1];
                let id = &body[4..52];
                // Invariant: called with at in {0, 2} and {4, 20}: within the 48-byte `id`.
                let port = |at: usize| u16::from_be_bytes([id[at], id[at + 1]]);
                let addr = |at: usize| -> io::Result<IpAddr> {
                    let bytes: [u8; 16] = id[at..at + 16]
                        .try_into()
                        .map_err(|_| invalid("short address"))?;
                    match family {
                        AF_INET => Ok(IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])),
                        AF_INET6 => Ok(IpAddr::from(bytes)),
                        _ => Err(invalid("inet_diag_msg of an unknown family")),
                    }
                };
                out.push(RawSocket {
                    proto,
                    local: std::net::SocketAddr::new(addr(4)?, port(0)),
                    remote: std::net::SocketAddr::new(addr(20)?, port(2)),
                    state,
                });
            }
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        // Invariant: len <= rest.len() (the `get` above), so len + 3 cannot overflow.
        let step = (len + 3) & !3;
        rest = rest.get(step..).unwrap_or(&[]);
    }
    Ok(false)
}

/// One `SOCK_DIAG_BY_FAMILY` dump of one table (one family, one protocol).
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

    /// One netlink message: header + body, host order, padded to 4 bytes.
    fn nlmsg(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn diag_msg(family: u8, state: u8, local: &str, remote: &str) -> Vec<u8> {
        let (local, remote): (std::net::SocketAddr, std::net::SocketAddr) =
            (local.parse().unwrap(), remote.parse().unwrap());
        let octets = |ip: IpAddr| {
            let mut b = [0u8; 16];
            match ip {
                IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => b = v6.octets(),
            }
            b
        };
        let mut m = vec![family, state, 0, 0];
        m.extend_from_slice(&local.port().to_be_bytes());
        m.extend_from_slice(&remote.port().to_be_bytes());
        m.extend_from_slice(&octets(local.ip()));
        m.extend_from_slice(&octets(remote.ip()));
        m.extend_from_slice(&[0u8; 12 + 20]); // if, cookie, expires..inode
        assert_eq!(m.len(), INET_DIAG_MSG_LEN);
        m
    }

    #[test]
    fn inet_diag_records_of_both_families_parse_until_done() {
        let mut datagram = nlmsg(
            TCPDIAG_GETSOCK,
            &diag_msg(AF_INET, STATE_LISTEN, "127.0.0.1:8080", "0.0.0.0:0"),
        );
        datagram.extend(nlmsg(
            TCPDIAG_GETSOCK,
            &diag_msg(AF_INET6, STATE_ESTABLISHED, "[::1]:40000", "[::1]:8080"),
        ));
        let mut out = Vec::new();
        assert!(!parse_inet_diag_datagram(&datagram, Proto::Tcp, &mut out).unwrap());
        assert_eq!(
            out,
            [
                raw(Proto::Tcp, "127.0.0.1:8080", "0.0.0.0:0", STATE_LISTEN),
                raw(Proto::Tcp, "[::1]:40000", "[::1]:8080", STATE_ESTABLISHED),
            ]
        );
        let done = nlmsg(NLMSG_DONE, &0u32.to_ne_bytes());
        assert!(parse_inet_diag_datagram(&done, Proto::Tcp, &mut out).unwrap());
    }

    #[test]
    fn a_kernel_error_message_becomes_its_errno() {
        let error = nlmsg(NLMSG_ERROR, &(-libc::ENOENT).to_ne_bytes());
        let e = parse_inet_diag_datagram(&error, Proto::Tcp, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let truncated = &nlmsg(TCPDIAG_GETSOCK, &[0u8; 20])[..];
        assert!(parse_inet_diag_datagram(truncated, Proto::Tcp, &mut Vec::new()).is_err());
        let mut lying = nlmsg(NLMSG_NOOP, &[]);
        lying[..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(parse_inet_diag_datagram(&lying, Proto::Tcp, &mut Vec::new()).is_err());
    }

    #[test]
    fn the_compat_request_is_a_dump_of_the_asked_states() {
        let req = tcp_compat_request(0x402);
        assert_eq!(req.len(), 76);
        assert_eq!(u32::from_ne_bytes(req[..4].try_into().unwrap()), 76);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u32::from_ne_bytes(req[68..72].try_into().unwrap()), 0x402);
    }

    const SNMP: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 2 64 261341\n\
        Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs\n\
        Tcp: 1 200 120000 -1 9003 7270 1675 1683 8 261314\n\
        Udp: InDatagrams NoPorts\nUdp: 122 0\n";

    #[test]
    fn curr_estab_is_read_by_its_column_name() {
        assert_eq!(parse_curr_estab(SNMP), Some(8));
        assert_eq!(
            parse_curr_estab(&SNMP.replace(" 8 261314", " 0 261314")),
            Some(0)
        );
        assert_eq!(parse_curr_estab("Ip: Forwarding\nIp: 2\n"), None);
        assert_eq!(parse_curr_estab(&SNMP.replace("CurrEstab", "Other")), None);
        assert_eq!(
            parse_curr_estab(&SNMP.replace(" 8 261314", " x 261314")),
            None
        );
    }

    /// Issue 15 item 6: the established-table walk (most of an idle sample's CPU) is skipped
    /// only when the kernel counts no established socket.
    #[test]
    fn the_established_table_is_walked_unless_no_socket_is_established() {
        let both = (StateFlags::LISTEN | StateFlags::ESTABLISHED).bits();
        assert_eq!(tcp_states(Some(0)), StateFlags::LISTEN.bits());
        assert_eq!(tcp_states(Some(1)), both);
        assert_eq!(tcp_states(None), both);
    }

    /// Issue 15 item 6: `collect` skips `getifaddrs` when every socket is bound to a wildcard;
    /// what it reports is the same as with the host's map.
    #[test]
    fn wildcard_sockets_classify_alike_without_the_interface_map() {
        let tcp = [
            raw(Proto::Tcp, "0.0.0.0:22", "0.0.0.0:0", STATE_LISTEN),
            raw(Proto::Tcp, "[::]:22", "[::]:0", STATE_LISTEN),
            raw(Proto::Tcp, "[::ffff:0.0.0.0]:8080", "[::]:0", STATE_LISTEN),
        ];
        let udp = [raw(Proto::Udp, "0.0.0.0:68", "0.0.0.0:0", STATE_CLOSE)];
        assert!(tcp
            .iter()
            .chain(&udp)
            .all(|s| normalise(s.local.ip()).is_unspecified()));
        let none = InterfaceMap::default();
        assert_eq!(classify_tcp(&tcp, &none), classify_tcp(&tcp, &map()));
        assert_eq!(classify_udp(&udp, &none), classify_udp(&udp, &map()));
        assert_eq!(
            classify_tcp(&tcp, &none).0,
            vec![port(22, None), port(8080, None)]
        );
    }

    #[test]
    fn an_established_loopback_connection_is_counted_where_netlink_sees_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _server = listener.accept().unwrap();
        assert!(
            read_curr_estab().is_some_and(|n| n >= 2),
            "{:?}",
            read_curr_estab()
        );
    }

    fn gateway_fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc/gateway")
    }

    fn auto_with_failing_netlink(reader: NetlinkReader) -> SocketCollector {
        SocketCollector {
            mode: Mode::Auto,
            netlink: reader,
            ..SocketCollector::new(SocketSource::Procfs, &gateway_fixture())
        }
    }

    fn unsupported(_: Proto, _: &mut Vec<RawSocket>) -> Result<(), Error> {
        Err(Error::Netlink {
            table: "tcp4",
            source: io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        })
    }

    fn no_buffer_space(_: Proto, out: &mut Vec<RawSocket>) -> Result<(), Error> {
        out.push(raw(Proto::Tcp, "0.0.0.0:1", "0.0.0.0:0", STATE_LISTEN)); // partial dump
        Err(Error::Netlink {
            table: "tcp4",
            source: io::Error::from_raw_os_error(libc::ENOBUFS),
        })
    }

    #[test]
    fn auto_falls_back_to_procfs_for_good_when_netlink_is_unsupported() {
        let collector = auto_with_failing_netlink(unsupported);
        let blocks = collector.collect();
        assert!(blocks.errors.is_empty(), "{:?}", blocks.errors);
        assert_eq!(blocks.tcp_listen.unwrap().len(), 4); // the gateway fixture's listeners
        assert_eq!(blocks.udp_listen.unwrap().len(), 4);
        assert!(collector.fallback_logged.load(Ordering::Relaxed));
        assert!(collector
            .netlink_unavailable
            .iter()
            .all(|flag| flag.load(Ordering::Relaxed)));
    }

    #[test]
    fn a_transient_netlink_error_falls_back_for_this_sample_only_and_drops_partial_data() {
        let collector = auto_with_failing_netlink(no_buffer_space);
        let blocks = collector.collect();
        let tcp = blocks.tcp_listen.unwrap();
        assert!(tcp.iter().all(|p| p.port != 1), "{tcp:?}");
        assert!(!collector
            .netlink_unavailable
            .iter()
            .any(|flag| flag.load(Ordering::Relaxed)));
    }

    #[test]
    fn explicit_netlink_reports_its_failure_instead_of_falling_back() {
        let collector = SocketCollector {
            mode: Mode::Netlink,
            ..auto_with_failing_netlink(unsupported)
        };
        let blocks = collector.collect();
        assert!(blocks.tcp_listen.is_none() && blocks.udp_listen.is_none());
        assert_eq!(blocks.errors.len(), 2);
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
