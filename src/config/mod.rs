//! Configuration: `file` mirrors the TOML as written; [`Config`] holds validated, typed values.
//!
//! One TOML file configures the agent. Every key is documented, with its default, in
//! `config/agent.example.toml`, which is embedded here as [`EXAMPLE`] and parsed by a test.
//! Problems name the key path and the line and column in the file: a shape error stops parsing
//! (serde cannot type the rest), after which every semantic problem is collected and reported.

pub mod file;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_spanned::Spanned;

use crate::metric::{check_custom_metric_name, CustomMetricType};

/// The example configuration, every key with its default (`defender-agent print-example-config`).
pub const EXAMPLE: &str = include_str!("../../config/agent.example.toml");

/// AWS throttles reports to one per 5 minutes per device (spec: metrics-report.md A.4).
pub const AWS_MIN_REPORT_INTERVAL_SECS: u64 = 300;

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The configuration cannot be used.
    Error,
    /// Allowed, but probably not what the operator wants.
    Warning,
}

/// One problem in a configuration file, with the key and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// Dotted key path, e.g. `report.interval_secs` or `custom_metrics[1].type`.
    pub key: String,
    /// 1-based line and column of the key's value, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match self.position {
            Some((line, col)) => write!(f, "{sev}: line {line}, column {col}: ")?,
            None => write!(f, "{sev}: ")?,
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but has problems (every error and warning found).
    #[error("{}", render_problems(.origin, .problems))]
    Invalid {
        /// The file name (or `<example>`, `<built-in>`).
        origin: String,
        /// Every problem, errors and warnings.
        problems: Vec<Problem>,
    },
}

fn render_problems(origin: &str, problems: &[Problem]) -> String {
    let errors = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .count();
    let mut out = format!("{origin}: {errors} error(s) in configuration");
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// Where sockets are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sockets {
    /// netlink sock_diag, falling back to `/proc/net` when netlink is unavailable.
    Auto,
    /// netlink only.
    Netlink,
    /// `/proc/net/{tcp,tcp6,udp,udp6}` under `procfs_root` only.
    Procfs,
}

/// `[collect]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectConfig {
    /// procfs root (default `/proc`).
    pub procfs_root: PathBuf,
    /// sysfs root (default `/sys`).
    pub sysfs_root: PathBuf,
    /// How often the device is sampled.
    pub sample_interval: Duration,
    /// Interface globs to include in byte/packet counters; empty = all.
    pub interfaces_include: Vec<String>,
    /// Interface globs to exclude from byte/packet counters.
    pub interfaces_exclude: Vec<String>,
    /// Socket source.
    pub sockets: Sockets,
}

/// Report encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// JSON, published on `.../metrics/json`.
    Json,
    /// CBOR, published on `.../metrics/cbor`.
    Cbor,
}

/// Report key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKeys {
    /// `header`, `report_id`, …
    Long,
    /// `hed`, `rid`, …
    Short,
}

/// `[report]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    /// How often a report is built and published.
    pub interval: Duration,
    /// JSON or CBOR.
    pub format: ReportFormat,
    /// Long or short keys.
    pub keys: ReportKeys,
    /// Cap on each list (ports, connections); `total` stays true.
    pub max_list_len: usize,
    /// Random delay before the first report, so a fleet rebooting together does not align.
    pub startup_jitter: Duration,
}

/// A built-in custom metric source (sysinfo).
#[derive(Debug, Clone, PartialEq)]
pub enum Builtin {
    /// `cpu_usage_percent`.
    CpuUsagePercent,
    /// `memory_used_percent`.
    MemoryUsedPercent,
    /// `disk_used_percent` for `mount`.
    DiskUsedPercent {
        /// Mount point.
        mount: PathBuf,
    },
    /// `load_average`: 1-min (number) or [1, 5, 15] (number-list).
    LoadAverage,
    /// `uptime_secs`.
    UptimeSecs,
    /// `process_count`.
    ProcessCount,
    /// `temperature_celsius` of the sensor whose label contains `sensor` (empty = first).
    TemperatureCelsius {
        /// Label substring.
        sensor: String,
    },
}

/// Where a custom metric's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomSource {
    /// A built-in.
    Builtin(Builtin),
    /// A command, argv executed directly (never through a shell), killed after `timeout`.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Kill after this long.
        timeout: Duration,
    },
    /// A file read at every sample (e.g. a sysfs value).
    File {
        /// The file.
        path: PathBuf,
    },
}

/// One `[[custom_metrics]]` table, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomMetricConfig {
    /// metricName.
    pub name: String,
    /// metricType.
    pub metric_type: CustomMetricType,
    /// Source.
    pub source: CustomSource,
}

/// `[mqtt]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host name (also the TLS server name).
    pub endpoint: String,
    /// Port (8883, or 443 with ALPN).
    pub port: u16,
    /// Mutual TLS; false only for a local broker.
    pub tls: bool,
    /// CA bundle.
    pub ca_file: PathBuf,
    /// Client certificate.
    pub cert_file: PathBuf,
    /// Client private key.
    pub key_file: PathBuf,
    /// ALPN protocol (`x-amzn-mqtt-ca` on port 443), empty = none.
    pub alpn: String,
    /// MQTT client id (the thing name unless configured).
    pub client_id: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Clean session.
    pub clean_session: bool,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Reconnect delay cap.
    pub reconnect_max: Duration,
    /// A published report without an answer after this long is retried on the next connection.
    pub answer_timeout: Duration,
}

/// What to publish after an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// Publish the newest report; keep older ones as superseded history.
    Latest,
    /// Publish every report, oldest first, paced at the report interval.
    All,
}

/// `[spool]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    /// Bound on stored reports.
    pub max_reports: usize,
    /// Bound on stored bytes.
    pub max_bytes: u64,
    /// Backlog policy.
    pub backlog: Backlog,
}

/// `[tap]`, validated (present and enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct TapConfig {
    /// Local broker host.
    pub host: String,
    /// Local broker port.
    pub port: u16,
    /// TLS to the local broker.
    pub tls: bool,
    /// CA file (with `tls`).
    pub ca_file: PathBuf,
    /// Client certificate (with `tls`).
    pub cert_file: PathBuf,
    /// Client key (with `tls`).
    pub key_file: PathBuf,
    /// The tap's MQTT client id (`<thing_name>-tap` unless configured).
    pub client_id: String,
    /// Filters of topics the device sends (a bridge's `topic … out`).
    pub outbound: Vec<String>,
    /// Filters of topics the device receives (`topic … in`).
    pub inbound: Vec<String>,
}

