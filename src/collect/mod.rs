//! Collectors: the I/O edge that samples `/proc`, netlink and custom sources into a `Sample`.
//!
//! One file per collector, each around a pure core that is unit-tested inline:
//! - `network.rs`: per-interface counters from `<proc_root>/net/dev` ([`parse_net_dev`]);
//! - `sockets.rs`: listening TCP/UDP ports and established TCP connections from netlink
//!   sock_diag or, as a fallback, `procfs_net.rs` ([`parse_proc_net`]); [`classify_tcp`] /
//!   [`classify_udp`] turn raw sockets into sample entries;
//! - `interfaces.rs`: the address → interface map, built once per sample;
//! - `custom.rs`: custom metrics from built-ins, commands and files ([`parse_custom_value`]);
//! - `episodes.rs`: which errors to log (once per episode) and which recoveries.
//!
//! A collector that fails leaves its block `None` and returns an [`Error`]; nothing here panics
//! on what the OS returns (spec: metrics-report.md D.9: a failure omits the block).

mod custom;
mod episodes;
mod interfaces;
mod network;
mod procfs_net;
mod sockets;

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use custom::{
    parse_custom_value, run_command, CustomError, ParseFault, MAX_CUSTOM_OUTPUT_BYTES,
    MAX_LIST_ITEMS,
};
pub use episodes::{EpisodeChanges, Episodes};
pub use interfaces::{normalise, InterfaceMap};
pub use network::{parse_net_dev, InterfaceFilter, NetDevFault, NetDevParseError};
pub use procfs_net::{
    parse_proc_net, parse_proc_net_into, ProcNetFault, ProcNetParseError, Proto, RawSocket,
    WordOrder, STATE_CLOSE, STATE_ESTABLISHED, STATE_LISTEN,
};
pub use sockets::{classify_tcp, classify_udp};

use crate::custom_metric::{CustomMetricType, CustomValue};
use crate::sample::Sample;

/// Roots of the host's pseudo file systems; overridable for fixtures and containers that mount
/// the host's `/proc` elsewhere (spec: metrics-report.md D.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// `/proc` by default.
    pub proc_root: PathBuf,
    /// `/sys` by default. Not read yet: built-in sensors go through sysinfo, which reads `/sys`.
    pub sys_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// Where socket lists come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SocketSource {
    /// Netlink sock_diag, falling back (per table, logged once) to `<proc_root>/net/*` when netlink
    /// is unavailable (EPROTONOSUPPORT under qemu-user, EACCES, a missing diag module). A
    /// `proc_root` other than `/proc` means procfs: netlink only sees the agent's own netns.
    #[default]
    Auto,
    /// Netlink only; a failure is an error.
    Netlink,
    /// `<proc_root>/net/{tcp,tcp6,udp,udp6}` only.
    Procfs,
}

/// Default sampling interval.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(60);

/// What the collectors sample and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `/proc` and `/sys` roots.
    pub paths: HostPaths,
    /// How often the agent samples the device (the collectors themselves sample on demand).
    pub sample_interval: Duration,
    /// Interface name globs to count (`glob::Pattern` syntax); empty = all.
    pub interfaces_include: Vec<String>,
    /// Interface name globs to leave out; wins over include. Default `["lo"]`.
    pub interfaces_exclude: Vec<String>,
    /// Socket list source.
    pub socket_source: SocketSource,
    /// Custom metrics, in report order.
    pub custom: Vec<CustomMetricSettings>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            paths: HostPaths::default(),
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            interfaces_include: Vec::new(),
            interfaces_exclude: vec!["lo".to_owned()],
            socket_source: SocketSource::Auto,
            custom: Vec::new(),
        }
    }
}

/// One custom metric: its AWS name and type, and where its value comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetricSettings {
    /// `metricName` as created in AWS (`[a-zA-Z0-9:_-]{1,128}`, no `aws:` prefix).
    pub name: String,
    /// `metricType`.
    pub metric_type: CustomMetricType,
    /// Value source.
    pub source: CustomSource,
}

/// Where a custom metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomSource {
    /// Measured by the agent.
    Builtin(Builtin),
    /// A program run directly (argv, never a shell); its stdout is parsed per type
    /// ([`parse_custom_value`]). Killed (with its process group) and reaped after `timeout`.
    /// Commands run one after another inside `sample()`, so a sample can take up to the sum of
    /// their timeouts.
    Command {
        /// Program and arguments; `argv[0]` is looked up in `PATH` if it has no `/`.
        argv: Vec<String>,
        /// Longest run allowed.
        timeout: Duration,
    },
    /// A file read each sample and parsed per type (e.g. `/sys/class/thermal/thermal_zone0/temp`).
    File {
        /// The file.
        path: PathBuf,
    },
}

