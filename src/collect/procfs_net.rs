//! Parser for `/proc/net/{tcp,tcp6,udp,udp6}`: the socket source used when netlink is unavailable.
//!
//! Line shape (kernel `tcp4_seq_show` / `udp4_format_sock`):
//! `  0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 12345 ...`
//! Addresses are hex words printed from memory as host-order `u32`s (spec: metrics-report.md D.7),
//! ports are plain hex numbers, the state is a hex TCP state (`0A` LISTEN, `01` ESTABLISHED, `07`
//! CLOSE — an unconnected UDP socket).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Kernel TCP state `TCP_ESTABLISHED` (also a connected UDP socket).
pub const STATE_ESTABLISHED: u8 = 0x01;
/// Kernel TCP state `TCP_CLOSE` (an unconnected, possibly bound, UDP socket).
pub const STATE_CLOSE: u8 = 0x07;
/// Kernel TCP state `TCP_LISTEN`.
pub const STATE_LISTEN: u8 = 0x0A;

/// Transport protocol of a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// `/proc/net/tcp`, `/proc/net/tcp6`
    Tcp,
    /// `/proc/net/udp`, `/proc/net/udp6`
    Udp,
}

/// One socket as the kernel lists it, before classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSocket {
    /// Protocol of the table it came from.
    pub proto: Proto,
    /// Local (bound) address and port.
    pub local: SocketAddr,
    /// Remote address and port; all-zero when unconnected.
    pub remote: SocketAddr,
    /// Kernel TCP state number (`STATE_*`).
    pub state: u8,
}

/// A line of a `/proc/net` socket table that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ProcNetParseError {
    /// 1-based line number in the file.
    pub line: usize,
    /// What was wrong.
    pub reason: ProcNetFault,
}

/// What was wrong with a `/proc/net` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcNetFault {
    /// Fewer than the 4 leading fields (`sl`, local, remote, state).
    MissingField,
    /// An `address:port` field that is not 8 or 32 hex digits, a colon and 4 hex digits.
    BadAddress,
    /// A state that is not a 2-digit hex number.
    BadState,
}

impl fmt::Display for ProcNetFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProcNetFault::MissingField => "fewer than 4 fields",
            ProcNetFault::BadAddress => {
                "address is not HEX:PORT (8 or 32 hex digits, 4 for the port)"
            }
            ProcNetFault::BadState => "state is not a 2-digit hex number",
        })
    }
}

/// Byte order of the host that wrote the file; `/proc` words are in the writer's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordOrder {
    /// x86, ARM (the agent's targets).
    Little,
    /// MIPS BE, PowerPC, s390x.
    Big,
}

impl WordOrder {
    /// The order of the running host (the one that writes its own `/proc`).
    pub const NATIVE: WordOrder = if cfg!(target_endian = "little") {
        WordOrder::Little
    } else {
        WordOrder::Big
    };

    /// The 4 address bytes (network order) of one printed word. The kernel prints the `u32` it
    /// loads from the address's memory, so the word's bytes in the writer's order are the address
    /// bytes as they sit in memory — i.e. in network order.
    fn bytes(self, word: u32) -> [u8; 4] {
        match self {
            WordOrder::Little => word.to_le_bytes(),
            WordOrder::Big => word.to_be_bytes(),
        }
    }
}

/// Parses a whole `/proc/net/{tcp,tcp6,udp,udp6}` table written by this host.
pub fn parse_proc_net(text: &str, proto: Proto) -> Result<Vec<RawSocket>, ProcNetParseError> {
    let mut out = Vec::new();
    parse_proc_net_into(text, proto, WordOrder::NATIVE, &mut out)?;
    Ok(out)
}

/// Parses a table written by a host of byte order `order`, appending to `out`. The header line
/// (`sl local_address ...`) and blank lines are skipped.
pub fn parse_proc_net_into(
    text: &str,
    proto: Proto,
    order: WordOrder,
    out: &mut Vec<RawSocket>,
) -> Result<(), ProcNetParseError> {
    for (index, line) in text.lines().enumerate() {
        let mut fields = line.split_ascii_whitespace();
        let Some(slot) = fields.next() else { continue };
        if slot == "sl" {
            continue; // header
        }
        let fault = |reason| ProcNetParseError {
            line: index + 1,
            reason,
        };
        let (Some(local), Some(remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(fault(ProcNetFault::MissingField));
        };
        let local = parse_hex_socket(local, order).ok_or(fault(ProcNetFault::BadAddress))?;
        let remote = parse_hex_socket(remote, order).ok_or(fault(ProcNetFault::BadAddress))?;
        // The kernel writes both addresses in one family per table; a mixed row is corrupt (fuzz).
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(fault(ProcNetFault::BadAddress));
        }
        if state.len() != 2 {
            return Err(fault(ProcNetFault::BadState));
        }
        let state = u8::from_str_radix(state, 16).map_err(|_| fault(ProcNetFault::BadState))?;
        out.push(RawSocket {
            proto,
            local,
            remote,
            state,
        });
    }
    Ok(())
}