/// One `[[traffic_exports]]`: a traffic count exported as a `number` custom metric.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficExport {
    /// The custom metric's name in the report.
    pub name: String,
    /// The AWS metric counted (`aws:num-messages-sent`, …).
    pub metric: String,
    /// The dimension scoping the count; `None` = all traffic.
    pub dimension: Option<String>,
    /// NOT_IN instead of IN.
    pub not_in: bool,
}

/// How strictly profiles are checked when loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectMode {
    /// Profiles AWS already accepted: wire rules enforced, unsupported behaviors skipped.
    Load,
    /// Hand-written profiles: every rule.
    Strict,
}

/// `[detect]`, validated (present and enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectConfig {
    /// Profile files or directories.
    pub profiles: Vec<PathBuf>,
    /// Dimension files or directories.
    pub dimensions: Vec<PathBuf>,
    /// Custom metric definition files or directories.
    pub custom_metrics: Vec<PathBuf>,
    /// LOAD or STRICT.
    pub mode: DetectMode,
    /// `off` or `local-history` (statistical thresholds from this device's own history).
    pub statistical: String,
    /// `off` or `local-baseline` (ML behaviors against a local robust baseline).
    pub ml: String,
    /// How long violation events are kept.
    pub retention: Duration,
    /// Bound on stored violation events.
    pub max_events: usize,
    /// The device's public (post-NAT) address, the value of `aws:source-ip-address` at each
    /// successful connection; without it such behaviors are not evaluable.
    pub source_ip: Option<std::net::IpAddr>,
    /// Evaluate `aws:disconnect-duration` with the unverified reconstruction (detect.md §2.3).
    pub disconnect_duration: bool,
    /// Region in the ARNs of managed profiles and dimensions (None: `DEFENDER_AGENT_REGION`,
    /// else `local`).
    pub region: Option<String>,
    /// Account in those ARNs (None: `DEFENDER_AGENT_ACCOUNT`, else `000000000000`).
    pub account_id: Option<String>,
    /// `[detect.push]`, when present and enabled.
    pub push: Option<PushConfig>,
}

/// `[detect.push]`: security profiles and dimensions pushed over the agent's MQTT link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// Subscribed topic (a retained message there reaches every device when it connects).
    pub topic: String,
    /// Where the outcome of each message is published (QoS 1).
    pub response_topic: String,
    /// Larger messages are refused unread.
    pub max_bytes: usize,
}

/// Default `[detect.push] max_bytes`.
pub const DEFAULT_PUSH_MAX_BYTES: usize = 64 * 1024;

/// Where the MQTT alarm output publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmVia {
    /// The agent's own connection (`[mqtt]`).
    Link,
    /// The local broker of `[tap]`.
    Tap,
}

/// One `[[alarms]]` output.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmOutput {
    /// The log (always on; listing it is allowed and changes nothing).
    Log,
    /// JSON lines appended to a file.
    File {
        /// The file.
        path: PathBuf,
    },
    /// An MQTT topic.
    Mqtt {
        /// The topic.
        topic: String,
        /// QoS 0, 1 or 2.
        qos: u8,
        /// Which connection.
        via: AlarmVia,
    },
    /// A command (argv, never a shell) with the event JSON on stdin.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Killed after this long.
        timeout: Duration,
    },
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Thing name (≤ 128 bytes, no control characters).
    pub thing_name: String,
    /// State directory.
    pub state_dir: PathBuf,
    /// Grace period for a clean shutdown.
    pub shutdown_timeout: Duration,
    /// `[collect]`.
    pub collect: CollectConfig,
    /// `[report]`.
    pub report: ReportConfig,
    /// `[[custom_metrics]]` in file order.
    pub custom_metrics: Vec<CustomMetricConfig>,
    /// `[mqtt]`, if present.
    pub mqtt: Option<MqttConfig>,
    /// `[spool]`.
    pub spool: SpoolConfig,
    /// `[tap]`, when present and enabled.
    pub tap: Option<TapConfig>,
    /// `[[traffic_exports]]`.
    pub traffic_exports: Vec<TrafficExport>,
    /// `[detect]`, when present and enabled.
    pub detect: Option<DetectConfig>,
    /// `[[alarms]]`.
    pub alarms: Vec<AlarmOutput>,
    /// Warnings found while validating (the file is usable).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let src = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&src, &path.display().to_string())
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(src: &str, origin: &str) -> Result<Config, Error> {
        let file = parse_file(src).map_err(|p| Error::Invalid {
            origin: origin.to_owned(),
            problems: vec![p],
        })?;
        let mut v = Validator {
            src,
            problems: Vec::new(),
        };
        let config = v.config(&file);
        if v.problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(Error::Invalid {
                origin: origin.to_owned(),
                problems: v.problems,
            });
        }
        // Invariant: no errors were recorded, so every required value was present.
        let mut config = config.ok_or_else(|| Error::Invalid {
            origin: origin.to_owned(),
            problems: v.problems.clone(),
        })?;
        config.warnings = v.problems;
        Ok(config)
    }

    /// The built-in default used when no `--config` is given: samples this machine, needs no AWS
    /// account and no state directory of its own (a temporary one is used by the callers).
    pub fn builtin() -> Config {
        let src = concat!(
            "thing_name = \"local-device\"\n",
            "state_dir = \"/var/lib/defender-agent\"\n",
            "[[custom_metrics]]\nname = \"cpu_usage\"\ntype = \"number\"\nbuiltin = \"cpu_usage_percent\"\n",
            "[[custom_metrics]]\nname = \"memory_used\"\ntype = \"number\"\nbuiltin = \"memory_used_percent\"\n",
            "[[custom_metrics]]\nname = \"load_average\"\ntype = \"number-list\"\nbuiltin = \"load_average\"\n",
        );
        // Invariant: the built-in text above is a valid configuration (tested).
        match Config::parse(src, "<built-in>") {
            Ok(c) => c,
            Err(e) => unreachable!("built-in configuration is invalid: {e}"),
        }
    }
}

/// Deserialises the file, turning a serde error into a positioned problem with its key path.
fn parse_file(src: &str) -> Result<file::File, Problem> {
    let de = match toml::de::Deserializer::parse(src) {
        Ok(de) => de,
        Err(e) => return Err(toml_problem(src, String::new(), &e)),
    };
    serde_path_to_error::deserialize::<_, file::File>(de).map_err(|e| {
        // Spanned<T> shows up as private path segments: keep only the user's keys.
        let path = e.path().to_string();
        let key = path
            .split('.')
            .filter(|seg| !seg.starts_with("$__serde_spanned"))
            .collect::<Vec<_>>()
            .join(".");
        toml_problem(src, key, e.inner())
    })
}

