//! The agent's Detect part: loads profiles at start, evaluates each built report and the
//! cloud-side traffic windows (epoch multiples of 300 s), stores events and engine state in the
//! violation store, and turns unsuppressed events into alarms.
//!
//! Restarts (and SIGHUP reloads, which restart the agent loop) restore the stored engine state,
//! so an alarm active before is still active after with the same violationId; the engine's
//! `with_state` keeps unchanged behaviors' violations and invalidates removed ones.
//! spec: detect.md §3.3 (ticks), §6.3 (invalidation), §6.4.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, error, info, warn};

use crate::alarm::{Alarms, MqttAlarm};
use crate::config::Config;
use crate::detect::engine::{
    DetectEngine, DeviceReport, Established, Millis, NetworkDeltas, PortList,
};
use crate::detect::Emitted;
use crate::report::{self, MetricsReport};
use crate::store::definitions::{self, Validated};
use crate::store::violations::ViolationStore;
use crate::traffic::{self, TrafficCounters};

/// Cloud-side tick period (spec: detect.md §3.3).
const TICK_SECS: u64 = 300;

/// While the engine state changes without events (datapoint streaks, baselines) it is saved at
/// most this often: the file holds up to `max_events` events, and flash wears. Events are saved
/// at once.
const SAVE_EVERY: Duration = Duration::from_secs(600);

/// Why Detect could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile, dimension or custom metric file is unreadable or invalid.
    #[error("detect: {0}")]
    Files(#[from] definitions::Error),
}

/// Detect inside the agent.
pub struct DetectPart {
    engine: DetectEngine,
    store: ViolationStore,
    alarms: Alarms,
    scopes: Vec<traffic::Scope>,
    last_tick: Option<u64>,
    last_save: Millis,
    dirty: bool,
}

fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as Millis)
}

impl DetectPart {
    /// Whether `config`'s Detect files load (a SIGHUP reload with broken profiles is refused and
    /// the running configuration kept).
    pub fn check(config: &Config) -> Result<(), Error> {
        if let Some(d) = &config.detect {
            prepare_push_dirs(d);
            definitions::load_all(&d.profiles, &d.dimensions, &d.custom_metrics, d.mode)?;
        }
        Ok(())
    }

    /// Loads `[detect]` (None when absent), restores the stored state, and logs every load-time
    /// diagnostic once. Call inside the tokio runtime (alarm worker).
    pub fn start(config: &Config) -> Result<Option<DetectPart>, Error> {
        DetectPart::start_with(config, None)
    }

