//! `defender-fleet status`: what the fleet's store says, so it is the same from any instance
//! (several share one PostgreSQL store): the things seen by name, reports recorded and per
//! second, the ingest's answers and rejects by code (from the counters every instance adds to,
//! [`crate::counters`]), the store's size, the violations and the fleet thresholds.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::store::{FleetThreshold, Result, Store, ThingSeen};

/// The window `reports.per_sec` averages over (the minutes that overlap it).
pub const RATE_WINDOW_MS: i64 = 300_000;

/// The status document (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// When it was read (epoch ms).
    pub now_ms: i64,
    /// `[store]`.
    pub store: StoreStatus,
    /// Things seen.
    pub things: Things,
    /// Reports.
    pub reports: Reports,
    /// The ingest's answers (counters of every instance, within retention).
    pub answers: Answers,
    /// Violations in the store.
    pub violations: Violations,
    /// The stored fleet thresholds.
    pub thresholds: Vec<FleetThreshold>,
}

/// The store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Bytes on disk (the SQLite file with its WAL; the PostgreSQL database).
    pub size_bytes: i64,
    /// The schema version.
    pub schema_version: i64,
    /// `[store] retention_days`.
    pub retention_days: u64,
}

/// Things seen, by name.
#[derive(Debug, Clone, Serialize)]
pub struct Things {
    /// How many.
    pub count: i64,
    /// The first `--max-things` by name (byte order).
    pub seen: Vec<ThingSeen>,
    /// True when `seen` is not all of them.
    pub truncated: bool,
}

/// Reports.
#[derive(Debug, Clone, Serialize)]
pub struct Reports {
    /// Recorded since the store began (duplicates not counted).
    pub total: i64,
    /// Report rows kept (within retention).
    pub retained: i64,
    /// Reports recorded per second over the last 300 s (the minutes that overlap them).
    pub per_sec: f64,
    /// Recorded reports counted in that window.
    pub in_window: i64,
    /// Start of the window (epoch ms): a minute start, or the first counted minute.
    pub window_start_ms: i64,
}

/// The ingest's answers.
#[derive(Debug, Clone, Serialize)]
pub struct Answers {
    /// Start of the oldest counted minute (epoch ms), `null` before anything was counted.
    pub since_ms: Option<i64>,
    /// Reports taken from the queue.
    pub received: i64,
    /// Answered accepted (duplicates included).
    pub accepted: i64,
    /// Committed (new reports).
    pub recorded: i64,
    /// Accepted again without being recorded: `accepted - recorded`.
    pub duplicates: i64,
    /// Left unanswered because the ingest queue was full (the devices retry).
    pub dropped: i64,
    /// Rejected, by `ErrorCode` (every known code, 0 included; `Other` for any other).
    pub rejected: BTreeMap<String, i64>,
}

/// Violations.
#[derive(Debug, Clone, Serialize)]
pub struct Violations {
    /// Violation events kept.
    pub events: i64,
    /// Active violations.
    pub active: i64,
}

