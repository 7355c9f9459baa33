//! The serde mirror of the TOML file: keys exactly as written, `deny_unknown_fields`, no
//! validation. Values that `Config` validates are `Spanned` so a problem can name its line.

use serde::Deserialize;
use serde_spanned::Spanned;

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// `thing_name`: the AWS IoT thing this device reports as.
    pub thing_name: Option<Spanned<String>>,
    /// `state_dir`: where the spool, report id and status live.
    pub state_dir: Option<Spanned<String>>,
    /// `shutdown_timeout_secs`.
    pub shutdown_timeout_secs: Option<Spanned<u64>>,
    /// `[collect]`.
    #[serde(default)]
    pub collect: Collect,
    /// `[report]`.
    #[serde(default)]
    pub report: Report,
    /// `[[custom_metrics]]`.
    #[serde(default)]
    pub custom_metrics: Vec<Spanned<CustomMetric>>,
    /// `[mqtt]`; absent = no link (only `run --dry-run` and the one-shot commands work).
    pub mqtt: Option<Spanned<Mqtt>>,
    /// `[spool]`.
    #[serde(default)]
    pub spool: Spool,
    /// `[tap]`: observer of the device's local broker.
    pub tap: Option<Spanned<Tap>>,
    /// `[[traffic_exports]]`: traffic counts exported as custom metrics.
    #[serde(default)]
    pub traffic_exports: Vec<Spanned<TrafficExport>>,
    /// `[detect]`: the local Detect engine.
    pub detect: Option<Spanned<Detect>>,
    /// `[[alarms]]`: where violation events go.
    #[serde(default)]
    pub alarms: Vec<Spanned<Alarm>>,
}

/// `[collect]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collect {
    /// `procfs_root`.
    pub procfs_root: Option<Spanned<String>>,
    /// `sysfs_root`.
    pub sysfs_root: Option<Spanned<String>>,
    /// `sample_interval_secs`.
    pub sample_interval_secs: Option<Spanned<u64>>,
    /// `interfaces_include`: globs, empty = all.
    pub interfaces_include: Option<Vec<Spanned<String>>>,
    /// `interfaces_exclude`: globs.
    pub interfaces_exclude: Option<Vec<Spanned<String>>>,
    /// `sockets`: `auto` | `netlink` | `procfs`.
    pub sockets: Option<Spanned<String>>,
}

/// `[report]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// `interval_secs`.
    pub interval_secs: Option<Spanned<u64>>,
    /// `format`: `json` | `cbor`.
    pub format: Option<Spanned<String>>,
    /// `keys`: `long` | `short`.
    pub keys: Option<Spanned<String>>,
    /// `max_list_len`.
    pub max_list_len: Option<Spanned<u64>>,
    /// `startup_jitter_secs`.
    pub startup_jitter_secs: Option<Spanned<u64>>,
}

/// One `[[custom_metrics]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomMetric {
    /// `name`: the metricName given to CreateCustomMetric.
    pub name: Spanned<String>,
    /// `type`: `number` | `number-list` | `string-list` | `ip-address-list`.
    #[serde(rename = "type")]
    pub metric_type: Spanned<String>,
    /// `builtin`: one of the built-in sources.
    pub builtin: Option<Spanned<String>>,
    /// `command`: argv, executed without a shell.
    pub command: Option<Spanned<Vec<String>>>,
    /// `file`: a file whose content is the value.
    pub file: Option<Spanned<String>>,
    /// `timeout_secs`: for `command`.
    pub timeout_secs: Option<Spanned<u64>>,
    /// `mount`: for `builtin = "disk_used_percent"`.
    pub mount: Option<Spanned<String>>,
    /// `sensor`: for `builtin = "temperature_celsius"`.
    pub sensor: Option<Spanned<String>>,
}

/// `[mqtt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mqtt {
    /// `endpoint`.
    pub endpoint: Option<Spanned<String>>,
    /// `port`.
    pub port: Option<Spanned<u64>>,
    /// `proxy`: `http://[user:password@]host:port`.
    pub proxy: Option<Spanned<String>>,
    /// `tls`.
    pub tls: Option<Spanned<bool>>,
    /// `ca_file`.
    pub ca_file: Option<Spanned<String>>,
    /// `cert_file`.
    pub cert_file: Option<Spanned<String>>,
    /// `key_file`.
    pub key_file: Option<Spanned<String>>,
    /// `alpn`.
    pub alpn: Option<Spanned<String>>,
    /// `client_id`.
    pub client_id: Option<Spanned<String>>,
    /// `keep_alive_secs`.
    pub keep_alive_secs: Option<Spanned<u64>>,
    /// `clean_session`.
    pub clean_session: Option<Spanned<bool>>,
    /// `reconnect_min_secs`.
    pub reconnect_min_secs: Option<Spanned<u64>>,
    /// `reconnect_max_secs`.
    pub reconnect_max_secs: Option<Spanned<u64>>,
    /// `answer_timeout_secs`.
    pub answer_timeout_secs: Option<Spanned<u64>>,
    /// `topic_root`: `$aws/things/{thing}/defender/metrics` by default.
    pub topic_root: Option<Spanned<String>>,
    /// `shared_group`: defender-fleet's key (the agent refuses it; the fleet reads this mirror).
    pub shared_group: Option<Spanned<String>>,
}