    /// As [`DetectPart::start`] after an applied push: the managed directories are taken from
    /// what the push validated and wrote (`pushed`, see `manage::ops::Managed::apply`) instead of
    /// being read back; the other configured paths are read.
    pub fn start_with(
        config: &Config,
        pushed: Option<&Validated>,
    ) -> Result<Option<DetectPart>, Error> {
        let Some(d) = &config.detect else {
            return Ok(None);
        };
        prepare_push_dirs(d);
        let loaded = definitions::load_all_with(
            &d.profiles,
            &d.dimensions,
            &d.custom_metrics,
            d.mode,
            pushed,
        )?;
        let ctx = loaded.context();
        let settings = d.engine_settings(&config.thing_name);
        let profiles: Vec<_> = loaded.profiles.iter().map(|p| p.profile.clone()).collect();
        let store = match ViolationStore::open(&config.state_dir, d.retention, d.max_events) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "Cannot read the violation store; starting with an empty one (the old file is overwritten at the next save).");
                ViolationStore::empty(&config.state_dir, d.retention, d.max_events)
            }
        };
        let now = now_ms();
        let (engine, restored) =
            DetectEngine::with_state(settings, &profiles, &ctx, store.engine_state(), now);
        for diag in loaded
            .profiles
            .iter()
            .flat_map(|p| &p.diagnostics)
            .chain(engine.diagnostics())
        {
            warn!("Detect: {diag}");
        }
        let client_id = config
            .mqtt
            .as_ref()
            .map_or(config.thing_name.clone(), |m| m.client_id.clone());
        let (mut scopes, mut unusable) = engine.traffic_scopes(&client_id);
        // Every loaded dimension is counted (status --json, [[traffic_exports]]), not only the
        // ones a behavior uses; NOT_IN scopes too when an export asks for one.
        let wanted = loaded.dimensions.iter().map(|d| (d, false)).chain(
            config
                .traffic_exports
                .iter()
                .filter(|e| e.not_in)
                .filter_map(|e| {
                    let d = loaded
                        .dimensions
                        .iter()
                        .find(|d| Some(&d.name) == e.dimension.as_ref())?;
                    Some((d, true))
                }),
        );
        for (d, not_in) in wanted {
            let name = if not_in {
                format!("{}:NOT_IN", d.name)
            } else {
                d.name.clone()
            };
            if scopes.iter().any(|s| s.name == name) {
                continue;
            }
            let mut filters = Vec::new();
            for f in &d.string_values {
                match crate::topic_filter::TopicFilter::parse_with_client_id(f, &client_id) {
                    Ok(tf) => filters.push(tf),
                    Err(e) => unusable.push((d.name.clone(), format!("{f:?}: {e}"))),
                }
            }
            let operator = if not_in {
                traffic::ScopeOperator::NotIn
            } else {
                traffic::ScopeOperator::In
            };
            scopes.push(traffic::Scope {
                name,
                filters,
                operator,
            });
        }
        for (dimension, why) in unusable {
            warn!(%dimension, %why, "Dimension value is not a usable topic filter after client id substitution; left out.");
        }
        info!(
            profiles = profiles.len(),
            evaluable_behaviors = engine.evaluable_behaviors(),
            active = engine.active_violations().len(),
            "Detect started."
        );
        let mut part = DetectPart {
            engine,
            store,
            alarms: Alarms::new(&config.alarms, config.tap.clone()),
            scopes,
            last_tick: None,
            last_save: 0,
            dirty: true,
        };
        // Violations invalidated by a changed profile set are events too.
        let mut out = Vec::new();
        part.handle(restored, now, &mut out);
        for a in out {
            part.alarms.keep(a);
        }
        Ok(Some(part))
    }

    /// The traffic scopes the cloud-side behaviors need (IN by dimension name, NOT_IN as
    /// `"<name>:NOT_IN"`).
    pub fn traffic_scopes(&self) -> Vec<traffic::Scope> {
        self.scopes.clone()
    }

    /// Evaluates one built report; returns the MQTT alarms to publish.
    pub fn on_report(&mut self, r: &MetricsReport) -> Vec<MqttAlarm> {
        let now = now_ms();
        let emitted = self.engine.evaluate_report(&device_report(r), now);
        let mut out = Vec::new();
        self.handle(emitted, now, &mut out);
        self.save_if_due(now, false);
        out
    }

    /// Runs the cloud ticks due since the last call (epoch multiples of 300 s) and housekeeping.
    pub fn on_timer(&mut self, traffic: &TrafficCounters) -> Vec<MqttAlarm> {
        let now = now_ms();
        let now_s = u64::try_from(now / 1000).unwrap_or(0);
        let due = now_s / TICK_SECS * TICK_SECS;
        let mut out = Vec::new();
        // The first tick after start only sets the base (the windows before start are empty).
        let from = *self.last_tick.get_or_insert(due);
        let mut t = from + TICK_SECS;
        while t <= due {
            let ms = (t * 1000) as Millis;
            let mut emitted = self.engine.evaluate_cloud(traffic, ms);
            emitted.extend(self.engine.housekeeping(ms));
            self.handle(emitted, ms, &mut out);
            t += TICK_SECS;
        }
        self.last_tick = Some(due);
        let emitted = self.engine.housekeeping(now);
        self.handle(emitted, now, &mut out);
        self.save_if_due(now, false);
        out
    }

    /// A successful connection: the `aws:source-ip-address` datapoint (the configured
    /// `source_ip`; the device cannot see its post-NAT address). Returns the MQTT alarms.
    pub fn on_connected(&mut self) -> Vec<MqttAlarm> {
        let now = now_ms();
        let emitted = self.engine.on_connection(None, now);
        let mut out = Vec::new();
        self.handle(emitted, now, &mut out);
        self.save_if_due(now, false);
        out
    }

    /// MQTT alarms kept while the link could not take them.
    pub fn take_pending(&mut self) -> Vec<MqttAlarm> {
        self.alarms.take_pending()
    }

    /// Keeps an MQTT alarm for the next connection.
    pub fn keep(&mut self, a: MqttAlarm) {
        self.alarms.keep(a);
    }

    /// Saves the state (shutdown, reload).
    pub fn save(&mut self) {
        self.save_if_due(now_ms(), true);
    }

    fn handle(&mut self, emitted: Vec<Emitted>, now: Millis, out: &mut Vec<MqttAlarm>) {
        if emitted.is_empty() && self.engine.state() == &self.store.stored().engine {
            return;
        }
        let profiles: BTreeSet<String> = self.engine.profile_names().clone();
        self.store.record(
            &emitted,
            self.engine.state(),
            self.engine.active_violations(),
            &profiles,
            now,
        );
        self.dirty = true;
        if emitted.is_empty() {
            return;
        }
        // Persist before alarming: a crash after an alarm never loses its event.
        self.save_if_due(now, true);
        for e in &emitted {
            if e.notify {
                out.extend(self.alarms.emit(&e.event));
            } else {
                debug!(violation_id = %e.event.violation_id, "Suppressed violation event (stored, not alarmed).");
            }
        }
    }

    fn save_if_due(&mut self, now: Millis, force: bool) {
        let due = now - self.last_save >= SAVE_EVERY.as_millis() as Millis;
        if !(self.dirty && (force || due)) {
            return;
        }
        match self.store.save(now) {
            Ok(()) => {
                self.dirty = false;
                self.last_save = now;
            }
            Err(e) => {
                // Retried at the next event or timer; logged each time at most once a minute.
                if due {
                    error!(error = %e, "Cannot save the violation store.");
                }
                self.last_save = now;
            }
        }
    }
}

