//! The replay driver: JSON lines of timed reports and traffic events run through the engine,
//! with cloud-side ticks at every epoch multiple of 300 s, producing the violation events.
//! Deterministic; pure (the caller reads the file).
//!
//! Line forms (times are epoch seconds, non-decreasing):
//! `{"time":T,"report":{…metrics report, long or short keys…}}`,
//! `{"time":T,"publish":{"topic":"a/b","bytes":12,"dup":false}}`, `{"time":T,"receive":{…}}`,
//! `{"time":T,"connect":{"ok":true,"source_ip":"1.2.3.4"}}`, `{"time":T,"disconnect":{}}`,
//! `{"time":T,"auth_failure":{"topic":"a/b"}}`, `{"time":T,"tick":{}}`. Blank lines and lines
//! starting with `#` are ignored.
//!
//! spec: detect.md §3.3 (ticks), §2.2 (report fields), metrics-report.md (long/short keys).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

use super::engine::{
    DetectEngine, DeviceReport, Emitted, Established, Millis, NetworkDeltas, PortList,
};
use super::fleet::{report_time, Fleet, FleetDetect, FleetThreshold, ThresholdStatus, TICK_MS};
use super::violation::{ms_to_secs, ActiveViolation, ViolationEvent};
use crate::custom_metric::{check_value, CustomValue};
use crate::traffic::{AuthFailureKind, Direction, TrafficCounters, TrafficEvent};

/// Latest accepted line time, 9999-12-31T23:59:59Z: keeps `time × 1000 + TICK_MS` far from overflow.
const MAX_TIME_SECS: f64 = 253_402_300_799.0;
/// Longest gap between lines: cloud-side ticks run every 5 minutes in between, so an unbounded gap
/// is an unbounded loop (found by fuzz target detect_replay: a 50-year jump ran 5 million ticks).
const MAX_GAP_MS: Millis = 31 * 24 * 3_600_000;

/// Why a replay stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// A line is not JSON.
    #[error("line {line}:{column}: {message}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's message.
        message: String,
    },
    /// A line's time is before the previous line's.
    #[error(
        "line {line}: time {time} is before the previous time {previous} (times must not decrease)"
    )]
    OutOfOrder {
        /// 1-based line number.
        line: usize,
        /// This line's time (seconds).
        time: String,
        /// The previous time (seconds).
        previous: String,
    },
    /// A line has the wrong shape.
    #[error("line {line}: {message}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The traffic counters cannot take the profiles' scopes (too many, too long).
    #[error("traffic scopes: {0}")]
    Scopes(String),
    /// The report payload is malformed (the same report AWS would reject).
    #[error("line {line}: malformed metrics report: {message}")]
    Report {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// The result of a replay: every emitted event in record order, and the engine afterwards.
#[derive(Debug, Clone)]
pub struct ReplayRun {
    /// Events in the order they were produced.
    pub events: Vec<Emitted>,
    /// The engine after the last line (active violations, state).
    pub engine: DetectEngine,
    /// Remarks about dropped custom metrics (invalid values), with line numbers.
    pub notes: Vec<String>,
}

impl ReplayRun {
    /// The events newest first; ties: later-recorded first (spec: detect.md §6.6).
    pub fn events_newest_first(&self) -> Vec<ViolationEvent> {
        newest_first(&self.events)
    }

    /// `{"violationEvents":[…]}` plus, when asked, `"activeViolations":[…]` (typed, so the
    /// API field order is kept; a `serde_json::Value` would sort the keys).
    pub fn document(&self, with_active: bool) -> ReplayDocument {
        ReplayDocument {
            violation_events: self.events_newest_first(),
            active_violations: with_active.then(|| self.engine.active_violations()),
        }
    }
}

/// Events newest first; ties: later-recorded first (spec: detect.md §6.6).
fn newest_first(events: &[Emitted]) -> Vec<ViolationEvent> {
    let mut v: Vec<(usize, &ViolationEvent)> =
        events.iter().map(|e| &e.event).enumerate().collect();
    v.sort_by(|a, b| {
        b.1.violation_event_time
            .total_cmp(&a.1.violation_event_time)
            .then(b.0.cmp(&a.0))
    });
    v.into_iter().map(|(_, e)| e.clone()).collect()
}

/// The replay output document.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDocument {
    /// Newest first.
    pub violation_events: Vec<ViolationEvent>,
    /// ListActiveViolations after the last line, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_violations: Option<Vec<ActiveViolation>>,
}