fn toml_problem(src: &str, key: String, e: &toml::de::Error) -> Problem {
    Problem {
        severity: Severity::Error,
        key,
        position: e.span().map(|s| line_col(src, s.start)),
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// Collects every semantic problem while building the typed config.
struct Validator<'a> {
    src: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn push<T>(&mut self, severity: Severity, key: &str, at: &Spanned<T>, message: String) {
        self.problems.push(Problem {
            severity,
            key: key.to_owned(),
            position: Some(line_col(self.src, at.span().start)),
            message,
        });
    }

    fn error<T>(&mut self, key: &str, at: &Spanned<T>, message: impl Into<String>) {
        self.push(Severity::Error, key, at, message.into());
    }

    fn missing(&mut self, key: &str, message: &str) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.to_owned(),
            position: None,
            message: message.to_owned(),
        });
    }

    /// A number of seconds within `[min, max]`, or the default.
    fn secs(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        default: u64,
        min: u64,
        max: u64,
    ) -> Duration {
        match v {
            None => Duration::from_secs(default),
            Some(s) if (min..=max).contains(s.get_ref()) => Duration::from_secs(*s.get_ref()),
            Some(s) => {
                self.error(
                    key,
                    s,
                    format!(
                        "must be between {min} and {max} seconds, got {}",
                        s.get_ref()
                    ),
                );
                Duration::from_secs(default)
            }
        }
    }

    fn path(&mut self, key: &str, v: &Option<Spanned<String>>, default: &str) -> PathBuf {
        match v {
            None => PathBuf::from(default),
            Some(s) if s.get_ref().is_empty() => {
                self.error(key, s, "must not be empty");
                PathBuf::from(default)
            }
            Some(s) => PathBuf::from(s.get_ref()),
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        v: &Option<Spanned<String>>,
        default: T,
        choices: &[(&str, T)],
    ) -> T {
        let Some(s) = v else { return default };
        match choices.iter().find(|(name, _)| *name == s.get_ref()) {
            Some((_, value)) => *value,
            None => {
                let names: Vec<_> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.error(
                    key,
                    s,
                    format!(
                        "must be one of {}, got \"{}\"",
                        names.join(", "),
                        s.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn config(&mut self, f: &file::File) -> Option<Config> {
        let thing_name = match &f.thing_name {
            None => {
                self.missing(
                    "thing_name",
                    "is required: the AWS IoT thing name this device reports as",
                );
                None
            }
            Some(s) => match check_thing_name(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(why) => {
                    self.error("thing_name", s, why);
                    None
                }
            },
        };
        let state_dir = match &f.state_dir {
            None => PathBuf::from("/var/lib/defender-agent"),
            Some(s) if s.get_ref().is_empty() => {
                self.error("state_dir", s, "must not be empty");
                PathBuf::new()
            }
            Some(s) => PathBuf::from(s.get_ref()),
        };
        let shutdown_timeout = self.secs(
            "shutdown_timeout_secs",
            &f.shutdown_timeout_secs,
            10,
            1,
            600,
        );
        let collect = self.collect(&f.collect);
        let report = self.report(&f.report);
        if collect.sample_interval > report.interval {
            if let Some(s) = &f.collect.sample_interval_secs {
                self.error(
                    "collect.sample_interval_secs",
                    s,
                    format!(
                        "must not be longer than report.interval_secs ({})",
                        report.interval.as_secs()
                    ),
                );
            }
        }
        let mut custom_metrics = Vec::new();
        for (i, m) in f.custom_metrics.iter().enumerate() {
            if let Some(c) = self.custom_metric(i, m) {
                if custom_metrics
                    .iter()
                    .any(|o: &CustomMetricConfig| o.name == c.name)
                {
                    self.error(
                        &format!("custom_metrics[{i}].name"),
                        &m.get_ref().name,
                        format!("duplicate custom metric name \"{}\"", c.name),
                    );
                }
                custom_metrics.push(c);
            }
        }
        let mqtt = f
            .mqtt
            .as_ref()
            .and_then(|m| self.mqtt(m, thing_name.as_deref().unwrap_or("")));
        let spool = self.spool(&f.spool);
        let tap = f
            .tap
            .as_ref()
            .and_then(|t| self.tap(t, thing_name.as_deref().unwrap_or("")));
        let traffic_exports = f
            .traffic_exports
            .iter()
            .enumerate()
            .filter_map(|(i, e)| self.traffic_export(i, e))
            .collect();
        let detect = f.detect.as_ref().and_then(|d| self.detect(d));
        if let (Some(d), Some(fd)) = (&detect, &f.detect) {
            if d.push.is_some() && mqtt.is_none() {
                if let Some(p) = &fd.get_ref().push {
                    self.error(
                        "detect.push",
                        p,
                        "needs an [mqtt] table: pushes arrive on the agent's own link",
                    );
                }
            }
        }
        let mut alarms = Vec::new();
        for (i, a) in f.alarms.iter().enumerate() {
            if let Some(out) = self.alarm(i, a) {
                if let AlarmOutput::Mqtt {
                    via: AlarmVia::Tap, ..
                } = out
                {
                    if tap.is_none() {
                        self.error(
                            &format!("alarms[{i}].via"),
                            a,
                            "\"tap\" needs an enabled [tap] table",
                        );
                    }
                }
                if let AlarmOutput::Mqtt {
                    via: AlarmVia::Link,
                    ..
                } = out
                {
                    if f.mqtt.is_none() {
                        self.error(
                            &format!("alarms[{i}].via"),
                            a,
                            "\"link\" needs an [mqtt] table",
                        );
                    }
                }
                alarms.push(out);
            }
        }
        Some(Config {
            thing_name: thing_name?,
            state_dir,
            shutdown_timeout,
            collect,
            report,
            custom_metrics,
            mqtt,
            spool,
            tap,
            traffic_exports,
            detect,
            alarms,
            warnings: Vec::new(),
        })
    }

    fn globs(
        &mut self,
        key: &str,
        v: &Option<Vec<Spanned<String>>>,
        default: &[&str],
    ) -> Vec<String> {
        let Some(list) = v else {
            return default.iter().map(|s| s.to_string()).collect();
        };
        let mut out = Vec::new();
        for (i, g) in list.iter().enumerate() {
            let text = g.get_ref();
            if text.is_empty() || text.contains('/') || text.len() > 64 {
                self.error(
                    &format!("{key}[{i}]"),
                    g,
                    "must be an interface name glob (1-64 characters, no '/'), e.g. \"eth*\"",
                );
            } else {
                out.push(text.clone());
            }
        }
        out
    }

    fn collect(&mut self, c: &file::Collect) -> CollectConfig {
        CollectConfig {
            procfs_root: self.path("collect.procfs_root", &c.procfs_root, "/proc"),
            sysfs_root: self.path("collect.sysfs_root", &c.sysfs_root, "/sys"),
            sample_interval: self.secs(
                "collect.sample_interval_secs",
                &c.sample_interval_secs,
                60,
                1,
                86_400,
            ),
            interfaces_include: self.globs(
                "collect.interfaces_include",
                &c.interfaces_include,
                &[],
            ),
            interfaces_exclude: self.globs(
                "collect.interfaces_exclude",
                &c.interfaces_exclude,
                &["lo"],
            ),
            sockets: self.choice(
                "collect.sockets",
                &c.sockets,
                Sockets::Auto,
                &[
                    ("auto", Sockets::Auto),
                    ("netlink", Sockets::Netlink),
                    ("procfs", Sockets::Procfs),
                ],
            ),
        }
    }

    fn report(&mut self, r: &file::Report) -> ReportConfig {
        let interval = self.secs("report.interval_secs", &r.interval_secs, 300, 1, 86_400);
        if let Some(s) = &r.interval_secs {
            if *s.get_ref() >= 1 && *s.get_ref() < AWS_MIN_REPORT_INTERVAL_SECS {
                self.push(
                    Severity::Warning,
                    "report.interval_secs",
                    s,
                    format!(
                        "{} s is below {AWS_MIN_REPORT_INTERVAL_SECS} s: AWS IoT Device Defender throttles reports to one per 5 minutes per device, so reports may be discarded",
                        s.get_ref()
                    ),
                );
            }
        }
        let max_list_len = match &r.max_list_len {
            None => 100,
            Some(s) if (1..=10_000).contains(s.get_ref()) => *s.get_ref() as usize,
            Some(s) => {
                self.error(
                    "report.max_list_len",
                    s,
                    format!("must be between 1 and 10000, got {}", s.get_ref()),
                );
                100
            }
        };
        ReportConfig {
            interval,
            format: self.choice(
                "report.format",
                &r.format,
                ReportFormat::Json,
                &[("json", ReportFormat::Json), ("cbor", ReportFormat::Cbor)],
            ),
            keys: self.choice(
                "report.keys",
                &r.keys,
                ReportKeys::Long,
                &[("long", ReportKeys::Long), ("short", ReportKeys::Short)],
            ),
            max_list_len,
            startup_jitter: self.secs(
                "report.startup_jitter_secs",
                &r.startup_jitter_secs,
                30,
                0,
                3_600,
            ),
        }
    }

    fn custom_metric(
        &mut self,
        i: usize,
        m: &Spanned<file::CustomMetric>,
    ) -> Option<CustomMetricConfig> {
        let key = format!("custom_metrics[{i}]");
        let c = m.get_ref();
        let mut ok = true;
        if let Err(e) = check_custom_metric_name(c.name.get_ref()) {
            self.error(&format!("{key}.name"), &c.name, e.to_string());
            ok = false;
        }
        let metric_type = match c.metric_type.get_ref().as_str() {
            "number" => Some(CustomMetricType::Number),
            "number-list" => Some(CustomMetricType::NumberList),
            "string-list" => Some(CustomMetricType::StringList),
            "ip-address-list" => Some(CustomMetricType::IpAddressList),
            other => {
                self.error(
                    &format!("{key}.type"),
                    &c.metric_type,
                    format!("must be one of \"number\", \"number-list\", \"string-list\", \"ip-address-list\", got \"{other}\""),
                );
                None
            }
        };
        let sources = [c.builtin.is_some(), c.command.is_some(), c.file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.error(
                &key,
                m,
                "needs exactly one source: `builtin`, `command` or `file`",
            );
            return None;
        }
        let source = if let Some(b) = &c.builtin {
            self.builtin(&key, c, b, metric_type)?
        } else if let Some(argv) = &c.command {
            // Invariant: `||` reads [0] only when the list is non-empty.
            if argv.get_ref().is_empty() || argv.get_ref()[0].is_empty() {
                self.error(
                    &format!("{key}.command"),
                    argv,
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                );
                ok = false;
            }
            CustomSource::Command {
                argv: argv.get_ref().clone(),
                timeout: self.secs(&format!("{key}.timeout_secs"), &c.timeout_secs, 5, 1, 300),
            }
        } else if let Some(path) = &c.file {
            CustomSource::File {
                path: self.path(&format!("{key}.file"), &Some(path.clone()), ""),
            }
        } else {
            return None;
        };
        if c.timeout_secs.is_some() && !matches!(source, CustomSource::Command { .. }) {
            if let Some(t) = &c.timeout_secs {
                self.error(
                    &format!("{key}.timeout_secs"),
                    t,
                    "only applies to `command` sources",
                );
            }
        }
        if let (Some(mount), false) = (
            &c.mount,
            matches!(
                source,
                CustomSource::Builtin(Builtin::DiskUsedPercent { .. })
            ),
        ) {
            self.error(
                &format!("{key}.mount"),
                mount,
                "only applies to builtin = \"disk_used_percent\"",
            );
        }
        if let (Some(sensor), false) = (
            &c.sensor,
            matches!(
                source,
                CustomSource::Builtin(Builtin::TemperatureCelsius { .. })
            ),
        ) {
            self.error(
                &format!("{key}.sensor"),
                sensor,
                "only applies to builtin = \"temperature_celsius\"",
            );
        }
        if !ok {
            return None;
        }
        Some(CustomMetricConfig {
            name: c.name.get_ref().clone(),
            metric_type: metric_type?,
            source,
        })
    }

    fn builtin(
        &mut self,
        key: &str,
        c: &file::CustomMetric,
        b: &Spanned<String>,
        ty: Option<CustomMetricType>,
    ) -> Option<CustomSource> {
        let builtin = match b.get_ref().as_str() {
            "cpu_usage_percent" => Builtin::CpuUsagePercent,
            "memory_used_percent" => Builtin::MemoryUsedPercent,
            "disk_used_percent" => Builtin::DiskUsedPercent {
                mount: c
                    .mount
                    .as_ref()
                    .map_or_else(|| PathBuf::from("/"), |m| PathBuf::from(m.get_ref())),
            },
            "load_average" => Builtin::LoadAverage,
            "uptime_secs" => Builtin::UptimeSecs,
            "process_count" => Builtin::ProcessCount,
            "temperature_celsius" => Builtin::TemperatureCelsius {
                sensor: c
                    .sensor
                    .as_ref()
                    .map_or_else(String::new, |s| s.get_ref().clone()),
            },
            other => {
                self.error(
                    &format!("{key}.builtin"),
                    b,
                    format!(
                        "unknown built-in \"{other}\"; one of \"cpu_usage_percent\", \"memory_used_percent\", \"disk_used_percent\", \"load_average\", \"uptime_secs\", \"process_count\", \"temperature_celsius\""
                    ),
                );
                return None;
            }
        };
        let allowed: &[CustomMetricType] = match builtin {
            Builtin::LoadAverage => &[CustomMetricType::Number, CustomMetricType::NumberList],
            _ => &[CustomMetricType::Number],
        };
        if let Some(ty) = ty {
            if !allowed.contains(&ty) {
                self.error(
                    &format!("{key}.type"),
                    &c.metric_type,
                    format!(
                        "built-in \"{}\" gives a {}, not a {ty}",
                        b.get_ref(),
                        allowed
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                );
                return None;
            }
        }
        Some(CustomSource::Builtin(builtin))
    }

    fn mqtt(&mut self, m: &Spanned<file::Mqtt>, thing_name: &str) -> Option<MqttConfig> {
        let mq = m.get_ref();
        let endpoint = match &mq.endpoint {
            Some(e) if !e.get_ref().is_empty() => e.get_ref().clone(),
            Some(e) => {
                self.error("mqtt.endpoint", e, "must not be empty");
                String::new()
            }
            None => {
                self.error("mqtt", m, "`endpoint` is required in [mqtt]");
                String::new()
            }
        };
        let port = match &mq.port {
            None => 8883,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.error(
                    "mqtt.port",
                    p,
                    format!("must be between 1 and 65535, got {}", p.get_ref()),
                );
                8883
            }
        };
        let tls = mq.tls.as_ref().is_none_or(|t| *t.get_ref());
        if let (false, Some(t)) = (tls, &mq.tls) {
            self.push(
                Severity::Warning,
                "mqtt.tls",
                t,
                "false: reports travel in plaintext; only for a local broker".to_owned(),
            );
        }
        let file_key = |v: &mut Self, key: &str, f: &Option<Spanned<String>>| -> PathBuf {
            match f {
                Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
                Some(p) if tls => {
                    v.error(
                        &format!("mqtt.{key}"),
                        p,
                        "must not be empty when tls = true",
                    );
                    PathBuf::new()
                }
                None if tls => {
                    v.error(
                        "mqtt",
                        m,
                        format!("`{key}` is required when tls = true (mutual TLS)"),
                    );
                    PathBuf::new()
                }
                _ => PathBuf::new(),
            }
        };
        let ca_file = file_key(self, "ca_file", &mq.ca_file);
        let cert_file = file_key(self, "cert_file", &mq.cert_file);
        let key_file = file_key(self, "key_file", &mq.key_file);
        let alpn = mq
            .alpn
            .as_ref()
            .map_or_else(String::new, |a| a.get_ref().clone());
        if let Some(a) = &mq.alpn {
            if a.get_ref().len() > 255 {
                self.error("mqtt.alpn", a, "must be at most 255 bytes");
            }
            if !a.get_ref().is_empty() && !tls {
                self.error("mqtt.alpn", a, "needs tls = true");
            }
        }
        if port == 443 && alpn.is_empty() && tls {
            if let Some(p) = &mq.port {
                self.push(
                    Severity::Warning,
                    "mqtt.port",
                    p,
                    "443 without alpn: AWS IoT needs alpn = \"x-amzn-mqtt-ca\" on port 443"
                        .to_owned(),
                );
            }
        }
        let client_id = match &mq.client_id {
            Some(c) if !c.get_ref().is_empty() => {
                if c.get_ref().len() > 128 {
                    self.error(
                        "mqtt.client_id",
                        c,
                        "must be at most 128 bytes (AWS IoT limit)",
                    );
                }
                c.get_ref().clone()
            }
            _ => thing_name.to_owned(),
        };
        let reconnect_min = self.secs(
            "mqtt.reconnect_min_secs",
            &mq.reconnect_min_secs,
            1,
            1,
            3_600,
        );
        let reconnect_max = self.secs(
            "mqtt.reconnect_max_secs",
            &mq.reconnect_max_secs,
            300,
            1,
            86_400,
        );
        if reconnect_max < reconnect_min {
            if let Some(s) = &mq.reconnect_max_secs {
                self.error(
                    "mqtt.reconnect_max_secs",
                    s,
                    "must not be smaller than reconnect_min_secs",
                );
            }
        }
        Some(MqttConfig {
            endpoint,
            port,
            tls,
            ca_file,
            cert_file,
            key_file,
            alpn,
            client_id,
            keep_alive: self.secs("mqtt.keep_alive_secs", &mq.keep_alive_secs, 60, 5, 1_200),
            clean_session: mq.clean_session.as_ref().is_none_or(|c| *c.get_ref()),
            reconnect_min,
            reconnect_max,
            answer_timeout: self.secs(
                "mqtt.answer_timeout_secs",
                &mq.answer_timeout_secs,
                60,
                1,
                3_600,
            ),
        })
    }

    fn filters(&mut self, key: &str, v: &Option<Vec<Spanned<String>>>) -> Vec<String> {
        let mut out = Vec::new();
        for (i, f) in v.iter().flatten().enumerate() {
            match crate::topic_filter::TopicFilter::parse(f.get_ref()) {
                Ok(_) => out.push(f.get_ref().clone()),
                Err(e) => self.error(&format!("{key}[{i}]"), f, e.to_string()),
            }
        }
        out
    }

    fn paths(&mut self, key: &str, v: &Option<Vec<Spanned<String>>>) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for (i, p) in v.iter().flatten().enumerate() {
            if p.get_ref().is_empty() {
                self.error(&format!("{key}[{i}]"), p, "must not be empty");
            } else {
                out.push(PathBuf::from(p.get_ref()));
            }
        }
        out
    }

    fn tap(&mut self, t: &Spanned<file::Tap>, thing_name: &str) -> Option<TapConfig> {
        let tf = t.get_ref();
        if !tf.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let port = match &tf.port {
            None => 1883,
            Some(p) if (1..=65535).contains(p.get_ref()) => *p.get_ref() as u16,
            Some(p) => {
                self.error(
                    "tap.port",
                    p,
                    format!("must be between 1 and 65535, got {}", p.get_ref()),
                );
                1883
            }
        };
        let tls = tf.tls.as_ref().is_some_and(|t| *t.get_ref());
        let file = |v: &mut Self, key: &str, f: &Option<Spanned<String>>| -> PathBuf {
            match f {
                Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
                _ if tls => {
                    v.error("tap", t, format!("`{key}` is required when tls = true"));
                    PathBuf::new()
                }
                _ => PathBuf::new(),
            }
        };
        let ca_file = file(self, "ca_file", &tf.ca_file);
        let cert_file = file(self, "cert_file", &tf.cert_file);
        let key_file = file(self, "key_file", &tf.key_file);
        let outbound = self.filters("tap.outbound", &tf.outbound);
        let inbound = self.filters("tap.inbound", &tf.inbound);
        if outbound.is_empty() && inbound.is_empty() {
            self.push(
                Severity::Warning,
                "tap",
                t,
                "neither `outbound` nor `inbound` filters: the tap counts nothing".to_owned(),
            );
        }
        let client_id = match &tf.client_id {
            Some(c) if !c.get_ref().is_empty() => c.get_ref().clone(),
            _ => format!("{thing_name}-tap"),
        };
        Some(TapConfig {
            host: tf
                .host
                .as_ref()
                .map_or_else(|| "127.0.0.1".to_owned(), |h| h.get_ref().clone()),
            port,
            tls,
            ca_file,
            cert_file,
            key_file,
            client_id,
            outbound,
            inbound,
        })
    }

    fn traffic_export(
        &mut self,
        i: usize,
        e: &Spanned<file::TrafficExport>,
    ) -> Option<TrafficExport> {
        let key = format!("traffic_exports[{i}]");
        let x = e.get_ref();
        if let Err(err) = check_custom_metric_name(x.name.get_ref()) {
            self.error(&format!("{key}.name"), &x.name, err.to_string());
            return None;
        }
        const METRICS: [&str; 6] = [
            "aws:num-messages-sent",
            "aws:num-messages-received",
            "aws:num-authorization-failures",
            "aws:num-connection-attempts",
            "aws:num-disconnects",
            "aws:message-byte-size",
        ];
        if !METRICS.contains(&x.metric.get_ref().as_str()) {
            self.error(
                &format!("{key}.metric"),
                &x.metric,
                format!("must be one of {}", METRICS.join(", ")),
            );
            return None;
        }
        let not_in = match x.operator.as_ref().map(|o| o.get_ref().as_str()) {
            None | Some("IN") => false,
            Some("NOT_IN") => true,
            Some(other) => {
                if let Some(o) = &x.operator {
                    self.error(
                        &format!("{key}.operator"),
                        o,
                        format!("must be \"IN\" or \"NOT_IN\", got \"{other}\""),
                    );
                }
                false
            }
        };
        Some(TrafficExport {
            name: x.name.get_ref().clone(),
            metric: x.metric.get_ref().clone(),
            dimension: x.dimension.as_ref().map(|d| d.get_ref().clone()),
            not_in,
        })
    }

    fn detect(&mut self, d: &Spanned<file::Detect>) -> Option<DetectConfig> {
        let df = d.get_ref();
        if !df.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let retention_days = match &df.retention_days {
            None => 14,
            Some(v) if (1..=365).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    "detect.retention_days",
                    v,
                    format!("must be between 1 and 365, got {}", v.get_ref()),
                );
                14
            }
        };
        let max_events = match &df.max_events {
            None => 10_000,
            Some(v) if (100..=1_000_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "detect.max_events",
                    v,
                    format!("must be between 100 and 1000000, got {}", v.get_ref()),
                );
                10_000
            }
        };
        let source_ip = match &df.source_ip {
            None => None,
            Some(v) => match v.get_ref().parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.error(
                        "detect.source_ip",
                        v,
                        format!("must be an IPv4 or IPv6 address, got {:?}", v.get_ref()),
                    );
                    None
                }
            },
        };
        let region = df.region.as_ref().and_then(|r| {
            let ok = !r.get_ref().is_empty()
                && r.get_ref().len() <= 32
                && r.get_ref()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                self.error(
                    "detect.region",
                    r,
                    format!(
                        "must be a region name like \"eu-west-1\", got {:?}",
                        r.get_ref()
                    ),
                );
            }
            ok.then(|| r.get_ref().clone())
        });
        let account_id = df.account_id.as_ref().and_then(|a| {
            let ok = a.get_ref().len() == 12 && a.get_ref().bytes().all(|b| b.is_ascii_digit());
            if !ok {
                self.error(
                    "detect.account_id",
                    a,
                    format!("must be 12 digits, got {:?}", a.get_ref()),
                );
            }
            ok.then(|| a.get_ref().clone())
        });
        let push = df.push.as_ref().and_then(|p| self.detect_push(p));
        Some(DetectConfig {
            profiles: self.paths("detect.profiles", &df.profiles),
            dimensions: self.paths("detect.dimensions", &df.dimensions),
            custom_metrics: self.paths("detect.custom_metrics", &df.custom_metrics),
            mode: self.choice(
                "detect.mode",
                &df.mode,
                DetectMode::Load,
                &[("load", DetectMode::Load), ("strict", DetectMode::Strict)],
            ),
            statistical: self
                .choice(
                    "detect.statistical",
                    &df.statistical,
                    "off",
                    &[("off", "off"), ("local-history", "local-history")],
                )
                .to_owned(),
            ml: self
                .choice(
                    "detect.ml",
                    &df.ml,
                    "off",
                    &[("off", "off"), ("local-baseline", "local-baseline")],
                )
                .to_owned(),
            retention: Duration::from_secs(retention_days * 86_400),
            max_events,
            source_ip,
            disconnect_duration: df
                .disconnect_duration
                .as_ref()
                .is_some_and(|v| *v.get_ref()),
            region,
            account_id,
            push,
        })
    }

    fn detect_push(&mut self, p: &Spanned<file::DetectPush>) -> Option<PushConfig> {
        let x = p.get_ref();
        if !x.enabled.as_ref().is_none_or(|e| *e.get_ref()) {
            return None;
        }
        let mut topic =
            |key: &str, t: &Spanned<String>| match crate::topic_filter::validate_topic(t.get_ref())
            {
                Ok(()) if !t.get_ref().is_empty() => Some(t.get_ref().clone()),
                Ok(()) => {
                    self.error(key, t, "must not be empty");
                    None
                }
                Err(e) => {
                    self.error(key, t, e.to_string());
                    None
                }
            };
        let push_topic = topic("detect.push.topic", &x.topic);
        let response_topic = topic("detect.push.response_topic", &x.response_topic);
        let max = crate::mqtt::MAX_PAYLOAD_BYTES as u64;
        let max_bytes = match &x.max_bytes {
            None => DEFAULT_PUSH_MAX_BYTES,
            Some(v) if (1..=max).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "detect.push.max_bytes",
                    v,
                    format!(
                        "must be between 1 and {max} (the largest MQTT payload AWS IoT carries), got {}",
                        v.get_ref()
                    ),
                );
                DEFAULT_PUSH_MAX_BYTES
            }
        };
        let (topic, response_topic) = (push_topic?, response_topic?);
        if topic == response_topic {
            // The agent would read its own answers as pushes.
            self.error(
                "detect.push.response_topic",
                &x.response_topic,
                "must differ from detect.push.topic",
            );
            return None;
        }
        Some(PushConfig {
            topic,
            response_topic,
            max_bytes,
        })
    }

    fn alarm(&mut self, i: usize, a: &Spanned<file::Alarm>) -> Option<AlarmOutput> {
        let key = format!("alarms[{i}]");
        let x = a.get_ref();
        let kind = x.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "log" => &[],
            "file" => &["path"],
            "mqtt" => &["topic", "qos", "via"],
            "command" => &["argv", "timeout_secs"],
            other => {
                self.error(
                    &format!("{key}.type"),
                    &x.kind,
                    format!(
                        "must be one of \"log\", \"file\", \"mqtt\", \"command\", got \"{other}\""
                    ),
                );
                return None;
            }
        };
        let present = [
            ("topic", x.topic.as_ref().map(|v| v.span())),
            ("qos", x.qos.as_ref().map(|v| v.span())),
            ("via", x.via.as_ref().map(|v| v.span())),
            ("path", x.path.as_ref().map(|v| v.span())),
            ("argv", x.argv.as_ref().map(|v| v.span())),
            ("timeout_secs", x.timeout_secs.as_ref().map(|v| v.span())),
        ];
        for (name, span) in present {
            if let Some(span) = span {
                if !allowed.contains(&name) {
                    self.problems.push(Problem {
                        severity: Severity::Error,
                        key: format!("{key}.{name}"),
                        position: Some(line_col(self.src, span.start)),
                        message: format!("does not apply to type = \"{kind}\""),
                    });
                }
            }
        }
        match kind {
            "log" => Some(AlarmOutput::Log),
            "file" => match &x.path {
                Some(p) if !p.get_ref().is_empty() => Some(AlarmOutput::File {
                    path: PathBuf::from(p.get_ref()),
                }),
                _ => {
                    self.error(&key, a, "type = \"file\" needs `path`");
                    None
                }
            },
            "mqtt" => {
                let topic = match &x.topic {
                    Some(t) => match crate::topic_filter::validate_topic(t.get_ref()) {
                        Ok(()) => t.get_ref().clone(),
                        Err(e) => {
                            self.error(&format!("{key}.topic"), t, e.to_string());
                            return None;
                        }
                    },
                    None => {
                        self.error(&key, a, "type = \"mqtt\" needs `topic`");
                        return None;
                    }
                };
                let qos = match &x.qos {
                    None => 1,
                    Some(q) if *q.get_ref() <= 2 => *q.get_ref() as u8,
                    Some(q) => {
                        self.error(&format!("{key}.qos"), q, "must be 0, 1 or 2");
                        1
                    }
                };
                let via = self.choice(
                    &format!("{key}.via"),
                    &x.via,
                    AlarmVia::Link,
                    &[("link", AlarmVia::Link), ("tap", AlarmVia::Tap)],
                );
                Some(AlarmOutput::Mqtt { topic, qos, via })
            }
            _ => match &x.argv {
                Some(argv) if argv.get_ref().first().is_some_and(|p| !p.is_empty()) => {
                    Some(AlarmOutput::Command {
                        argv: argv.get_ref().clone(),
                        timeout: self.secs(
                            &format!("{key}.timeout_secs"),
                            &x.timeout_secs,
                            10,
                            1,
                            300,
                        ),
                    })
                }
                _ => {
                    self.error(
                        &key,
                        a,
                        "type = \"command\" needs `argv` = [\"/path/to/program\", ...]",
                    );
                    None
                }
            },
        }
    }

    fn spool(&mut self, s: &file::Spool) -> SpoolConfig {
        let max_reports = match &s.max_reports {
            None => 1000,
            Some(v) if (1..=1_000_000).contains(v.get_ref()) => *v.get_ref() as usize,
            Some(v) => {
                self.error(
                    "spool.max_reports",
                    v,
                    format!("must be between 1 and 1000000, got {}", v.get_ref()),
                );
                1000
            }
        };
        let max_bytes = match &s.max_bytes {
            None => 1_048_576,
            // At least one maximum-size MQTT payload (128 KiB) must fit.
            Some(v) if (131_072..=1 << 34).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.error(
                    "spool.max_bytes",
                    v,
                    format!(
                        "must be between 131072 (one 128 KiB report) and 17179869184, got {}",
                        v.get_ref()
                    ),
                );
                1_048_576
            }
        };
        SpoolConfig {
            max_reports,
            max_bytes,
            backlog: self.choice(
                "spool.backlog",
                &s.backlog,
                Backlog::Latest,
                &[("latest", Backlog::Latest), ("all", Backlog::All)],
            ),
        }
    }
}