/// What the engine reads of a built report: the same values a decoded report document gives
/// (`detect replay` reads documents; a test checks that both paths agree).
pub fn device_report(r: &MetricsReport) -> DeviceReport {
    let ports = |l: &report::PortList| PortList {
        ports: l.ports.iter().map(|p| p.port).collect(),
        total: Some(l.total),
    };
    let m = r.metrics.as_ref();
    DeviceReport {
        network: m.and_then(|m| m.network_stats).map(|n| NetworkDeltas {
            bytes_in: n.bytes_in,
            bytes_out: n.bytes_out,
            packets_in: n.packets_in,
            packets_out: n.packets_out,
        }),
        tcp_ports: m.and_then(|m| m.listening_tcp_ports.as_ref()).map(ports),
        udp_ports: m.and_then(|m| m.listening_udp_ports.as_ref()).map(ports),
        established: m
            .and_then(|m| m.tcp_connections.as_ref())
            .map(|c| Established {
                remote_ips: c.connections.iter().map(|c| c.remote.ip()).collect(),
                total: Some(c.total),
            }),
        custom: r.custom_metrics.clone(),
    }
}

/// With `[detect.push]`, the managed directories (the first `profiles` and `dimensions`
/// entries) may not exist before the first push: they are created, empty, so Detect starts.
fn prepare_push_dirs(d: &crate::detect::Settings) {
    if d.push.is_none() {
        return;
    }
    for dir in [d.profiles.first(), d.dimensions.first()]
        .into_iter()
        .flatten()
    {
        if let Err(e) = crate::store::ensure_dir(dir) {
            warn!(dir = %dir.display(), error = %e, "Cannot create a directory for pushed profiles.");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::custom_metric::CustomValue;
    use crate::report::{ConnectionList, Metrics, NetworkStats};
    use crate::sample::{Connection, ListeningPort};

    #[test]
    fn a_built_report_reads_as_its_encoded_document_does() {
        let port = |port, i: Option<&str>| ListeningPort {
            port,
            interface: i.map(str::to_owned),
        };
        let remote: SocketAddr = "[2001:db8::7]:443".parse().unwrap();
        let r = MetricsReport {
            report_id: 7,
            version: "1.0".into(),
            metrics: Some(Metrics {
                listening_tcp_ports: Some(report::PortList {
                    ports: vec![port(22, Some("eth0")), port(22, Some("lo")), port(80, None)],
                    total: 3,
                }),
                listening_udp_ports: None,
                network_stats: Some(NetworkStats {
                    bytes_in: 1,
                    bytes_out: 2,
                    packets_in: 3,
                    packets_out: 4,
                }),
                tcp_connections: Some(ConnectionList {
                    connections: vec![Connection {
                        remote,
                        local_port: 5000,
                        local_interface: None,
                    }],
                    total: 9,
                }),
            }),
            custom_metrics: vec![
                ("n".into(), CustomValue::Number(2.5)),
                ("s".into(), CustomValue::StringList(vec!["a".into()])),
            ],
        };
        for keys in [report::KeySet::Long, report::KeySet::Short] {
            let e = report::EncodedReport::new(&r, report::Format::Json, keys);
            let v: serde_json::Value = serde_json::from_slice(&e.bytes).unwrap();
            let (decoded, notes) = crate::detect::replay::parse_report(&v).unwrap();
            assert!(notes.is_empty());
            assert_eq!(device_report(&r), decoded, "{keys:?}");
        }
    }
}