/// Runs `input` through `engine`. `client_id` is substituted for `${iot:ClientId}` in filters.
pub fn replay(
    input: &str,
    mut engine: DetectEngine,
    client_id: &str,
) -> Result<ReplayRun, ReplayError> {
    // One traffic implementation: the agent's bucketed counters (300 s buckets, (t−D, t]).
    let (scopes, _unparsable) = engine.traffic_scopes(client_id);
    let mut log = TrafficCounters::new(scopes, crate::traffic::Settings::default())
        .map_err(|e| ReplayError::Scopes(e.to_string()))?;
    let mut events = Vec::new();
    let mut notes = Vec::new();
    let mut previous: Option<(Millis, f64)> = None;
    let mut last_tick: Option<Millis> = None;
    for (idx, raw) in input.lines().enumerate() {
        let line = idx + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(text).map_err(|e| ReplayError::Json {
            line,
            column: e.column(),
            message: e.to_string(),
        })?;
        let obj = v.as_object().ok_or_else(|| ReplayError::BadLine {
            line,
            message: "expected a JSON object".to_owned(),
        })?;
        let secs = obj
            .get("time")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t >= 0.0 && *t <= MAX_TIME_SECS)
            .ok_or_else(|| ReplayError::BadLine {
                line,
                message: "\"time\" (epoch seconds, a number from 0 to 253402300799) is required"
                    .to_owned(),
            })?;
        let now = (secs * 1000.0).round() as Millis;
        if let Some((prev_ms, prev_secs)) = previous {
            if now < prev_ms {
                return Err(ReplayError::OutOfOrder {
                    line,
                    time: secs.to_string(),
                    previous: prev_secs.to_string(),
                });
            }
        }
        previous = Some((now, secs));
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64);
        let tick_base = *last_tick.get_or_insert(now.div_euclid(TICK_MS) * TICK_MS);
        if now.saturating_sub(tick_base) > MAX_GAP_MS {
            return Err(ReplayError::BadLine {
                line,
                message: format!(
                    "time {secs} is more than 31 days after the previous line; split the replay"
                ),
            });
        }
        let kinds: Vec<&String> = obj.keys().filter(|k| k.as_str() != "time").collect();
        let [kind] = kinds.as_slice() else {
            return Err(ReplayError::BadLine {
                line,
                message: format!(
                    "expected exactly one event key besides \"time\", found {kinds:?}"
                ),
            });
        };
        // Invariant: `kind` was taken from this map's keys.
        let body = &obj[kind.as_str()];
        // Cloud ticks strictly before this line's time run first; a tick at exactly `now` runs
        // after the line's traffic is recorded (window (t−D, t] includes t).
        let inclusive = kind.as_str() == "tick";
        last_tick = Some(run_ticks(
            &mut engine,
            &log,
            tick_base,
            now,
            inclusive,
            &mut events,
        ));
        match kind.as_str() {
            "report" => {
                let (report, dropped) =
                    parse_report(body).map_err(|message| ReplayError::Report { line, message })?;
                notes.extend(dropped.into_iter().map(|d| format!("line {line}: {d}")));
                events.extend(engine.evaluate_report(&report, now));
            }
            "publish" | "receive" => {
                let topic = body
                    .get("topic")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ReplayError::BadLine {
                        line,
                        message: format!("{kind} needs a \"topic\" string"),
                    })?
                    .to_owned();
                let bytes = body
                    .get("bytes")
                    .or_else(|| body.get("size"))
                    .map_or(Some(0), Value::as_u64)
                    .ok_or_else(|| ReplayError::BadLine {
                        line,
                        message: "\"bytes\" must be an integer >= 0".to_owned(),
                    })?;
                // spec: §2.2 — count first transmissions only, not DUP retransmits.
                if body.get("dup").and_then(Value::as_bool) != Some(true) {
                    let direction = if kind.as_str() == "publish" {
                        Direction::Sent
                    } else {
                        Direction::Received
                    };
                    log.record_publish(&topic, bytes, direction, at);
                }
            }
            "connect" => {
                let ok = body.get("ok").and_then(Value::as_bool).unwrap_or(true);
                log.record(&TrafficEvent::ConnectAttempt { ok }, at);
                let ip = match body.get("source_ip").and_then(Value::as_str) {
                    Some(s) => Some(s.parse::<IpAddr>().map_err(|_| ReplayError::BadLine {
                        line,
                        message: format!("source_ip {s:?} is not an IP address"),
                    })?),
                    None => None,
                };
                if ok {
                    events.extend(engine.on_connection(ip, now));
                }
            }
            "disconnect" => log.record(&TrafficEvent::Disconnect, at),
            "auth_failure" => {
                let topic = body.get("topic").and_then(Value::as_str).map(str::to_owned);
                log.record(
                    &TrafficEvent::AuthFailure {
                        kind: AuthFailureKind::Publish,
                        topic,
                    },
                    at,
                );
            }
            "tick" => events.extend(engine.housekeeping(now)),
            other => {
                return Err(ReplayError::BadLine {
                    line,
                    message: format!("unknown event {other:?}"),
                })
            }
        }
    }
    if let (Some((end, _)), Some(base)) = (previous, last_tick) {
        run_ticks(&mut engine, &log, base, end, true, &mut events);
    }
    Ok(ReplayRun {
        events,
        engine,
        notes,
    })
}

