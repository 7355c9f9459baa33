//! The metrics report: build from samples, encode as JSON or CBOR, decode, validate, parse answers.
//!
//! Pure: no I/O and no clock (time arrives as an argument, e.g. [`next_report_id`]).
//!
//! - [`ReportBuilder`] (`build.rs`) turns the samples of one report interval into a
//!   [`MetricsReport`]: counter deltas, the latest port and connection lists, custom metrics.
//! - [`encode`] writes a report as JSON (`json.rs`, serde_json) or CBOR (`cbor.rs`, our own small
//!   writer), with long or short keys (`keys.rs`); both encodings share one `Serialize` view
//!   (`view.rs`), so they cannot disagree on structure.
//! - [`decode`], [`validate::validate`] and [`decode_validated`] (both in one pass, for the fleet
//!   service) share one reading of a document (`read.rs` over the order-preserving tree of
//!   `tree.rs`; CBOR read by `cbor_read.rs`), so what `validate` accepts, `decode` accepts.
//! - [`outcome::parse`] reads the `/accepted` and `/rejected` answers.
//!
//! spec: metrics-report.md A.2 (fields), A.6/A.7 (golden example), D.1–D.11 (pitfalls).

mod build;
mod cbor;
mod cbor_read;
mod decode;
mod json;
mod keys;
pub mod outcome;
mod read;
mod tree;
pub mod validate;
mod view;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::custom_metric::CustomValue;
use crate::sample::{Connection, ListeningPort};

pub use build::{Built, ReportBuilder};
pub use decode::{decode, decode_validated, DecodeError};

/// The report format version sent in every header (`"Major.Minor"`; every known agent sends 1.0).
pub const VERSION: &str = "1.0";

/// Default cap on each list (ports, connections): PY samples to 50 (spec: metrics-report.md A.4).
pub const DEFAULT_MAX_LIST_LEN: usize = 50;

/// Default report interval: AWS throttles reports to one per 5 minutes per device
/// (spec: metrics-report.md A.4).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);

/// Default random delay before the first report.
pub const DEFAULT_STARTUP_JITTER: Duration = Duration::from_secs(30);

/// AWS IoT Core's PUBLISH payload limit, 128 KB (spec: metrics-report.md A.1, A.4).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// Wire encoding of a report; also the last segment of the publish topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON, published on `.../defender/metrics/json`.
    Json,
    /// CBOR, published on `.../defender/metrics/cbor`.
    Cbor,
}

impl Format {
    /// `"json"` or `"cbor"`, as in the topic.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Cbor => "cbor",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "cbor" => Ok(Format::Cbor),
            other => Err(SettingError::Format(other.to_owned())),
        }
    }
}

/// Which key names a report uses: long (`header`, `report_id`, …) or short (`hed`, `rid`, …).
/// Independent of the format (spec: metrics-report.md A.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySet {
    /// `header`, `metrics`, `listening_tcp_ports`, …
    Long,
    /// `hed`, `met`, `tp`, …
    Short,
}

impl KeySet {
    /// `"long"` or `"short"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySet::Long => "long",
            KeySet::Short => "short",
        }
    }
}

impl fmt::Display for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeySet {
    type Err = SettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "long" => Ok(KeySet::Long),
            "short" => Ok(KeySet::Short),
            other => Err(SettingError::KeySet(other.to_owned())),
        }
    }
}

/// A setting string that names no known format or key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// Not `json` or `cbor`.
    #[error("unknown report format {0:?} (expected \"json\" or \"cbor\")")]
    Format(String),
    /// Not `long` or `short`.
    #[error("unknown key set {0:?} (expected \"long\" or \"short\")")]
    KeySet(String),
}

/// How reports are built and encoded (the `[report]` section of the config, validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Wire encoding.
    pub format: Format,
    /// Key names.
    pub keys: KeySet,
    /// Longest port or connection list sent; `total` still carries the full count. Values below 1
    /// are treated as 1, because an empty list would mean "conforming" (spec: D.9).
    pub max_list_len: usize,
    /// How often the agent builds and publishes a report (the builder itself takes no time).
    pub interval: Duration,
    /// Random delay before the agent's first report, so a fleet rebooting together does not
    /// align.
    pub startup_jitter: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            format: Format::Json,
            keys: KeySet::Long,
            max_list_len: DEFAULT_MAX_LIST_LEN,
            interval: DEFAULT_INTERVAL,
            startup_jitter: DEFAULT_STARTUP_JITTER,
        }
    }
}

/// One metrics report, independent of encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsReport {
    /// `header.report_id`: unique, increasing per thing (see [`next_report_id`]).
    pub report_id: u64,
    /// `header.version`, normally [`VERSION`].
    pub version: String,
    /// The `metrics` block; `None` when every collector failed (the block is omitted).
    pub metrics: Option<Metrics>,
    /// The `custom_metrics` block in configuration order (never sorted); omitted when empty.
    pub custom_metrics: Vec<(String, CustomValue)>,
}