/// `[spool]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    /// `max_reports`.
    pub max_reports: Option<Spanned<u64>>,
    /// `max_bytes`.
    pub max_bytes: Option<Spanned<u64>>,
    /// `backlog`: `latest` | `all`.
    pub backlog: Option<Spanned<String>>,
    /// `drain_interval_secs`: `backlog = "all"`, the pause between two reports of a backlog.
    pub drain_interval_secs: Option<Spanned<u64>>,
}

/// `[tap]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    /// `enabled`.
    pub enabled: Option<Spanned<bool>>,
    /// `host`.
    pub host: Option<Spanned<String>>,
    /// `port`.
    pub port: Option<Spanned<u64>>,
    /// `tls`.
    pub tls: Option<Spanned<bool>>,
    /// `ca_file`.
    pub ca_file: Option<Spanned<String>>,
    /// `cert_file`.
    pub cert_file: Option<Spanned<String>>,
    /// `key_file`.
    pub key_file: Option<Spanned<String>>,
    /// `client_id`.
    pub client_id: Option<Spanned<String>>,
    /// `outbound`: filters of topics the device sends.
    pub outbound: Option<Vec<Spanned<String>>>,
    /// `inbound`: filters of topics the device receives.
    pub inbound: Option<Vec<Spanned<String>>>,
}

/// One `[[traffic_exports]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficExport {
    /// `name`: the custom metric's name in the report.
    pub name: Spanned<String>,
    /// `metric`: the AWS metric counted.
    pub metric: Spanned<String>,
    /// `dimension`: a dimension name; absent = all traffic.
    pub dimension: Option<Spanned<String>>,
    /// `operator`: `IN` | `NOT_IN`.
    pub operator: Option<Spanned<String>>,
}

/// `[detect]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// `enabled`.
    pub enabled: Option<Spanned<bool>>,
    /// `profiles`: files or directories.
    pub profiles: Option<Vec<Spanned<String>>>,
    /// `dimensions`: files or directories.
    pub dimensions: Option<Vec<Spanned<String>>>,
    /// `custom_metrics`: files or directories.
    pub custom_metrics: Option<Vec<Spanned<String>>>,
    /// `mode`: `load` | `strict`.
    pub mode: Option<Spanned<String>>,
    /// `statistical`: `off` | `local-history`.
    pub statistical: Option<Spanned<String>>,
    /// `ml`: `off` | `local-baseline`.
    pub ml: Option<Spanned<String>>,
    /// `retention_days`.
    pub retention_days: Option<Spanned<u64>>,
    /// `max_events`.
    pub max_events: Option<Spanned<u64>>,
    /// `source_ip`: the device's public address, for `aws:source-ip-address`.
    pub source_ip: Option<Spanned<String>>,
    /// `disconnect_duration`: evaluate `aws:disconnect-duration` (unverified reconstruction).
    pub disconnect_duration: Option<Spanned<bool>>,
    /// `region`: the region in the ARNs of managed profiles and dimensions.
    pub region: Option<Spanned<String>>,
    /// `account_id`: the account in those ARNs.
    pub account_id: Option<Spanned<String>>,
    /// `[detect.push]`: profiles and dimensions pushed over MQTT.
    pub push: Option<Spanned<DetectPush>>,
}

/// `[detect.push]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectPush {
    /// `enabled`.
    pub enabled: Option<Spanned<bool>>,
    /// `topic`: subscribed on the agent's link.
    pub topic: Spanned<String>,
    /// `response_topic`: where the outcome goes.
    pub response_topic: Spanned<String>,
    /// `max_bytes`: larger messages are refused unread.
    pub max_bytes: Option<Spanned<u64>>,
}

/// One `[[alarms]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alarm {
    /// `type`: `log` | `file` | `mqtt` | `command`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    /// `topic` (mqtt).
    pub topic: Option<Spanned<String>>,
    /// `qos` (mqtt).
    pub qos: Option<Spanned<u64>>,
    /// `via` (mqtt): `link` | `tap`.
    pub via: Option<Spanned<String>>,
    /// `path` (file).
    pub path: Option<Spanned<String>>,
    /// `argv` (command).
    pub argv: Option<Spanned<Vec<String>>>,
    /// `timeout_secs` (command).
    pub timeout_secs: Option<Spanned<u64>>,
}