/// Runs cloud ticks (and housekeeping) at multiples of 300 s in (after, until) or (after, until].
fn run_ticks(
    engine: &mut DetectEngine,
    log: &TrafficCounters,
    after: Millis,
    until: Millis,
    inclusive: bool,
    out: &mut Vec<Emitted>,
) -> Millis {
    let mut t = after + TICK_MS;
    let mut last = after;
    while t < until || (inclusive && t == until) {
        out.extend(engine.evaluate_cloud(log, t));
        out.extend(engine.housekeeping(t));
        last = t;
        t += TICK_MS;
    }
    last
}

/// The result of [`replay_fleet`].
#[derive(Debug, Clone)]
pub struct FleetReplayRun {
    /// Events in the order they were produced.
    pub events: Vec<Emitted>,
    /// The output document: the events newest first, and with `active` the ActiveViolations of
    /// every thing after the last line (newest start first; ties in thing-name order).
    pub document: ReplayDocument,
    /// Every thing's state after the last line.
    pub things: Fleet,
    /// The thresholds in force after the last tick.
    pub thresholds: Vec<FleetThreshold>,
    /// Remarks: duplicate reports ignored, custom metrics dropped, and each change of a
    /// statistical behavior's [`ThresholdStatus`] (once per change, as the service logs it).
    pub notes: Vec<String>,
}

