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

use defender_agent::alarm::{Output, Via};
use defender_agent::config::Validator as AgentValidator;
use defender_agent::config::{Error, Problem, Severity};
use defender_agent::mqtt::topics::TopicRoot;
use defender_agent::mqtt::{self, session};
use defender_agent::report::Format;
use serde::Deserialize;
use serde_spanned::Spanned;

use crate::{store, webhook};

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

/// `[mqtt]`: the agent's `[mqtt]` section (the same keys, defaults, checks and messages: the
/// agent's own validator reads it), plus `shared_group`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    /// The agent's link settings for this broker; the client id defaults to `defender-fleet`
    /// (each instance needs its own), `topic_root` says which topics are report topics.
    pub link: mqtt::Settings,
    /// Non-empty: subscribe through `$share/<group>/`.
    pub shared_group: String,
}

/// Packets up to a report's limit plus the MQTT overhead (topic, header).
pub const MAX_PACKET_BYTES: usize = 132 * 1024;

/// `[mqtt] client_id`'s default.
pub const DEFAULT_CLIENT_ID: &str = "defender-fleet";

impl Mqtt {
    /// The agent's session options for this broker, with room for a service's traffic: more
    /// messages in flight (answers) and larger packets than a device's link.
    pub fn session_options(&self) -> session::Options {
        let mut o = mqtt::session_options(&self.link);
        o.packet_limits = Some(session::PacketLimits {
            incoming: MAX_PACKET_BYTES,
            outgoing: MAX_PACKET_BYTES,
        });
        o.inflight = Some(100);
        o.request_channel_capacity = 256;
        o
    }

    /// The subscription filters: the json and cbor report topics of every thing, through
    /// `$share/<group>/` when a group is set.
    pub fn filters(&self) -> [String; 2] {
        let share = if self.shared_group.is_empty() {
            String::new()
        } else {
            format!("$share/{}/", self.shared_group)
        };
        [Format::Json, Format::Cbor]
            .map(|f| format!("{share}{}", self.link.topic_root.publish_filter(f)))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.link.client_id
    }

    /// `topic_root`.
    pub fn topic_root(&self) -> &TopicRoot {
        &self.link.topic_root
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
    /// `[[alarms]]` through the agent's outputs (log, file, mqtt, command), in file order.
    pub alarms: Vec<Output>,
    /// `[[alarms]] type = "webhook"`, in file order.
    pub webhooks: Vec<webhook::Settings>,
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
        #[serde(default)]
        pub alarms: Vec<Spanned<Alarm>>,
    }

    /// The agent's `[[alarms]]` keys, plus the webhook's.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Alarm {
        #[serde(rename = "type")]
        pub kind: Spanned<String>,
        pub path: Option<Spanned<String>>,
        pub topic: Option<Spanned<String>>,
        pub qos: Option<Spanned<u64>>,
        pub via: Option<Spanned<String>>,
        pub argv: Option<Spanned<Vec<String>>>,
        pub timeout_secs: Option<Spanned<u64>>,
        pub url: Option<Spanned<String>>,
        pub attempts: Option<Spanned<u64>>,
        pub ca_file: Option<Spanned<String>>,
    }

    /// `[mqtt]` is the agent's mirror (the agent refuses `shared_group`; this service reads it).
    pub use defender_agent::config::file::Mqtt;

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
            inner: AgentValidator::new(src),
            topic_root: TopicRoot::default(),
        };
        let config = v.config(&f);
        if v.inner.has_errors() {
            return Err(invalid(v.inner.into_problems()));
        }
        let mut config = config;
        config.warnings = v.inner.into_problems();
        Ok(config)
    }
}

impl Config {
    /// The deployment this configuration describes, checked as the agent's `check-config`
    /// checks its own (the agent's checks): with `tls`, the three TLS files (readable PEM, usable
    /// CA, the key matches the certificate, valid at `now_secs`: expiring soon is a warning);
    /// the Detect files load as `serve` loads them. `src` is the file's text (for positions).
    pub fn deployment_problems(&self, src: &str, now_secs: i64) -> Vec<Problem> {
        let mut v = AgentValidator::new(src);
        let file = parse_file(src).ok();
        let m = file
            .as_ref()
            .and_then(|f| f.mqtt.as_ref())
            .map(|m| m.get_ref());
        let link = &self.mqtt.link;
        if link.tls {
            for p in
                mqtt::tls::check_files(&link.ca_file, &link.cert_file, &link.key_file, now_secs)
            {
                let key = format!("mqtt.{}", p.file.key());
                let at = m.and_then(|m| match p.file {
                    mqtt::tls::TlsFile::Ca => m.ca_file.as_ref(),
                    mqtt::tls::TlsFile::Cert => m.cert_file.as_ref(),
                    mqtt::tls::TlsFile::Key => m.key_file.as_ref(),
                });
                let severity = if p.warning {
                    Severity::Warning
                } else {
                    Severity::Error
                };
                match at {
                    Some(at) => v.push(severity, &key, at, p.message),
                    None => v.missing(&key, &p.message),
                }
            }
        }
        if let Err(e) = defender_agent::store::definitions::load_all(
            &self.detect.profiles,
            &self.detect.dimensions,
            &self.detect.custom_metrics,
            defender_agent::detect::Mode::Load,
        ) {
            v.missing("detect", &e.to_string());
        }
        v.into_problems()
    }
}