/// Checks a thing name: 1..128 bytes of UTF-8, no control characters, and none of the MQTT
/// topic characters `/`, `+`, `#` (it becomes one topic level). spec: metrics-report.md A.1, D.14.
pub fn check_thing_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("must be 1 to 128 bytes, got {}", name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || matches!(c, '/' | '+' | '#'))
    {
        return Err(format!(
            "must not contain {c:?} (control characters and '/', '+', '#' break the topic)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<Problem> {
        match Config::parse(src, "test.toml") {
            Ok(c) => c.warnings,
            Err(Error::Invalid { problems, .. }) => problems,
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn the_example_file_parses_without_problems() {
        let c = Config::parse(EXAMPLE, "<example>").expect("example config must be valid");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.report.interval, Duration::from_secs(300));
        assert_eq!(c.collect.interfaces_exclude, vec!["lo".to_owned()]);
    }

    #[test]
    fn the_builtin_default_is_valid() {
        let c = Config::builtin();
        assert_eq!(c.thing_name, "local-device");
        assert_eq!(c.report.format, ReportFormat::Json);
        assert!(c.mqtt.is_none());
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let p = problems("thing_name = \"t\"\n[report]\nintervall_secs = 300\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "report.intervall_secs");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        assert!(p[0].message.contains("intervall_secs"), "{}", p[0].message);
    }

    #[test]
    fn a_wrong_type_names_the_key_path_and_line() {
        let p = problems("thing_name = \"t\"\n\n[collect]\nsample_interval_secs = \"60\"\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "collect.sample_interval_secs");
        assert_eq!(p[0].position.map(|x| x.0), Some(4));
    }

    #[test]
    fn a_missing_thing_name_is_an_error() {
        let p = problems("state_dir = \"/tmp/x\"\n");
        assert_eq!(p[0].key, "thing_name");
        assert!(p[0].message.contains("required"));
    }

    #[test]
    fn every_semantic_problem_is_reported_at_once() {
        let p = problems("thing_name = \"a/b\"\n[report]\nformat = \"xml\"\nkeys = \"tiny\"\n[spool]\nbacklog = \"some\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "thing_name",
                "report.format",
                "report.keys",
                "spool.backlog"
            ]
        );
        assert_eq!(p[1].position, Some((3, 10)));
    }

    #[test]
    fn a_report_interval_below_300_is_allowed_with_a_warning() {
        let c = Config::parse("thing_name = \"t\"\n[report]\ninterval_secs = 60\n", "t").unwrap();
        assert_eq!(c.report.interval, Duration::from_secs(60));
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].severity, Severity::Warning);
        assert!(c.warnings[0].message.contains("throttles"));
    }

    #[test]
    fn custom_metrics_need_exactly_one_source() {
        let p =
            problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"number\"\n");
        assert_eq!(p[0].key, "custom_metrics[0]");
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"number\"\nfile = \"/a\"\nbuiltin = \"uptime_secs\"\n");
        assert!(p[0].message.contains("exactly one source"));
    }

    #[test]
    fn custom_metric_names_and_types_are_checked() {
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"aws:x\"\ntype = \"numbers\"\nbuiltin = \"uptime_secs\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["custom_metrics[0].name", "custom_metrics[0].type"]);
    }

    #[test]
    fn a_builtin_with_the_wrong_type_is_refused() {
        let p = problems("thing_name = \"t\"\n[[custom_metrics]]\nname = \"x\"\ntype = \"string-list\"\nbuiltin = \"cpu_usage_percent\"\n");
        assert_eq!(p[0].key, "custom_metrics[0].type");
    }

    #[test]
    fn mutual_tls_files_are_required_unless_tls_is_off() {
        let p = problems("thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\n");
        assert_eq!(p.len(), 3, "{p:?}");
        let c = Config::parse(
            "thing_name = \"t\"\n[mqtt]\nendpoint = \"localhost\"\ntls = false\n",
            "t",
        )
        .unwrap();
        assert!(!c.mqtt.as_ref().unwrap().tls);
        assert_eq!(c.mqtt.unwrap().client_id, "t");
        assert_eq!(c.warnings[0].key, "mqtt.tls");
    }

    #[test]
    fn thing_names_follow_the_aws_rules() {
        assert!(check_thing_name("gateway-42").is_ok());
        assert!(check_thing_name("").is_err());
        assert!(check_thing_name(&"x".repeat(129)).is_err());
        assert!(check_thing_name("a\u{7}b").is_err());
        assert!(check_thing_name("a+b").is_err());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncdé\nf", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
    }

    #[test]
    fn tap_filters_are_checked_with_their_position() {
        let p = problems("thing_name = \"t\"\n[tap]\noutbound = [\"a/#/b\"]\n");
        assert_eq!(p[0].key, "tap.outbound[0]");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        let c = Config::parse(
            "thing_name = \"t\"\n[tap]\noutbound = [\"sensors/#\"]\n",
            "t",
        )
        .unwrap();
        let tap = c.tap.unwrap();
        assert_eq!(tap.client_id, "t-tap");
        assert_eq!(tap.port, 1883);
    }

    #[test]
    fn alarms_need_the_keys_of_their_type_and_only_those() {
        let p = problems("thing_name = \"t\"\n[[alarms]]\ntype = \"file\"\ntopic = \"x\"\n");
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["alarms[0].topic", "alarms[0]"]);
        let p = problems("thing_name = \"t\"\n[[alarms]]\ntype = \"mqtt\"\ntopic = \"a/+\"\n");
        assert_eq!(p[0].key, "alarms[0].topic");
        let p = problems(
            "thing_name = \"t\"\n[[alarms]]\ntype = \"mqtt\"\ntopic = \"a\"\nvia = \"tap\"\n",
        );
        assert!(p[0].message.contains("[tap]"), "{p:?}");
    }

    #[test]
    fn a_disabled_detect_table_is_none() {
        let c = Config::parse("thing_name = \"t\"\n[detect]\nenabled = false\n", "t").unwrap();
        assert!(c.detect.is_none());
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\nprofiles = [\"/p\"]\nmode = \"strict\"\n",
            "t",
        )
        .unwrap();
        let d = c.detect.unwrap();
        assert_eq!(d.mode, DetectMode::Strict);
        assert_eq!(d.retention, Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn detect_source_ip_must_be_an_address_and_disconnect_duration_is_off_by_default() {
        let p = problems("thing_name = \"t\"\n[detect]\nsource_ip = \"my.host\"\n");
        assert_eq!(p[0].key, "detect.source_ip");
        assert_eq!(p[0].position.map(|x| x.0), Some(3));
        assert!(p[0].message.contains("IPv4 or IPv6"), "{p:?}");
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\nsource_ip = \"2001:db8::1\"\n",
            "t",
        )
        .unwrap();
        let d = c.detect.unwrap();
        assert_eq!(d.source_ip, Some("2001:db8::1".parse().unwrap()));
        assert!(!d.disconnect_duration);
        let c = Config::parse(
            "thing_name = \"t\"\n[detect]\ndisconnect_duration = true\n",
            "t",
        )
        .unwrap();
        assert!(c.detect.unwrap().disconnect_duration);
    }
}
