//! Network collector: cumulative per-interface counters from `<proc_root>/net/dev`.
//!
//! The collector reports counters as the kernel keeps them; deltas, resets and wraps are the report
//! module's business (spec: metrics-report.md D.2).

use std::fmt;
use std::path::PathBuf;

use glob::Pattern;

use super::{read_bounded, Error};
use crate::sample::InterfaceCounters;

/// Largest `/proc/net/dev` we read (about 150 bytes per interface: room for ~1,700 interfaces).
const MAX_NET_DEV_BYTES: u64 = 256 * 1024;

/// Counter columns per interface in `/proc/net/dev` (8 receive + 8 transmit).
const NET_DEV_COLUMNS: usize = 16;

/// A line of `/proc/net/dev` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct NetDevParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub reason: NetDevFault,
}

/// What was wrong with a `/proc/net/dev` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetDevFault {
    /// A non-header line without the `name:` separator.
    MissingColon,
    /// Nothing before the colon.
    EmptyName,
    /// Fewer than 16 counter columns.
    MissingColumns,
    /// A counter that is not a decimal u64.
    BadCounter,
}

impl fmt::Display for NetDevFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetDevFault::MissingColon => "no ':' after the interface name",
            NetDevFault::EmptyName => "empty interface name",
            NetDevFault::MissingColumns => "fewer than 16 counter columns",
            NetDevFault::BadCounter => "a counter is not a decimal 64-bit number",
        })
    }
}

/// Parses `/proc/net/dev` into per-interface counters, in file order.
///
/// Each line is split at its first `:` — Linux interface names cannot contain `:` (the kernel's
/// `dev_valid_name` refuses it; `eth0:1` aliases are address labels and never appear here) but may
/// contain `.` and `-` (`eth0.100`, `br-lan`), and the first counter can touch the colon
/// (`eth0:123 ...`) when it is wide (spec: metrics-report.md D.4). Counters are u64 (D.2).
pub fn parse_net_dev(text: &str) -> Result<Vec<InterfaceCounters>, NetDevParseError> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let fault = |reason| NetDevParseError {
            line: index + 1,
            reason,
        };
        let Some((name, counters)) = line.split_once(':') else {
            // The two header lines ("Inter-|   Receive ...", " face |bytes ...") have no colon.
            if line.trim().is_empty() || line.contains('|') {
                continue;
            }
            return Err(fault(NetDevFault::MissingColon));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(fault(NetDevFault::EmptyName));
        }
        let mut values = [0u64; NET_DEV_COLUMNS];
        let mut fields = counters.split_ascii_whitespace();
        for value in values.iter_mut() {
            let field = fields.next().ok_or(fault(NetDevFault::MissingColumns))?;
            *value = field.parse().map_err(|_| fault(NetDevFault::BadCounter))?;
        }
        // Columns: rx bytes packets errs drop fifo frame compressed multicast, tx bytes packets ...
        // Invariant: `values` is a fixed array of NET_DEV_COLUMNS (16) > 9.
        out.push(InterfaceCounters {
            name: name.to_owned(),
            bytes_in: values[0],
            packets_in: values[1],
            bytes_out: values[8],
            packets_out: values[9],
        });
    }
    Ok(out)
}

/// Which interfaces count: glob include/exclude patterns (spec: metrics-report.md D.3).
#[derive(Debug, Clone)]
pub struct InterfaceFilter {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl InterfaceFilter {
    /// Compiles the patterns; an empty `include` means every interface.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, Error> {
        let compile = |patterns: &[String]| {
            patterns
                .iter()
                .map(|p| {
                    Pattern::new(p).map_err(|source| Error::InterfacePattern {
                        pattern: p.clone(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(InterfaceFilter {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether `name` counts: matched by an include pattern (or there are none), and by no
    /// exclude pattern. Exclusion wins.
    pub fn allows(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

/// Reads and filters `<proc_root>/net/dev`.
#[derive(Debug)]
pub(crate) struct NetworkCollector {
    path: PathBuf,
    filter: InterfaceFilter,
}

impl NetworkCollector {
    /// A collector for `<proc_root>/net/dev`.
    pub(crate) fn new(proc_root: &std::path::Path, filter: InterfaceFilter) -> Self {
        NetworkCollector {
            path: proc_root.join("net/dev"),
            filter,
        }
    }

    /// The filtered counters, or why they could not be read.
    pub(crate) fn collect(&self) -> Result<Vec<InterfaceCounters>, Error> {
        let text =
            read_bounded(&self.path, MAX_NET_DEV_BYTES).map_err(|source| Error::NetworkRead {
                path: self.path.clone(),
                source,
            })?;
        let mut counters = parse_net_dev(&text).map_err(|source| Error::NetworkParse {
            path: self.path.clone(),
            source,
        })?;
        counters.retain(|c| self.filter.allows(&c.name));
        Ok(counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     789    0    0    0     0          0         0   123456     789    0    0    0     0       0          0
br-lan: 9000000000 12 0 0 0 0 0 0 8000000000 11 0 0 0 0 0 0
eth0.100:18446744073709551615 5 0 0 0 0 0 0 1 2 0 0 0 0 0 0
wlan0-1:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
";

    #[test]
    fn names_with_dots_and_dashes_and_adjacent_counters_parse() {
        let rows = parse_net_dev(NET_DEV).unwrap();
        let names: Vec<_> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["lo", "br-lan", "eth0.100", "wlan0-1"]);
        assert_eq!(rows[2].bytes_in, u64::MAX);
        assert_eq!(rows[2].packets_in, 5);
        assert_eq!(rows[2].bytes_out, 1);
        assert_eq!(rows[2].packets_out, 2);
    }

    #[test]
    fn counters_above_two_to_the_32_keep_all_their_bits() {
        let rows = parse_net_dev(NET_DEV).unwrap();
        assert_eq!(rows[1].bytes_in, 9_000_000_000);
        assert_eq!(rows[1].bytes_out, 8_000_000_000);
        assert_eq!((rows[1].packets_in, rows[1].packets_out), (12, 11));
    }

    #[test]
    fn malformed_lines_name_their_line_and_fault() {
        let fault = |text: &str| parse_net_dev(text).unwrap_err();
        assert_eq!(
            fault("eth0 1 2 3"),
            NetDevParseError {
                line: 1,
                reason: NetDevFault::MissingColon
            }
        );
        assert_eq!(fault(" : 1 2").reason, NetDevFault::EmptyName);
        assert_eq!(
            fault("eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15").reason,
            NetDevFault::MissingColumns
        );
        assert_eq!(
            fault("eth0: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 -1").reason,
            NetDevFault::BadCounter
        );
        assert_eq!(
            fault("eth0: 18446744073709551616 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16").reason,
            NetDevFault::BadCounter
        );
    }

    #[test]
    fn exclusion_wins_over_inclusion_and_empty_include_means_all() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all_but_lo = InterfaceFilter::new(&[], &s(&["lo"])).unwrap();
        assert!(all_but_lo.allows("eth0"));
        assert!(!all_but_lo.allows("lo"));
        let eth_only = InterfaceFilter::new(&s(&["eth*", "br-*"]), &s(&["eth0.*"])).unwrap();
        assert!(eth_only.allows("eth1"));
        assert!(eth_only.allows("br-lan"));
        assert!(!eth_only.allows("eth0.100"));
        assert!(!eth_only.allows("wlan0"));
    }

    #[test]
    fn an_invalid_pattern_is_a_settings_error_naming_it() {
        let err = InterfaceFilter::new(&["eth[".to_string()], &[]).unwrap_err();
        assert!(err.to_string().contains("eth["), "{err}");
    }
}