/// Runs the fleet evaluation over JSON lines `{"time": <epoch s>, "thing": "<name>", "report":
/// {…metrics report, long or short keys…}}` (blank lines and `#` lines ignored), as the service
/// would: `time` is the arrival; each report is evaluated at its [`report_time`] (its
/// `report_id` when a plausible epoch second, else the arrival), all reports in time order
/// (ties: line order), so the lines need not be sorted; a repeated `report_id` of a thing is a
/// duplicate and ignored. At every epoch multiple of 300 s between reports (a tick at the very
/// time of a report runs after it, the window (t−D, t] including t) the thresholds job runs
/// over every thing seen, then every thing's tick (invalidation). Deterministic; pure.
pub fn replay_fleet(
    input: &str,
    fleet: &FleetDetect,
    min_population: usize,
    active: bool,
) -> Result<FleetReplayRun, ReplayError> {
    struct Entry {
        at: Millis,
        line: usize,
        thing: String,
        report: DeviceReport,
    }
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: std::collections::BTreeSet<(String, u64)> = std::collections::BTreeSet::new();
    let mut notes = Vec::new();
    for (idx, raw) in input.lines().enumerate() {
        let line = idx + 1;
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let v: Value = serde_json::from_str(text).map_err(|e| ReplayError::Json {
            line,
            column: e.column(),
            message: e.to_string(),
        })?;
        let bad = |message: String| ReplayError::BadLine { line, message };
        let obj = v
            .as_object()
            .ok_or_else(|| bad("expected a JSON object".to_owned()))?;
        let secs = obj
            .get("time")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t >= 0.0 && *t <= MAX_TIME_SECS)
            .ok_or_else(|| {
                bad(
                    "\"time\" (epoch seconds, a number from 0 to 253402300799) is required"
                        .to_owned(),
                )
            })?;
        let arrival = (secs * 1000.0).round() as Millis;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "time" | "thing" | "report"))
        {
            return Err(bad(format!(
                "unexpected key {k:?}: a fleet line is {{\"time\", \"thing\", \"report\"}}"
            )));
        }
        let thing = obj
            .get("thing")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("\"thing\" (the thing name, a string) is required".to_owned()))?;
        check_thing(thing).map_err(|e| bad(format!("thing {thing:?}: {e}")))?;
        let body = obj
            .get("report")
            .ok_or_else(|| bad("\"report\" (a metrics report) is required".to_owned()))?;
        let (report, dropped) =
            parse_report(body).map_err(|message| ReplayError::Report { line, message })?;
        let rid = body
            .as_object()
            .and_then(|o| get(o, "header", "hed"))
            .and_then(Value::as_object)
            .and_then(|h| get(h, "report_id", "rid"))
            .and_then(Value::as_u64);
        if let Some(rid) = rid {
            if !seen.insert((thing.to_owned(), rid)) {
                notes.push(format!(
                    "line {line}: thing {thing}: duplicate report_id {rid}, ignored"
                ));
                continue;
            }
        }
        notes.extend(dropped.into_iter().map(|d| format!("line {line}: {d}")));
        entries.push(Entry {
            at: report_time(rid, arrival),
            line,
            thing: thing.to_owned(),
            report,
        });
    }
    entries.sort_by_key(|e| (e.at, e.line));
    let mut ticker = FleetTicker {
        fleet: fleet.clone(),
        things: Fleet::new(),
        min_population,
        status: BTreeMap::new(),
        events: Vec::new(),
        notes,
    };
    let mut last_tick: Option<Millis> = None;
    for e in &entries {
        let base = *last_tick.get_or_insert(e.at.div_euclid(TICK_MS) * TICK_MS);
        if e.at.saturating_sub(base) > MAX_GAP_MS {
            return Err(ReplayError::BadLine {
                line: e.line,
                message: format!(
                    "time {} is more than 31 days after the previous report; split the replay",
                    ms_to_secs(e.at)
                ),
            });
        }
        last_tick = Some(ticker.run(base, e.at, false));
        let FleetTicker {
            fleet,
            things,
            events,
            ..
        } = &mut ticker;
        let st = things
            .entry(e.thing.clone())
            .or_insert_with(|| fleet.new_thing_state());
        events.extend(fleet.evaluate_report(st, &e.thing, &e.report, e.at));
    }
    if let (Some(end), Some(base)) = (entries.last().map(|e| e.at), last_tick) {
        ticker.run(base, end, true);
    }
    let mut active_violations: Vec<ActiveViolation> = Vec::new();
    for (name, st) in &ticker.things {
        active_violations.extend(ticker.fleet.active_violations(st, name));
    }
    active_violations.sort_by(|a, b| b.violation_start_time.total_cmp(&a.violation_start_time));
    Ok(FleetReplayRun {
        document: ReplayDocument {
            violation_events: newest_first(&ticker.events),
            active_violations: active.then_some(active_violations),
        },
        events: ticker.events,
        thresholds: ticker.fleet.thresholds().to_vec(),
        things: ticker.things,
        notes: ticker.notes,
    })
}

/// A thing name as the topics take it: 1..=128 bytes of UTF-8, no control characters (spec:
/// metrics-report.md A.1), none of `+`, `#`, `/` (the rule of `mqtt::topics::check_thing_name`;
/// a core does not reach into the MQTT edge).
fn check_thing(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err(format!("must be 1 to 128 bytes, not {}", name.len()));
    }
    match name
        .char_indices()
        .find(|(_, c)| c.is_control() || matches!(c, '+' | '#' | '/'))
    {
        Some((offset, ch)) => Err(format!(
            "contains {ch:?} at byte {offset}: control characters, '+', '#' and '/' are not allowed"
        )),
        None => Ok(()),
    }
}

