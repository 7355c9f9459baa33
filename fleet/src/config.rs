//! The fleet service's configuration: one TOML file (`config/fleet.example.toml`, embedded as
//! [`EXAMPLE`], every key with its default), the agent's conventions: unknown keys and wrong
//! types are refused with the key path, line and column; when the shape is right, every
//! semantic problem is collected. Problems are the agent's [`Problem`] type, so they read alike.
//!
//! `[mqtt]` takes the agent's keys (endpoint, port, tls, ca_file, cert_file, key_file, alpn,
//! client_id, keep_alive_secs, clean_session, reconnect_min_secs, reconnect_max_secs) with the
//! agent's defaults and checks, plus `shared_group`; [`Mqtt::session_options`] turns them into
//! the agent's [`session::Options`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use defender_agent::config::{Error, Problem, Severity};
use defender_agent::mqtt::{session, tls};
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::store;

/// The example configuration (`defender-fleet print-example-config`).
pub const EXAMPLE: &str = include_str!("../../config/fleet.example.toml");

/// Default `[ingest] min_report_interval_secs`: AWS's one report per 5 minutes per thing.
pub const DEFAULT_MIN_REPORT_INTERVAL_SECS: u64 = 300;
/// Default `[ingest] max_payload_bytes`: AWS IoT Core's 128 KB payload limit.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 128 * 1024;
/// Default `[ingest] queue_capacity`: reports between MQTT and the committer.
pub const DEFAULT_QUEUE_CAPACITY: u64 = 1024;
/// Default `[ingest] batch_max_reports`: reports committed in one transaction at most.
pub const DEFAULT_BATCH_MAX_REPORTS: u64 = 256;
/// Default `[ingest] max_late_secs`: how old a report's time may be (a device's backlog after
/// an outage) and still be evaluated; older ones are answered accepted and not evaluated.
pub const DEFAULT_MAX_LATE_SECS: u64 = 2 * 86_400;

/// `[mqtt]`: the broker, as the agent's keys say it, plus `shared_group`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    /// Broker host.
    pub endpoint: String,
    /// Broker port.
    pub port: u16,
    /// Mutual TLS (else plain MQTT, for a broker on loopback).
    pub tls: bool,
    /// CA file.
    pub ca_file: PathBuf,
    /// Client certificate.
    pub cert_file: PathBuf,
    /// Client key.
    pub key_file: PathBuf,
    /// ALPN.
    pub alpn: String,
    /// Client id (each instance needs its own).
    pub client_id: String,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Clean session.
    pub clean_session: bool,
    /// Reconnect backoff floor.
    pub reconnect_min: Duration,
    /// Reconnect backoff cap.
    pub reconnect_max: Duration,
    /// Non-empty: subscribe through `$share/<group>/`.
    pub shared_group: String,
}

/// Packets up to a report's limit plus the MQTT overhead (topic, header).
pub const MAX_PACKET_BYTES: usize = 132 * 1024;

impl Mqtt {
    /// The agent's session options for this broker.
    pub fn session_options(&self) -> session::Options {
        session::Options {
            client_id: self.client_id.clone(),
            host: self.endpoint.clone(),
            port: self.port,
            proxy: None,
            tls: self.tls.then(|| session::Tls {
                ca_file: self.ca_file.clone(),
                cert_file: self.cert_file.clone(),
                key_file: self.key_file.clone(),
                alpn: tls::alpn_protocols(self.port, &self.alpn),
                key_label: "Private key",
            }),
            keep_alive: self.keep_alive,
            clean_session: self.clean_session,
            packet_limits: Some(session::PacketLimits {
                incoming: MAX_PACKET_BYTES,
                outgoing: MAX_PACKET_BYTES,
            }),
            inflight: Some(100),
            request_channel_capacity: 256,
            reconnect: session::ReconnectPolicy {
                min: self.reconnect_min,
                max: self.reconnect_max,
                stable_after: Duration::from_secs(30),
            },
            describe: session::describe,
        }
    }