fn parse_file(src: &str) -> Result<file::File, Vec<Problem>> {
    defender_agent::config::parse_document(src)
}

enum AlarmOut {
    Agent(Output),
    Webhook(webhook::Settings),
}

struct Validator<'a> {
    /// The agent's validator: positions, problems, and its `[mqtt]` section.
    inner: AgentValidator<'a>,
    /// `[mqtt] topic_root`, once read (the alarms' topics are checked against it).
    topic_root: TopicRoot,
}

impl Validator<'_> {
    fn push<T>(&mut self, severity: Severity, key: &str, at: &Spanned<T>, message: String) {
        self.inner.push(severity, key, at, message);
    }

    fn error<T>(&mut self, key: &str, at: &Spanned<T>, message: impl Into<String>) {
        self.inner.error(key, at, message);
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
                        None => self
                            .inner
                            .missing("store.url", "is required with engine = \"postgres\""),
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
        let mut alarms = Vec::new();
        let mut webhooks = Vec::new();
        for (i, a) in f.alarms.iter().enumerate() {
            match self.alarm(i, a) {
                Some(AlarmOut::Agent(o)) => alarms.push(o),
                Some(AlarmOut::Webhook(w)) => webhooks.push(w),
                None => {}
            }
        }
        Config {
            state_dir,
            mqtt,
            ingest,
            store: settings,
            detect,
            alarms,
            webhooks,
            warnings: Vec::new(),
        }
    }

    /// One `[[alarms]]` table: the agent's types, keys and checks (its own validator: `via` can
    /// only be "link", the fleet's broker, and an mqtt topic must not be a report topic), and
    /// `type = "webhook"`.
    fn alarm(&mut self, i: usize, a: &Spanned<file::Alarm>) -> Option<AlarmOut> {
        let key = format!("alarms[{i}]");
        let x = a.get_ref();
        let kind = x.kind.get_ref().as_str();
        let webhook_keys = [
            ("url", x.url.as_ref().map(|v| v.span())),
            ("attempts", x.attempts.as_ref().map(|v| v.span())),
            ("ca_file", x.ca_file.as_ref().map(|v| v.span())),
        ];
        let agent_keys = [
            ("path", x.path.as_ref().map(|v| v.span())),
            ("topic", x.topic.as_ref().map(|v| v.span())),
            ("qos", x.qos.as_ref().map(|v| v.span())),
            ("via", x.via.as_ref().map(|v| v.span())),
            ("argv", x.argv.as_ref().map(|v| v.span())),
        ];
        let foreign: &[_] = if kind == "webhook" {
            &agent_keys
        } else {
            &webhook_keys
        };
        for (name, span) in foreign {
            if let Some(span) = span.clone() {
                self.error(
                    &format!("{key}.{name}"),
                    &Spanned::new(span, ()),
                    format!("does not apply to type = \"{kind}\""),
                );
            }
        }
        if kind != "webhook" {
            if !matches!(kind, "log" | "file" | "mqtt" | "command") {
                self.error(
                    &format!("{key}.type"),
                    &x.kind,
                    format!(
                        "must be one of \"log\", \"file\", \"mqtt\", \"command\", \"webhook\", got \"{kind}\""
                    ),
                );
                return None;
            }
            let agent = Spanned::new(
                a.span(),
                defender_agent::config::file::Alarm {
                    kind: x.kind.clone(),
                    topic: x.topic.clone(),
                    qos: x.qos.clone(),
                    via: x.via.clone(),
                    path: x.path.clone(),
                    argv: x.argv.clone(),
                    timeout_secs: x.timeout_secs.clone(),
                },
            );
            let out = self.inner.alarm(i, &agent)?;
            if let Output::Mqtt { topic, via, .. } = &out {
                if *via != Via::Link {
                    if let Some(v) = &x.via {
                        self.error(
                            &format!("{key}.via"),
                            v,
                            "must be \"link\" (the fleet's [mqtt] broker; the fleet has no [tap])",
                        );
                    }
                    return None;
                }
                if self.topic_root.matches_publish_filter(topic) {
                    if let Some(t) = &x.topic {
                        self.error(
                            &format!("{key}.topic"),
                            t,
                            "is a report topic: the service would ingest its own alarms",
                        );
                    }
                    return None;
                }
            }
            return Some(AlarmOut::Agent(out));
        }
        let url = match &x.url {
            Some(u) => match webhook::check_url(u.get_ref()) {
                Ok(()) => u.get_ref().clone(),
                Err(e) => {
                    self.error(&format!("{key}.url"), u, e);
                    return None;
                }
            },
            None => {
                self.error(&key, a, "type = \"webhook\" needs `url`");
                return None;
            }
        };
        let ca_file = match &x.ca_file {
            Some(c) if c.get_ref().is_empty() => {
                self.error(&format!("{key}.ca_file"), c, "must not be empty");
                None
            }
            Some(c) if !url.starts_with("https://") => {
                self.error(&format!("{key}.ca_file"), c, "needs an https:// url");
                None
            }
            Some(c) => Some(PathBuf::from(c.get_ref())),
            None => None,
        };
        Some(AlarmOut::Webhook(webhook::Settings {
            url,
            timeout: self.secs(&format!("{key}.timeout_secs"), &x.timeout_secs, 10, 1, 300),
            attempts: self.int(&format!("{key}.attempts"), &x.attempts, 5, 1, 20) as u32,
            ca_file,
        }))
    }

    /// `[mqtt]`: the agent's section read by the agent's validator (thing name = the default
    /// client id, so the defaults are the agent's with `client_id = "defender-fleet"`), then
    /// this service's `shared_group`; `answer_timeout_secs` is the agent's alone.
    fn mqtt(&mut self, m: Option<&Spanned<file::Mqtt>>) -> Mqtt {
        let empty = Spanned::new(0..0, file::Mqtt::default());
        let Some(m) = m else {
            self.inner.missing(
                "mqtt",
                "[mqtt] with `endpoint` is required (the fleet's broker)",
            );
            // Defaults only, so the rest can be checked; this file is refused anyway.
            return Mqtt {
                link: AgentValidator::new("").mqtt(&empty, DEFAULT_CLIENT_ID, Format::Json),
                shared_group: String::new(),
            };
        };
        let mq = m.get_ref();
        if let Some(a) = &mq.answer_timeout_secs {
            self.error(
                "mqtt.answer_timeout_secs",
                a,
                "is an agent key: defender-fleet answers reports and waits for no answer",
            );
        }
        let link = self.inner.mqtt(m, DEFAULT_CLIENT_ID, Format::Json);
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
        if let Some(g) = mq.shared_group.as_ref().filter(|g| !g.get_ref().is_empty()) {
            if link.topic_root.to_string().starts_with('$') {
                self.push(
                    Severity::Warning,
                    "mqtt.shared_group",
                    g,
                    "with a topic_root that starts with '$': some brokers (Debian 12's mosquitto \
                     2.0.11) deliver no '$' topics to a $share subscription; set a topic_root \
                     of your own (agents and service alike) if no report arrives"
                        .to_owned(),
                );
            }
        }
        self.topic_root = link.topic_root.clone();
        Mqtt { link, shared_group }
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
    fn alarms_take_the_agents_keys_and_webhooks() {
        let c = Config::parse(
            "[mqtt]\nendpoint = \"h\"\ntls = false\n\
             [[alarms]]\ntype = \"log\"\n\
             [[alarms]]\ntype = \"file\"\npath = \"/tmp/a.jsonl\"\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"fleet/alarms\"\nqos = 0\n\
             [[alarms]]\ntype = \"command\"\nargv = [\"/bin/true\"]\n\
             [[alarms]]\ntype = \"webhook\"\nurl = \"https://h.example/x\"\nattempts = 3\n\
             ca_file = \"/etc/ca.pem\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.alarms,
            vec![
                Output::Log,
                Output::File {
                    path: "/tmp/a.jsonl".into()
                },
                Output::Mqtt {
                    topic: "fleet/alarms".into(),
                    qos: 0,
                    via: Via::Link
                },
                Output::Command {
                    argv: vec!["/bin/true".into()],
                    timeout: Duration::from_secs(10)
                },
            ]
        );
        assert_eq!(
            c.webhooks,
            vec![webhook::Settings {
                url: "https://h.example/x".into(),
                timeout: Duration::from_secs(10),
                attempts: 3,
                ca_file: Some("/etc/ca.pem".into()),
            }]
        );
        let example = Config::parse(EXAMPLE, "<example>").unwrap();
        assert_eq!(example.alarms, vec![Output::Log]);
        assert!(example.webhooks.is_empty());
    }

    #[test]
    fn alarm_errors_name_key_line_and_column() {
        let p = problems(
            "[mqtt]\nendpoint = \"h\"\ntls = false\n\
             [[alarms]]\ntype = \"webhook\"\nurl = \"ftp://x/\"\n\
             [[alarms]]\ntype = \"mqtt\"\ntopic = \"a/b\"\nvia = \"tap\"\n\
             [[alarms]]\ntype = \"file\"\nurl = \"http://h/\"\npath = \"/x\"\n\
             [[alarms]]\ntype = \"webhook\"\nurl = \"http://h/\"\nattempts = 0\nca_file = \"/c\"\n\
             [[alarms]]\ntype = \"pager\"\n",
        );
        let at = |key: &str| {
            p.iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key} in {p:?}"))
        };
        assert_eq!(at("alarms[0].url").position, Some((6, 7)));
        assert!(at("alarms[0].url").message.contains("http://"));
        assert_eq!(at("alarms[1].via").position, Some((10, 7)));
        assert_eq!(
            at("alarms[2].url").message,
            "does not apply to type = \"file\""
        );
        assert_eq!(at("alarms[2].url").position, Some((13, 7)));
        assert_eq!(at("alarms[3].attempts").position, Some((18, 12)));
        assert_eq!(at("alarms[3].ca_file").message, "needs an https:// url");
        assert_eq!(at("alarms[4].type").position, Some((21, 8)));
        let p = problems(
            "[mqtt]\nendpoint = \"h\"\ntls = false\n[[alarms]]\ntype = \"mqtt\"\n\
             topic = \"$aws/things/t1/defender/metrics/json\"\n",
        );
        let t = p.iter().find(|p| p.key == "alarms[0].topic").unwrap();
        assert!(t.message.contains("report topic"), "{}", t.message);
        assert_eq!(t.position, Some((6, 9)));
        let unknown = problems(
            "[mqtt]\nendpoint = \"h\"\ntls = false\n[[alarms]]\ntype = \"log\"\nfoo = 1\n",
        );
        assert_eq!(unknown.len(), 1, "{unknown:?}");
        assert_eq!(unknown[0].key, "alarms[0].foo");
        assert_eq!(unknown[0].position, Some((6, 1)));
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
        assert!(
            c.warnings.iter().any(|w| w.key == "mqtt.shared_group"),
            "{:?}",
            c.warnings
        );
        let c = Config::parse(
            "[mqtt]\nendpoint = \"h\"\ntls = false\ntopic_root = \"fleet/{thing}/dd\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.mqtt.filters(), ["fleet/+/dd/json", "fleet/+/dd/cbor"]);
        let p = problems("[mqtt]\nendpoint = \"h\"\ntls = false\ntopic_root = \"fleet/dd\"\n");
        let e = p
            .iter()
            .find(|p| p.key == "mqtt.topic_root")
            .expect("error");
        assert_eq!(e.position.map(|x| x.0), Some(4));
        // The agent's [mqtt] checks and messages, and its one key of no use here.
        let p = problems(
            "[mqtt]\nendpoint = \"h:8883\"\ntls = false\nanswer_timeout_secs = 5\nbogus = 1\n",
        );
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["mqtt.bogus"], "shape errors first: {p:?}");
        let p = problems("[mqtt]\nendpoint = \"h:8883\"\ntls = false\nanswer_timeout_secs = 5\n");
        let e = p.iter().find(|p| p.key == "mqtt.endpoint").expect("{p:?}");
        assert!(
            e.message.contains("set mqtt.port = 8883"),
            "the agent's words: {e}"
        );
        let e = p
            .iter()
            .find(|p| p.key == "mqtt.answer_timeout_secs")
            .expect("{p:?}");
        assert_eq!(e.position.map(|x| x.0), Some(4));
        let o = c.mqtt.session_options();
        assert!(o.tls.is_none());
        assert_eq!((o.host.as_str(), o.port), ("h", 8883));
    }
}