/// The fleet replay's clock: the thresholds job and every thing's tick at each multiple of 300 s.
struct FleetTicker {
    fleet: FleetDetect,
    things: Fleet,
    min_population: usize,
    status: BTreeMap<(String, String), ThresholdStatus>,
    events: Vec<Emitted>,
    notes: Vec<String>,
}

impl FleetTicker {
    /// Ticks at multiples of 300 s in (after, until) or (after, until]; the last tick run.
    fn run(&mut self, after: Millis, until: Millis, inclusive: bool) -> Millis {
        let mut t = after + TICK_MS;
        let mut last = after;
        while t < until || (inclusive && t == until) {
            let thresholds =
                self.fleet
                    .compute_thresholds(self.things.values(), t, self.min_population);
            for th in &thresholds {
                let key = (th.security_profile_name.clone(), th.behavior_name.clone());
                if self.status.insert(key, th.status) != Some(th.status) {
                    self.notes
                        .push(format!("time {}: {}", ms_to_secs(t), th.message()));
                }
            }
            self.fleet.set_thresholds(&thresholds);
            for (name, st) in self.things.iter_mut() {
                self.events.extend(self.fleet.tick(st, name, None, t));
            }
            last = t;
            t += TICK_MS;
        }
        last
    }
}

fn get<'a>(o: &'a Map<String, Value>, long: &str, short: &str) -> Option<&'a Value> {
    o.get(long).or_else(|| o.get(short))
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} must be an object"))
}

fn uint(v: Option<&Value>, what: &str) -> Result<Option<u64>, String> {
    match v {
        None => Ok(None),
        Some(x) => x
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("{what} must be an integer >= 0")),
    }
}

fn port_list(v: &Value, what: &str) -> Result<PortList, String> {
    let o = obj(v, what)?;
    let mut ports = Vec::new();
    if let Some(list) = get(o, "ports", "pts") {
        for p in list
            .as_array()
            .ok_or_else(|| format!("{what}.ports must be a list"))?
        {
            let po = obj(p, "a port entry")?;
            let n = uint(get(po, "port", "pt"), "port")?.ok_or("a port entry needs port")?;
            let n = u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("port {n} must be in 1..65535"))?;
            ports.push(n);
        }
    }
    Ok(PortList {
        ports,
        total: uint(get(o, "total", "t"), "total")?,
    })
}