    /// The subscription filters: the json and cbor report topics of every thing, through
    /// `$share/<group>/` when a group is set.
    pub fn filters(&self) -> [String; 2] {
        let share = if self.shared_group.is_empty() {
            String::new()
        } else {
            format!("$share/{}/", self.shared_group)
        };
        ["json", "cbor"].map(|f| format!("{share}$aws/things/+/defender/metrics/{f}"))
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ingest {
    /// Reports of one thing closer than this (by report time) are rejected as throttled.
    pub min_report_interval: Duration,
    /// Larger payloads are rejected.
    pub max_payload_bytes: usize,
    /// Reports waiting for the committer at most (then MQTT is not read: back-pressure).
    pub queue_capacity: usize,
    /// Reports per commit at most.
    pub batch_max_reports: usize,
    /// Reports older than this (report time vs arrival) are not evaluated.
    pub max_late: Duration,
}

/// `[detect]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Detect {
    /// Profile files or directories.
    pub profiles: Vec<PathBuf>,
    /// Dimension files or directories.
    pub dimensions: Vec<PathBuf>,
    /// Custom metric files or directories.
    pub custom_metrics: Vec<PathBuf>,
    /// Smallest population a statistical threshold is computed over.
    pub min_population: usize,
    /// How often the thresholds job runs (epoch multiples of it).
    pub thresholds_interval: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (the SQLite file lives here).
    pub state_dir: PathBuf,
    /// `[mqtt]`.
    pub mqtt: Mqtt,
    /// `[ingest]`.
    pub ingest: Ingest,
    /// `[store]`.
    pub store: store::Settings,
    /// `[detect]`.
    pub detect: Detect,
    /// Warnings (the file is usable).
    pub warnings: Vec<Problem>,
}

mod file {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        pub state_dir: Option<Spanned<String>>,
        pub mqtt: Option<Spanned<Mqtt>>,
        #[serde(default)]
        pub ingest: Ingest,
        #[serde(default)]
        pub store: Store,
        #[serde(default)]
        pub detect: Detect,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Mqtt {
        pub endpoint: Option<Spanned<String>>,
        pub port: Option<Spanned<u64>>,
        pub tls: Option<Spanned<bool>>,
        pub ca_file: Option<Spanned<String>>,
        pub cert_file: Option<Spanned<String>>,
        pub key_file: Option<Spanned<String>>,
        pub alpn: Option<Spanned<String>>,
        pub client_id: Option<Spanned<String>>,
        pub keep_alive_secs: Option<Spanned<u64>>,
        pub clean_session: Option<Spanned<bool>>,
        pub reconnect_min_secs: Option<Spanned<u64>>,
        pub reconnect_max_secs: Option<Spanned<u64>>,
        pub shared_group: Option<Spanned<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Ingest {
        pub min_report_interval_secs: Option<Spanned<u64>>,
        pub max_payload_bytes: Option<Spanned<u64>>,
        pub queue_capacity: Option<Spanned<u64>>,
        pub batch_max_reports: Option<Spanned<u64>>,
        pub max_late_secs: Option<Spanned<u64>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Store {
        pub engine: Option<Spanned<String>>,
        pub url: Option<Spanned<String>>,
        pub retention_days: Option<Spanned<u64>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Detect {
        pub profiles: Option<Vec<Spanned<String>>>,
        pub dimensions: Option<Vec<Spanned<String>>>,
        pub custom_metrics: Option<Vec<Spanned<String>>>,
        pub min_population: Option<Spanned<u64>>,
        pub thresholds_interval_secs: Option<Spanned<u64>>,
    }
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
        let invalid = |problems| Error::Invalid {
            origin: origin.to_owned(),
            problems,
        };
        let f = parse_file(src).map_err(invalid)?;
        let mut v = Validator {
            src,
            problems: Vec::new(),
        };
        let config = v.config(&f);
        if v.problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(invalid(v.problems));
        }
        let mut config = config;
        config.warnings = v.problems;
        Ok(config)
    }
}

fn parse_file(src: &str) -> Result<file::File, Vec<Problem>> {
    let (root, errors) = toml::de::DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        return Err(errors.iter().map(|e| toml_problem(src, "", e)).collect());
    }
    let de = toml::de::Deserializer::from(root);
    serde_path_to_error::deserialize::<_, file::File>(de).map_err(|e| {
        // Spanned<T> shows up as private path segments: keep only the user's keys.
        let path = e.path().to_string();
        let key = path
            .split('.')
            .filter(|seg| !seg.starts_with("$__serde_spanned") && *seg != "?")
            .collect::<Vec<_>>()
            .join(".");
        vec![toml_problem(src, &key, e.inner())]
    })
}

fn toml_problem(src: &str, key: &str, e: &toml::de::Error) -> Problem {
    Problem {
        severity: Severity::Error,
        key: key.to_owned(),
        position: e.span().map(|s| line_col(src, s.start)),
        message: e.message().trim().to_owned(),
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.get(..offset).unwrap_or(src);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

struct Validator<'a> {
    src: &'a str,
    problems: Vec<Problem>,
}

impl Validator<'_> {
    fn push<T>(&mut self, severity: Severity, key: &str, at: &Spanned<T>, message: String) {
        let position = Some(line_col(self.src, at.span().start));
        self.problems.push(Problem {
            severity,
            key: key.to_owned(),
            position,
            message,
        });
    }

    fn error<T>(&mut self, key: &str, at: &Spanned<T>, message: impl Into<String>) {
        self.push(Severity::Error, key, at, message.into());
    }

    fn int(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        match v {
            None => default,
            Some(s) if (min..=max).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                self.error(
                    key,
                    s,
                    format!("must be between {min} and {max}, got {}", s.get_ref()),
                );
                default
            }
        }
    }