impl MetricsReport {
    /// Whether the report carries anything: the spec wants `metrics` or `custom_metrics` (A.2), so
    /// a report without either should not be published.
    pub fn has_data(&self) -> bool {
        self.metrics.is_some() || !self.custom_metrics.is_empty()
    }
}

/// The `metrics` block. A `None` block is omitted: its collector failed (spec: D.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metrics {
    /// `listening_tcp_ports`.
    pub listening_tcp_ports: Option<PortList>,
    /// `listening_udp_ports`.
    pub listening_udp_ports: Option<PortList>,
    /// `network_stats`: deltas since the previous report.
    pub network_stats: Option<NetworkStats>,
    /// `tcp_connections.established_connections`.
    pub tcp_connections: Option<ConnectionList>,
}

impl Metrics {
    /// Whether every block is absent.
    pub fn is_empty(&self) -> bool {
        self.listening_tcp_ports.is_none()
            && self.listening_udp_ports.is_none()
            && self.network_stats.is_none()
            && self.tcp_connections.is_none()
    }
}

/// A listening-ports block: a (possibly capped) sorted list and the true count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortList {
    /// Ports, sorted by (port, interface), at most `max_list_len`.
    pub ports: Vec<ListeningPort>,
    /// Number of unique listening ports before capping.
    pub total: u64,
}

/// `network_stats`: traffic since the previous report, summed over the counted interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetworkStats {
    /// Received bytes.
    pub bytes_in: u64,
    /// Transmitted bytes.
    pub bytes_out: u64,
    /// Received packets.
    pub packets_in: u64,
    /// Transmitted packets.
    pub packets_out: u64,
}

/// The established-connections block: a (possibly capped) sorted list and the true count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionList {
    /// Connections, sorted, at most `max_list_len`.
    pub connections: Vec<Connection>,
    /// Number of established connections before capping.
    pub total: u64,
}

/// An encoded report, as the spool stores it and the link publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedReport {
    /// The report's `report_id` (the spool and answers correlate on it).
    pub id: u64,
    /// Encoding of `bytes` (selects the topic).
    pub format: Format,
    /// The payload.
    pub bytes: Vec<u8>,
}

impl EncodedReport {
    /// Encodes `report` as one spoolable, publishable payload.
    pub fn new(report: &MetricsReport, format: Format, keys: KeySet) -> Self {
        EncodedReport {
            id: report.report_id,
            format,
            bytes: encode(report, format, keys),
        }
    }
}

/// The next report id: `max(now, last + 1)`, and never 0 (ids are positive integers).
///
/// spec: metrics-report.md D.1 — unique and increasing across restarts even when the clock is
/// behind (no RTC before NTP sync); the caller persists the result and passes it back as `last`.
pub fn next_report_id(now_epoch_secs: u64, last: Option<u64>) -> u64 {
    let candidate = match last {
        Some(last) => now_epoch_secs.max(last.saturating_add(1)),
        None => now_epoch_secs,
    };
    candidate.max(1)
}

/// Encodes a report. JSON is compact; CBOR uses definite lengths, text keys, integers for integral
/// numbers and float64 otherwise (spec: metrics-report.md A.7).
pub fn encode(report: &MetricsReport, format: Format, keys: KeySet) -> Vec<u8> {
    let view = view::ReportView::new(report, keys);
    match format {
        Format::Json => json::encode(&view),
        Format::Cbor => cbor::encode(&view),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_ids_increase_even_when_the_clock_goes_back() {
        assert_eq!(next_report_id(1_000, None), 1_000);
        assert_eq!(next_report_id(1_000, Some(500)), 1_000);
        assert_eq!(next_report_id(1_000, Some(1_000)), 1_001);
        assert_eq!(next_report_id(10, Some(1_000)), 1_001);
    }

    #[test]
    fn report_ids_are_positive_and_never_wrap() {
        assert_eq!(next_report_id(0, None), 1);
        assert_eq!(next_report_id(5, Some(u64::MAX)), u64::MAX);
    }

    #[test]
    fn formats_and_key_sets_parse_from_their_names() {
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        assert_eq!("cbor".parse::<Format>(), Ok(Format::Cbor));
        assert!("xml".parse::<Format>().is_err());
        assert_eq!("short".parse::<KeySet>(), Ok(KeySet::Short));
        assert_eq!("long".parse::<KeySet>(), Ok(KeySet::Long));
        assert!("tiny".parse::<KeySet>().is_err());
        assert_eq!(Format::Cbor.as_str(), "cbor");
        assert_eq!(KeySet::Short.to_string(), "short");
    }

    #[test]
    fn formats_use_lowercase_names_in_serde() {
        assert_eq!(
            serde_json::to_string(&Format::Cbor).ok().as_deref(),
            Some("\"cbor\"")
        );
        assert_eq!(
            serde_json::from_str::<KeySet>("\"short\"").ok(),
            Some(KeySet::Short)
        );
    }
}