/// Parses `ip:port`, `[v6]:port`, or a bare address (spec: detect.md §2.2 destination IPs).
pub fn parse_remote_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let host = match s.rsplit_once(':') {
        Some((h, _port)) => h,
        None => s,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// A minimal tolerant parser of a metrics report document (long or short keys) into a
/// [`DeviceReport`]. Returns the report and notes about custom metrics dropped for invalid
/// values; errors on what AWS rejects as malformed (e.g. a custom value not in an array).
pub fn parse_report(v: &Value) -> Result<(DeviceReport, Vec<String>), String> {
    let root = obj(v, "the report")?;
    let metrics = get(root, "metrics", "met");
    let custom = get(root, "custom_metrics", "cmet");
    if metrics.is_none() && custom.is_none() {
        return Err("at least one of metrics or custom_metrics is required".to_owned());
    }
    let mut r = DeviceReport::default();
    let mut notes = Vec::new();
    if let Some(m) = metrics {
        let m = obj(m, "metrics")?;
        if let Some(tp) = get(m, "listening_tcp_ports", "tp") {
            r.tcp_ports = Some(port_list(tp, "listening_tcp_ports")?);
        }
        if let Some(up) = get(m, "listening_udp_ports", "up") {
            r.udp_ports = Some(port_list(up, "listening_udp_ports")?);
        }
        if let Some(ns) = get(m, "network_stats", "ns") {
            let ns = obj(ns, "network_stats")?;
            let f = |l, s| uint(get(ns, l, s), l).map(Option::unwrap_or_default);
            r.network = Some(NetworkDeltas {
                bytes_in: f("bytes_in", "bi")?,
                bytes_out: f("bytes_out", "bo")?,
                packets_in: f("packets_in", "pi")?,
                packets_out: f("packets_out", "po")?,
            });
        }
        if let Some(tc) = get(m, "tcp_connections", "tc") {
            let tc = obj(tc, "tcp_connections")?;
            if let Some(ec) = get(tc, "established_connections", "ec") {
                let ec = obj(ec, "established_connections")?;
                let mut remote_ips = Vec::new();
                if let Some(cs) = get(ec, "connections", "cs") {
                    for c in cs.as_array().ok_or("connections must be a list")? {
                        let co = obj(c, "a connection")?;
                        let rad = get(co, "remote_addr", "rad")
                            .and_then(Value::as_str)
                            .ok_or("a connection needs remote_addr")?;
                        remote_ips.push(
                            parse_remote_addr(rad)
                                .ok_or_else(|| format!("remote_addr {rad:?} is not ip:port"))?,
                        );
                    }
                }
                r.established = Some(Established {
                    remote_ips,
                    total: uint(get(ec, "total", "t"), "total")?,
                });
            }
        }
    }
    if let Some(c) = custom {
        for (name, val) in obj(c, "custom_metrics")? {
            // spec: detect.md §2.2 — always an ARRAY holding one object.
            let arr = val.as_array().filter(|a| a.len() == 1).ok_or_else(|| {
                format!("custom metric {name} must be an array holding one object")
            })?;
            // Invariant: the filter above keeps only one-element arrays.
            let o = obj(&arr[0], "a custom metric value")?;
            let value = custom_value(o).map_err(|e| format!("custom metric {name}: {e}"))?;
            // spec: detect.md §2.2 [S17] — data outside the value rules is dropped with a
            // remark, never a malformed report.
            match value.and_then(|v| check_value(&v).map(|()| v).map_err(|e| e.to_string())) {
                Ok(v) => r.custom.push((name.clone(), v)),
                Err(e) => notes.push(format!("custom metric {name} dropped: {e}")),
            }
        }
    }
    Ok((r, notes))
}

/// A custom value, or (inner `Err`) why its data breaks the value rules (dropped, spec §2.2);
/// the outer `Err` is a wrong shape (a malformed report).
fn custom_value(o: &Map<String, Value>) -> Result<Result<CustomValue, String>, String> {
    let nums = |v: &Value| -> Result<Vec<f64>, String> {
        v.as_array()
            .ok_or("number_list must be a list")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| "number_list holds a non-number".to_owned())
            })
            .collect()
    };
    if let Some(n) = o.get("number") {
        return n
            .as_f64()
            .map(|x| Ok(CustomValue::Number(x)))
            .ok_or_else(|| "number must be a number".to_owned());
    }
    if let Some(v) = o.get("number_list") {
        return nums(v).map(|x| Ok(CustomValue::NumberList(x)));
    }
    if let Some(v) = o.get("string_list") {
        let list = v.as_array().ok_or("string_list must be a list")?;
        return list
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "string_list holds a non-string".to_owned())
            })
            .collect::<Result<_, _>>()
            .map(|x| Ok(CustomValue::StringList(x)));
    }
    if let Some(v) = o.get("ip_list") {
        let list = v.as_array().ok_or("ip_list must be a list")?;
        let mut ips = Vec::with_capacity(list.len());
        for x in list {
            let s = x
                .as_str()
                .ok_or_else(|| format!("ip_list holds {x}, not a string"))?;
            match s.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => return Ok(Err(format!("ip_list holds {s:?}, not an IP address"))),
            }
        }
        return Ok(Ok(CustomValue::IpList(ips)));
    }
    Err("expected one of number, number_list, string_list, ip_list".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::engine::EngineSettings;
    use crate::detect::profile::SecurityProfile;
    use crate::detect::validate::ValidationContext;
    use crate::detect::violation::ViolationEventType as T;

    fn engine(behaviors: &str) -> DetectEngine {
        let p: SecurityProfile = serde_json::from_str(&format!(
            r#"{{"securityProfileName":"P","behaviors":[{behaviors}]}}"#
        ))
        .unwrap();
        let ctx = ValidationContext::new(
            vec![],
            vec![serde_json::from_str(
                r#"{"metricName":"batteryPercentage","metricType":"number"}"#,
            )
            .unwrap()],
        );
        DetectEngine::new(EngineSettings::new("t1"), &[p], &ctx)
    }

    #[test]
    fn tc01_through_replay_ticks_cloud_metrics_every_300_seconds() {
        let e = engine(
            r#"{"name":"B1","metric":"aws:num-messages-sent","criteria":{"comparisonOperator":"less-than-equals","value":{"count":10},"durationSeconds":300,"consecutiveDatapointsToAlarm":2,"consecutiveDatapointsToClear":2}}"#,
        );
        let mut input = String::from("{\"time\":0,\"connect\":{}}\n");
        for (i, n) in [5, 15, 15, 3, 3].iter().enumerate() {
            for k in 0..*n {
                input.push_str(&format!(
                    "{{\"time\":{},\"publish\":{{\"topic\":\"t\",\"bytes\":5}}}}\n",
                    300 * i + 10 + k
                ));
            }
        }
        input.push_str("{\"time\":1500,\"tick\":{}}\n");
        let run = replay(&input, e, "c1").unwrap();
        let got: Vec<(T, f64)> = run
            .events
            .iter()
            .map(|e| (e.event.violation_event_type, e.event.violation_event_time))
            .collect();
        assert_eq!(got, vec![(T::InAlarm, 900.0), (T::AlarmCleared, 1500.0)]);
        let doc = serde_json::to_value(run.document(true)).unwrap();
        assert_eq!(
            doc["violationEvents"][0]["violationEventType"],
            "alarm-cleared"
        );
        assert_eq!(doc["activeViolations"].as_array().unwrap().len(), 0);
        let text = serde_json::to_string(&run.document(false)).unwrap();
        assert!(
            text.starts_with(r#"{"violationEvents":[{"violationId":"#),
            "{text}"
        );
    }

    #[test]
    fn disconnect_duration_is_evaluated_only_behind_its_flag() {
        // spec: §2.3 — minutes since the loss at each 300 s tick while disconnected, 0 while
        // connected; `less-than 5` alarms after five minutes offline.
        let behavior = r#"{"name":"Offline","metric":"aws:disconnect-duration","criteria":{"comparisonOperator":"less-than","value":{"count":5}}}"#;
        let input = "{\"time\":0,\"connect\":{}}\n{\"time\":310,\"disconnect\":{}}\n{\"time\":1000,\"connect\":{}}\n{\"time\":1200,\"tick\":{}}\n";
        let off = replay(input, engine(behavior), "c1").unwrap();
        assert!(off.events.is_empty());
        assert!(off
            .engine
            .diagnostics()
            .iter()
            .any(|d| d.to_string().contains("disconnect_duration = true")));

        let p: SecurityProfile = serde_json::from_str(&format!(
            r#"{{"securityProfileName":"P","behaviors":[{behavior}]}}"#
        ))
        .unwrap();
        let mut settings = EngineSettings::new("t1");
        settings.disconnect_duration = true;
        let e = DetectEngine::new(settings, &[p], &ValidationContext::new(vec![], vec![]));
        let run = replay(input, e, "c1").unwrap();
        let got: Vec<(T, f64, Option<u64>)> = run
            .events
            .iter()
            .map(|e| {
                (
                    e.event.violation_event_type,
                    e.event.violation_event_time,
                    e.event.metric_value.as_ref().and_then(|v| v.count),
                )
            })
            .collect();
        // Ticks: 300 (connected: 0), 600 (4 min: normal), 900 (9 min: alarm), 1200 (connected).
        assert_eq!(
            got,
            vec![
                (T::InAlarm, 900.0, Some(9)),
                (T::AlarmCleared, 1200.0, Some(0))
            ]
        );
    }

    #[test]
    fn tc26_through_replay_and_the_unwrapped_custom_value_is_malformed() {
        let e = engine(
            r#"{"name":"great-than-75","metric":"batteryPercentage","criteria":{"comparisonOperator":"greater-than","value":{"number":75},"consecutiveDatapointsToAlarm":5,"consecutiveDatapointsToClear":1}}"#,
        );
        let mut input = String::from("{\"time\":300,\"report\":{\"hed\":{\"rid\":1,\"v\":\"1.0\"},\"cmet\":{\"batteryPercentage\":[{\"number\":80}]}}}\n");
        for i in 2..=6 {
            input.push_str(&format!("{{\"time\":{},\"report\":{{\"hed\":{{\"rid\":{i},\"v\":\"1.0\"}},\"cmet\":{{\"batteryPercentage\":[{{\"number\":70}}]}}}}}}\n", 300 * i));
        }
        let run = replay(&input, e.clone(), "c").unwrap();
        assert_eq!(run.events.len(), 1);
        assert_eq!(run.events[0].event.violation_event_time, 1800.0);
        let bad = "{\"time\":300,\"report\":{\"cmet\":{\"batteryPercentage\":{\"number\":70}}}}";
        let err = replay(bad, e, "c").unwrap_err();
        assert!(matches!(err, ReplayError::Report { line: 1, .. }), "{err}");
    }

    #[test]
    fn an_out_of_order_line_names_its_line_number() {
        let e = engine("");
        let input = "{\"time\":600,\"tick\":{}}\n\n{\"time\":300,\"tick\":{}}\n";
        let err = replay(input, e.clone(), "c").unwrap_err();
        assert_eq!(
            err,
            ReplayError::OutOfOrder {
                line: 3,
                time: "300".into(),
                previous: "600".into()
            }
        );
        assert!(matches!(
            replay("{\"time\":1,", e.clone(), "c"),
            Err(ReplayError::Json { line: 1, .. })
        ));
        assert!(matches!(
            replay("{\"time\":1,\"bogus\":{}}", e, "c"),
            Err(ReplayError::BadLine { line: 1, .. })
        ));
    }

    #[test]
    fn s17_an_ip_list_with_an_invalid_address_is_dropped_not_a_malformed_report() {
        // spec: detect.md §2.2 [S17] — "only valid IPV4 and IPV6 addresses"; data outside the
        // rules is not retained: drop the metric with a remark (the replay used to fail here).
        let report = serde_json::json!({"cmet":{
            "peers":[{"ip_list":["10.0.0.1","10.0.0.256"]}],
            "tags":[{"string_list":["ok"]}]}});
        let (r, notes) = parse_report(&report).unwrap();
        assert_eq!(
            r.custom,
            vec![(
                "tags".to_owned(),
                CustomValue::StringList(vec!["ok".into()])
            )]
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("peers dropped"), "{notes:?}");
        assert!(notes[0].contains("10.0.0.256"), "{notes:?}");
        // A list element of the wrong JSON type is still a malformed report.
        let wrong = serde_json::json!({"cmet":{"peers":[{"ip_list":[5]}]}});
        assert!(parse_report(&wrong).is_err());
    }

    #[test]
    fn long_and_short_report_keys_give_the_same_device_report() {
        let long: Value = serde_json::from_str(r#"{"header":{"report_id":1,"version":"1.0"},"metrics":{"listening_tcp_ports":{"ports":[{"port":22,"interface":"eth0"},{"port":22,"interface":"wlan0"}],"total":2},"network_stats":{"bytes_in":1,"bytes_out":2,"packets_in":3,"packets_out":4},"tcp_connections":{"established_connections":{"connections":[{"remote_addr":"[2001:db8::1]:443","local_port":5000},{"remote_addr":"10.0.0.1:80"}],"total":2}}}}"#).unwrap();
        let short: Value = serde_json::from_str(r#"{"hed":{"rid":1,"v":"1.0"},"met":{"tp":{"pts":[{"pt":22,"if":"eth0"},{"pt":22,"if":"wlan0"}],"t":2},"ns":{"bi":1,"bo":2,"pi":3,"po":4},"tc":{"ec":{"cs":[{"rad":"[2001:db8::1]:443","lp":5000},{"rad":"10.0.0.1:80"}],"t":2}}}}"#).unwrap();
        let (a, _) = parse_report(&long).unwrap();
        let (b, _) = parse_report(&short).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.network.unwrap().packets_out, 4);
        assert_eq!(
            a.established.unwrap().remote_ips[0],
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert!(parse_report(&serde_json::json!({"hed":{}})).is_err());
        assert!(parse_report(&serde_json::json!({"met":{"ns":{"bi":-1}}})).is_err());
    }
}