    fn secs(
        &mut self,
        key: &str,
        v: &Option<Spanned<u64>>,
        d: u64,
        min: u64,
        max: u64,
    ) -> Duration {
        Duration::from_secs(self.int(key, v, d, min, max))
    }

    fn paths(
        &mut self,
        key: &str,
        v: &Option<Vec<Spanned<String>>>,
        default: &str,
    ) -> Vec<PathBuf> {
        match v {
            None => vec![PathBuf::from(default)],
            Some(list) => {
                for p in list {
                    if p.get_ref().is_empty() {
                        self.error(key, p, "a path must not be empty");
                    }
                }
                list.iter().map(|p| PathBuf::from(p.get_ref())).collect()
            }
        }
    }

    fn config(&mut self, f: &file::File) -> Config {
        let state_dir = match &f.state_dir {
            Some(s) if s.get_ref().is_empty() => {
                self.error("state_dir", s, "must not be empty");
                PathBuf::new()
            }
            Some(s) => PathBuf::from(s.get_ref()),
            None => PathBuf::from("/var/lib/defender-fleet"),
        };
        let mqtt = self.mqtt(f.mqtt.as_ref());
        let i = &f.ingest;
        let ingest = Ingest {
            min_report_interval: self.secs(
                "ingest.min_report_interval_secs",
                &i.min_report_interval_secs,
                DEFAULT_MIN_REPORT_INTERVAL_SECS,
                0,
                86_400,
            ),
            max_payload_bytes: self.int(
                "ingest.max_payload_bytes",
                &i.max_payload_bytes,
                DEFAULT_MAX_PAYLOAD_BYTES,
                1,
                DEFAULT_MAX_PAYLOAD_BYTES,
            ) as usize,
            queue_capacity: self.int(
                "ingest.queue_capacity",
                &i.queue_capacity,
                DEFAULT_QUEUE_CAPACITY,
                1,
                1_000_000,
            ) as usize,
            batch_max_reports: self.int(
                "ingest.batch_max_reports",
                &i.batch_max_reports,
                DEFAULT_BATCH_MAX_REPORTS,
                1,
                10_000,
            ) as usize,
            max_late: self.secs(
                "ingest.max_late_secs",
                &i.max_late_secs,
                DEFAULT_MAX_LATE_SECS,
                0,
                365 * 86_400,
            ),
        };
        let s = &f.store;
        let url = s
            .url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default();
        let engine = match s.engine.as_ref().map(|e| (e, e.get_ref().as_str())) {
            None | Some((_, "sqlite")) => {
                if let Some(u) = s.url.as_ref().filter(|u| !u.get_ref().is_empty()) {
                    self.error("store.url", u, "is for engine = \"postgres\" only");
                }
                store::Engine::sqlite_in(&state_dir)
            }
            Some((_, "postgres")) => {
                if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
                    match &s.url {
                        Some(u) => self.error(
                            "store.url",
                            u,
                            "must be a postgresql://user@host:port/db URL with engine = \"postgres\"",
                        ),
                        None => self.problems.push(Problem {
                            severity: Severity::Error,
                            key: "store.url".to_owned(),
                            position: None,
                            message: "is required with engine = \"postgres\"".to_owned(),
                        }),
                    }
                }
                store::Engine::Postgres { url }
            }
            Some((e, other)) => {
                self.error(
                    "store.engine",
                    e,
                    format!("must be \"sqlite\" or \"postgres\", got {other:?}"),
                );
                store::Engine::sqlite_in(&state_dir)
            }
        };
        let mut settings = store::Settings::new(engine);
        settings.retention = Duration::from_secs(
            86_400 * self.int("store.retention_days", &s.retention_days, 14, 1, 3650),
        );
        let d = &f.detect;
        let detect = Detect {
            profiles: self.paths(
                "detect.profiles",
                &d.profiles,
                "/etc/defender-fleet/profiles",
            ),
            dimensions: self.paths(
                "detect.dimensions",
                &d.dimensions,
                "/etc/defender-fleet/dimensions",
            ),
            custom_metrics: self.paths(
                "detect.custom_metrics",
                &d.custom_metrics,
                "/etc/defender-fleet/custom-metrics",
            ),
            min_population: self.int(
                "detect.min_population",
                &d.min_population,
                defender_agent::detect::fleet::DEFAULT_MIN_POPULATION as u64,
                1,
                10_000_000,
            ) as usize,
            thresholds_interval: self.secs(
                "detect.thresholds_interval_secs",
                &d.thresholds_interval_secs,
                300,
                1,
                86_400,
            ),
        };
        Config {
            state_dir,
            mqtt,
            ingest,
            store: settings,
            detect,
            warnings: Vec::new(),
        }
    }

    fn mqtt(&mut self, m: Option<&Spanned<file::Mqtt>>) -> Mqtt {
        let Some(m) = m else {
            self.problems.push(Problem {
                severity: Severity::Error,
                key: "mqtt".to_owned(),
                position: None,
                message: "[mqtt] with `endpoint` is required (the fleet's broker)".to_owned(),
            });
            return self.mqtt_defaults();
        };
        let mq = m.get_ref();
        let endpoint = match &mq.endpoint {
            Some(e) if !e.get_ref().is_empty() => {
                let bad = e
                    .get_ref()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '[' | ']'));
                if bad || e.get_ref().contains("://") {
                    self.error(
                        "mqtt.endpoint",
                        e,
                        "must be a host name or IP address (no scheme, port or path)",
                    );
                }
                e.get_ref().clone()
            }
            Some(e) => {
                self.error("mqtt.endpoint", e, "must not be empty");
                String::new()
            }
            None => {
                self.error("mqtt", m, "`endpoint` is required in [mqtt]");
                String::new()
            }
        };
        let port = self.int("mqtt.port", &mq.port, 8883, 1, 65535) as u16;
        let tls = mq.tls.as_ref().is_none_or(|t| *t.get_ref());
        if let (false, Some(t)) = (tls, &mq.tls) {
            self.push(
                Severity::Warning,
                "mqtt.tls",
                t,
                "false: reports travel in plaintext; only for a local broker".to_owned(),
            );
        }
        let file_key = |v: &mut Self, key: &str, f: &Option<Spanned<String>>| match f {
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
            _ => "defender-fleet".to_owned(),
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
        let shared_group = match &mq.shared_group {
            Some(g) => {
                let name = g.get_ref();
                if name
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '/' | '+' | '#'))
                {
                    self.error(
                        "mqtt.shared_group",
                        g,
                        "must be one topic level: no '/', '+', '#' or control characters",
                    );
                }
                name.clone()
            }
            None => String::new(),
        };
        Mqtt {
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
            shared_group,
        }
    }

    fn mqtt_defaults(&mut self) -> Mqtt {
        Mqtt {
            endpoint: String::new(),
            port: 8883,
            tls: true,
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            alpn: String::new(),
            client_id: "defender-fleet".to_owned(),
            keep_alive: Duration::from_secs(60),
            clean_session: true,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(300),
            shared_group: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<Problem> {
        match Config::parse(src, "t.toml") {
            Err(Error::Invalid { problems, .. }) => problems,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted: {src}"),
        }
    }

    #[test]
    fn the_example_parses_to_the_defaults() {
        let c = Config::parse(EXAMPLE, "<example>").unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/defender-fleet"));
        assert_eq!(c.ingest.min_report_interval, Duration::from_secs(300));
        assert_eq!(c.detect.min_population, 10);
        assert_eq!(c.detect.thresholds_interval, Duration::from_secs(300));
        assert_eq!(c.store.engine.name(), "sqlite");
        assert_eq!(c.store.retention, Duration::from_secs(14 * 86_400));
        assert_eq!(c.mqtt.shared_group, "");
        assert_eq!(
            c.detect.profiles,
            vec![PathBuf::from("/etc/defender-fleet/profiles")]
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_key_line_and_column() {
        let p = problems(
            "[mqtt]\nendpoint = \"localhost\"\ntls = false\n\n[ingest]\nmin_interval = 5\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "ingest.min_interval");
        assert_eq!(p[0].position, Some((6, 1)));
        assert!(p[0].message.contains("min_interval"), "{}", p[0].message);
    }

    #[test]
    fn every_semantic_problem_is_reported() {
        let p = problems(
            "[mqtt]\nendpoint = \"\"\nport = 0\n[store]\nengine = \"mysql\"\n[detect]\nmin_population = 0\n",
        );
        let keys: Vec<&str> = p
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.key.as_str())
            .collect();
        for k in [
            "mqtt.endpoint",
            "mqtt.port",
            "store.engine",
            "detect.min_population",
        ] {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
        assert!(keys.contains(&"mqtt"), "tls files required: {keys:?}");
    }

    #[test]
    fn postgres_needs_a_url_and_shared_group_subscribes_through_share() {
        let p = problems("[mqtt]\nendpoint = \"h\"\ntls = false\n[store]\nengine = \"postgres\"\n");
        assert_eq!(
            p.iter().filter(|p| p.key == "store.url").count(),
            1,
            "{p:?}"
        );
        let c = Config::parse(
            "[mqtt]\nendpoint = \"h\"\ntls = false\nshared_group = \"g1\"\n[store]\nengine = \"postgres\"\nurl = \"postgresql://u@h:5432/db\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.mqtt.filters(),
            [
                "$share/g1/$aws/things/+/defender/metrics/json".to_owned(),
                "$share/g1/$aws/things/+/defender/metrics/cbor".to_owned()
            ]
        );
        let o = c.mqtt.session_options();
        assert!(o.tls.is_none());
        assert_eq!((o.host.as_str(), o.port), ("h", 8883));
    }
}