/// Reads the status at `now_ms`, with at most `max_things` things by name.
pub async fn read(store: &Store, now_ms: i64, max_things: usize) -> Result<Status> {
    let counts = store.counts().await?;
    let limit = i64::try_from(max_things).unwrap_or(i64::MAX);
    let seen = store.things(None, limit).await?;
    let first = store.counters_start().await?;
    let all: BTreeMap<String, i64> = store.counters_since(i64::MIN).await?.into_iter().collect();
    let minute_of_start = (now_ms - RATE_WINDOW_MS).div_euclid(60_000) * 60_000;
    let window_start_ms = first.map_or(minute_of_start, |f| f.max(minute_of_start));
    let window: BTreeMap<String, i64> = store
        .counters_since(window_start_ms)
        .await?
        .into_iter()
        .collect();
    let get = |m: &BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    let in_window = get(&window, "recorded");
    let span_secs = ((now_ms - window_start_ms) as f64 / 1000.0).max(1.0);
    let mut rejected: BTreeMap<String, i64> = crate::counters::REJECT_CODES
        .iter()
        .map(|c| ((*c).to_owned(), 0))
        .collect();
    for (name, n) in &all {
        if let Some(code) = name.strip_prefix("rejected.") {
            if code != "Other" || *n != 0 {
                rejected.insert(code.to_owned(), *n);
            }
        }
    }
    let accepted = get(&all, "accepted");
    let recorded = get(&all, "recorded");
    Ok(Status {
        now_ms,
        store: StoreStatus {
            engine: store.engine_name(),
            size_bytes: counts.size_bytes,
            schema_version: store.schema_version().await?,
            retention_days: store.retention().as_secs() / 86_400,
        },
        things: Things {
            count: counts.things,
            truncated: (seen.len() as i64) < counts.things,
            seen,
        },
        reports: Reports {
            total: counts.reports_total,
            retained: counts.reports_retained,
            per_sec: in_window as f64 / span_secs,
            in_window,
            window_start_ms,
        },
        answers: Answers {
            since_ms: first,
            received: get(&all, "received"),
            accepted,
            recorded,
            duplicates: (accepted - recorded).max(0),
            dropped: get(&all, "dropped"),
            rejected,
        },
        violations: Violations {
            events: counts.violation_events,
            active: counts.active_violations,
        },
        thresholds: store.thresholds().await?,
    })
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` of epoch ms.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Civil from days (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

fn size(bytes: i64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{bytes} B")
    }
}

/// The human text (the default output).
pub fn text(s: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Store: {}, {} (schema {}, retention {} days)",
        s.store.engine,
        size(s.store.size_bytes),
        s.store.schema_version,
        s.store.retention_days
    );
    let _ = writeln!(
        o,
        "Reports: {} recorded ({} kept), {:.2}/s since {}",
        s.reports.total,
        s.reports.retained,
        s.reports.per_sec,
        utc(s.reports.window_start_ms)
    );
    let a = &s.answers;
    let rejected: i64 = a.rejected.values().sum();
    let codes: Vec<String> = a
        .rejected
        .iter()
        .map(|(code, n)| format!("{code} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "Answers{}: {} received, {} accepted ({} duplicates), {} rejected ({}), {} dropped",
        a.since_ms
            .map_or_else(String::new, |t| format!(" since {}", utc(t))),
        a.received,
        a.accepted,
        a.duplicates,
        rejected,
        codes.join(", "),
        a.dropped
    );
    let _ = writeln!(
        o,
        "Violations: {} events, {} active",
        s.violations.events, s.violations.active
    );
    if s.thresholds.is_empty() {
        let _ = writeln!(o, "Thresholds: none computed");
    } else {
        let _ = writeln!(o, "Thresholds:");
        for t in &s.thresholds {
            let value = t
                .value
                .map_or_else(|| "not evaluable".to_owned(), |v| v.to_string());
            let _ = writeln!(
                o,
                "  {} / {}: {} over {} things (computed {})",
                t.profile,
                t.behavior,
                value,
                t.population,
                utc(t.computed_at_ms)
            );
        }
    }
    let _ = writeln!(
        o,
        "Things: {}{}",
        s.things.count,
        if s.things.truncated {
            format!(" (the first {} by name)", s.things.seen.len())
        } else {
            String::new()
        }
    );
    let width = s
        .things
        .seen
        .iter()
        .map(|t| t.thing.chars().count())
        .max()
        .unwrap_or(0)
        .min(64);
    for t in &s.things.seen {
        let _ = writeln!(
            o,
            "  {:<width$}  {} reports, last seen {}{}",
            defender_agent::text::untrusted(&t.thing).to_string(),
            t.report_count,
            utc(t.last_seen_ms),
            t.last_report_ms
                .map_or_else(String::new, |r| format!(", last report {}", utc(r))),
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_epoch_ms() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_086_400_000), "2025-11-25T16:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(-1000), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(4096), "4.0 KiB");
        assert_eq!(size(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