/// Built-in measurements. All give numbers (types `number` or `number-list`), rounded to 2
/// decimals so they satisfy the 15-digit rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Builtin {
    /// Whole-system CPU busy percentage since the previous sample (first: since start-up).
    CpuUsagePercent,
    /// Used (total - available) memory, percent of total.
    MemoryUsedPercent,
    /// Used space of the file system mounted at `mount`, percent of its size.
    DiskUsedPercent {
        /// Mount point, e.g. `/` or `/data`.
        mount: PathBuf,
    },
    /// Load average: `number` = 1-minute; `number-list` = `[1, 5, 15]`-minute.
    LoadAverage,
    /// Seconds since boot.
    UptimeSecs,
    /// Number of processes (numeric entries of `proc_root`).
    ProcessCount,
    /// Temperature in °C of the first sensor whose label contains `sensor` (empty = the first
    /// sensor); with `number-list`, every matching sensor.
    Temperature {
        /// Label substring, e.g. `cpu_thermal`.
        sensor: String,
    },
}

impl Builtin {
    /// The name used in messages and configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::CpuUsagePercent => "cpu_usage_percent",
            Builtin::MemoryUsedPercent => "memory_used_percent",
            Builtin::DiskUsedPercent { .. } => "disk_used_percent",
            Builtin::LoadAverage => "load_average",
            Builtin::UptimeSecs => "uptime_secs",
            Builtin::ProcessCount => "process_count",
            Builtin::Temperature { .. } => "temperature",
        }
    }
}

/// Something that samples the device. Synchronous on purpose: the agent runs it in
/// `spawn_blocking` (architecture §6).
pub trait Sampler: Send + Sync + 'static {
    /// One sample, plus the errors of the collectors that failed (their blocks are `None`).
    fn sample(&self) -> (Sample, Vec<Error>);

    /// Whether [`Sampler::sample`] returns at once without blocking (no I/O): the agent then
    /// calls it on its own task instead of in `spawn_blocking`. Scripted samplers in tests say
    /// so, which keeps paused-time tests deterministic (a blocking-pool task does not hold
    /// tokio's paused clock, which may jump past timers while it runs).
    fn is_immediate(&self) -> bool {
        false
    }
}

/// Which collector an error belongs to (the key for "log once per episode").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CollectorId {
    /// Interface counters.
    Network,
    /// Listening ports and connections.
    Sockets,
    /// One custom metric, by name.
    Custom(String),
}

impl std::fmt::Display for CollectorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CollectorId::Network => f.write_str("network"),
            CollectorId::Sockets => f.write_str("sockets"),
            CollectorId::Custom(name) => write!(f, "custom metric {name}"),
        }
    }
}

/// Why a collector produced nothing (or settings were refused).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `<proc_root>/net/dev` could not be read.
    #[error("network collector: cannot read {path}: {source}")]
    NetworkRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// `<proc_root>/net/dev` did not parse.
    #[error("network collector: {path}: {source}")]
    NetworkParse {
        /// The file.
        path: PathBuf,
        /// Line and fault.
        source: NetDevParseError,
    },
    /// An interface include/exclude pattern does not compile (settings).
    #[error("network collector: invalid interface pattern {pattern:?}: {source}")]
    InterfacePattern {
        /// The pattern as configured.
        pattern: String,
        /// What glob says.
        source: glob::PatternError,
    },
    /// A `/proc/net` socket table could not be read.
    #[error("socket collector: cannot read {path}: {source}")]
    ProcNetRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A `/proc/net` socket table did not parse.
    #[error("socket collector: {path}: {source}")]
    ProcNetParse {
        /// The file.
        path: PathBuf,
        /// Line and fault.
        source: ProcNetParseError,
    },
    /// A netlink sock_diag dump failed (errno from the socket or from the kernel's NLMSG_ERROR).
    #[error("socket collector: netlink sock_diag dump of {table} failed: {source}")]
    Netlink {
        /// `tcp4`, `tcp6`, `udp4` or `udp6`.
        table: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// `getifaddrs` failed, so bound sockets could not be given an interface.
    #[error("socket collector: cannot list interface addresses (getifaddrs): {source}")]
    Interfaces {
        /// The OS error.
        source: io::Error,
    },
    /// One custom metric produced no value.
    #[error("custom metric {metric:?}: {cause}")]
    Custom {
        /// Metric name.
        metric: String,
        /// Why.
        cause: CustomError,
    },
    /// A custom metric's settings are refused.
    #[error("custom metric {metric:?}: invalid settings: {reason}")]
    CustomSettings {
        /// Metric name.
        metric: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// The collector this error belongs to.
    pub fn collector(&self) -> CollectorId {
        match self {
            Error::NetworkRead { .. }
            | Error::NetworkParse { .. }
            | Error::InterfacePattern { .. } => CollectorId::Network,
            Error::ProcNetRead { .. }
            | Error::ProcNetParse { .. }
            | Error::Netlink { .. }
            | Error::Interfaces { .. } => CollectorId::Sockets,
            Error::Custom { metric, .. } | Error::CustomSettings { metric, .. } => {
                CollectorId::Custom(metric.clone())
            }
        }
    }

    /// A stable name for the kind of cause (not its changing details), for [`Episodes`].
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NetworkRead { .. } => "net-dev-read",
            Error::NetworkParse { .. } => "net-dev-parse",
            Error::InterfacePattern { .. } => "interface-pattern",
            Error::ProcNetRead { .. } => "proc-net-read",
            Error::ProcNetParse { .. } => "proc-net-parse",
            Error::Netlink { .. } => "netlink",
            Error::Interfaces { .. } => "getifaddrs",
            Error::Custom { cause, .. } => cause.kind(),
            Error::CustomSettings { .. } => "settings",
        }
    }
}