/// `0100007F:0035` → 127.0.0.1:53 (on a little-endian writer).
fn parse_hex_socket(field: &str, order: WordOrder) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    if port.len() != 4 {
        return None;
    }
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(order.bytes(hex_word(addr)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
                let word = hex_word(addr.get(i * 8..i * 8 + 8)?)?;
                // Invariant: chunks_exact_mut(4) chunks and order.bytes are both 4 bytes.
                chunk.copy_from_slice(&order.bytes(word));
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Eight hex digits as a `u32` (no sign, no prefix).
fn hex_word(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:0016 0A01A8C0:C350 01 00000000:00000000 02:000A7B2C 00000000     0        0 5678 4 0000000000000000 20 4 30 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_rows_decode_addresses_ports_and_states() {
        let rows = parse_proc_net_into_vec(TCP, Proto::Tcp, WordOrder::Little);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].local, sa("127.0.0.1:53"));
        assert_eq!(rows[0].remote, sa("0.0.0.0:0"));
        assert_eq!(rows[0].state, STATE_LISTEN);
        assert_eq!(rows[1].local, sa("10.0.2.15:22"));
        assert_eq!(rows[1].remote, sa("192.168.1.10:50000"));
        assert_eq!(rows[1].state, STATE_ESTABLISHED);
    }

    #[test]
    fn ipv6_rows_decode_each_word_in_host_order() {
        let text =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0
   1: 0000000000000000FFFF00000100007F:A000 0000000000000000FFFF00000100007F:1F90 01 0
   2: B80D0120000000000000000001000000:01BB 00000000000000000000000000000000:0000 07 0
";
        let rows = parse_proc_net_into_vec(text, Proto::Udp, WordOrder::Little);
        assert_eq!(rows[0].local, sa("[::1]:8080"));
        assert_eq!(rows[1].local, sa("[::ffff:127.0.0.1]:40960"));
        assert_eq!(rows[1].remote, sa("[::ffff:127.0.0.1]:8080"));
        assert_eq!(rows[2].local, sa("[2001:db8::1]:443"));
        assert_eq!(rows[2].state, STATE_CLOSE);
    }

    #[test]
    fn a_big_endian_writer_prints_words_in_network_order() {
        // The same sockets as above, as a big-endian kernel prints them.
        let text = "0: 7F000001:0035 00000000:0000 0A\n1: 20010DB8000000000000000000000001:01BB 00000000000000000000000000000000:0000 07\n";
        let rows = parse_proc_net_into_vec(text, Proto::Tcp, WordOrder::Big);
        assert_eq!(rows[0].local, sa("127.0.0.1:53"));
        assert_eq!(rows[1].local, sa("[2001:db8::1]:443"));
    }

    #[test]
    fn malformed_lines_name_their_line_and_fault() {
        let bad = |text: &str| parse_proc_net(text, Proto::Tcp).unwrap_err();
        assert_eq!(
            bad("sl local\n0: 0100007F:0035\n"),
            ProcNetParseError {
                line: 2,
                reason: ProcNetFault::MissingField
            }
        );
        assert_eq!(
            bad("0: 0100007:0035 00000000:0000 0A").reason,
            ProcNetFault::BadAddress
        );
        assert_eq!(
            bad("0: 0100007F:35 00000000:0000 0A").reason,
            ProcNetFault::BadAddress
        );
        assert_eq!(
            bad("0: +100007F:0035 00000000:0000 0A").reason,
            ProcNetFault::BadAddress
        );
        assert_eq!(
            bad("0: 0100007F:0035 00000000:0000 XYZ").reason,
            ProcNetFault::BadState
        );
    }

    #[test]
    fn blank_and_header_only_tables_are_empty() {
        assert!(parse_proc_net("", Proto::Udp).unwrap().is_empty());
        assert!(
            parse_proc_net("   sl  local_address rem_address st\n\n", Proto::Udp)
                .unwrap()
                .is_empty()
        );
    }

    fn parse_proc_net_into_vec(text: &str, proto: Proto, order: WordOrder) -> Vec<RawSocket> {
        let mut out = Vec::new();
        parse_proc_net_into(text, proto, order, &mut out).unwrap();
        out
    }
}