/// The configured collectors; the production [`Sampler`].
#[derive(Debug)]
pub struct Collectors {
    network: network::NetworkCollector,
    sockets: sockets::SocketCollector,
    custom: custom::CustomCollector,
}

impl Collectors {
    /// Validates the settings (patterns, custom metric names and sources) and prepares state kept
    /// between samples (a first CPU reading for the CPU built-in).
    pub fn new(settings: Settings) -> Result<Self, Error> {
        let filter =
            InterfaceFilter::new(&settings.interfaces_include, &settings.interfaces_exclude)?;
        let proc_root = &settings.paths.proc_root;
        Ok(Collectors {
            network: network::NetworkCollector::new(proc_root, filter),
            sockets: sockets::SocketCollector::new(settings.socket_source, proc_root),
            custom: custom::CustomCollector::new(settings.custom, proc_root)?,
        })
    }
}

impl Sampler for Collectors {
    fn sample(&self) -> (Sample, Vec<Error>) {
        let mut errors = Vec::new();
        let interfaces = self.network.collect().map_err(|e| errors.push(e)).ok();
        let sockets = self.sockets.collect();
        errors.extend(sockets.errors);
        let custom: Vec<(String, CustomValue)> = self.custom.collect(&mut errors);
        let sample = Sample {
            interfaces,
            tcp_listen: sockets.tcp_listen,
            udp_listen: sockets.udp_listen,
            connections: sockets.connections,
            custom,
        };
        (sample, errors)
    }
}

/// Reads a whole file (to EOF: a short read of a procfs file is not its end), refusing files
/// larger than `limit` bytes with `ErrorKind::FileTooLarge`. Invalid UTF-8 is replaced, not fatal.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_collector() {
        let e = Error::Netlink {
            table: "udp6",
            source: io::Error::from_raw_os_error(libc::EPROTONOSUPPORT),
        };
        assert_eq!(e.collector(), CollectorId::Sockets);
        assert!(e.to_string().contains("udp6"), "{e}");
        let e = Error::Custom {
            metric: "temp".into(),
            cause: CustomError::OutputTooLarge,
        };
        assert_eq!(e.collector(), CollectorId::Custom("temp".into()));
        assert_eq!(e.kind(), "output-too-large");
    }

    #[test]
    fn files_are_read_to_the_end_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x".repeat(10_000)).unwrap();
        assert_eq!(read_bounded(&path, 10_000).unwrap().len(), 10_000);
        let err = read_bounded(&path, 9_999).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn settings_default_to_proc_and_excluding_lo() {
        let s = Settings::default();
        assert_eq!(s.paths.proc_root, Path::new("/proc"));
        assert_eq!(s.interfaces_exclude, ["lo"]);
        assert_eq!(s.socket_source, SocketSource::Auto);
    }

    #[test]
    fn invalid_custom_settings_are_refused_by_name() {
        let settings = |custom| Settings {
            custom,
            ..Settings::default()
        };
        let metric = |name: &str, metric_type, source| CustomMetricSettings {
            name: name.into(),
            metric_type,
            source,
        };
        let cases = [
            vec![metric(
                "aws:x",
                CustomMetricType::Number,
                CustomSource::Builtin(Builtin::UptimeSecs),
            )],
            vec![metric(
                "up",
                CustomMetricType::StringList,
                CustomSource::Builtin(Builtin::UptimeSecs),
            )],
            vec![metric(
                "cmd",
                CustomMetricType::Number,
                CustomSource::Command {
                    argv: vec![],
                    timeout: Duration::from_secs(1),
                },
            )],
            vec![metric(
                "cmd",
                CustomMetricType::Number,
                CustomSource::Command {
                    argv: vec!["/bin/true".into()],
                    timeout: Duration::ZERO,
                },
            )],
            vec![
                metric(
                    "up",
                    CustomMetricType::Number,
                    CustomSource::Builtin(Builtin::UptimeSecs),
                ),
                metric(
                    "up",
                    CustomMetricType::Number,
                    CustomSource::Builtin(Builtin::UptimeSecs),
                ),
            ],
        ];
        for custom in cases {
            let err = Collectors::new(settings(custom.clone())).unwrap_err();
            assert!(
                matches!(err, Error::CustomSettings { .. }),
                "{custom:?} gave {err}"
            );
        }
    }
}
