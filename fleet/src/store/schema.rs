//! The one schema, as numbered migrations applied at start in order, in one transaction, each
//! with its row in `schema_migrations`.
//!
//! The text is the same for both engines except `{id}`, the auto-increment key (SQLite:
//! `INTEGER PRIMARY KEY AUTOINCREMENT`, PostgreSQL: an identity column), and `{key}`, text
//! ordered by bytes as Rust orders strings (SQLite's default; PostgreSQL: `COLLATE "C"`), for
//! the keys that page tokens and listings order by. Types are chosen to mean
//! the same on both: `BIGINT` (SQLite: INTEGER affinity, 64-bit), `DOUBLE PRECISION` (REAL, IEEE
//! double), `TEXT`. Booleans are `BIGINT` 0/1. Times are epoch milliseconds, except the
//! violation times (epoch seconds as doubles, the API's unit, which its page tokens carry).
//!
//! A statement that starts with `{postgres}` is for PostgreSQL only.
//!
//! Never edit a migration that has shipped: add the next one.

/// One migration.
pub(crate) struct Migration {
    /// 1, 2, … without gaps.
    pub version: i64,
    /// Recorded in `schema_migrations`.
    pub description: &'static str,
    /// Statements separated by `;` at the end of a line.
    pub sql: &'static str,
}

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "things, reports, violations, verification, datapoints, thresholds, leases",
        sql: r#"
-- Per-thing engine state, written with a versioned optimistic check.
CREATE TABLE things (
    thing          {key} PRIMARY KEY,
    state          TEXT NOT NULL,    -- the fleet Detect ThingState, JSON
    version        BIGINT NOT NULL,  -- 1 after the first report, +1 per recorded report
    first_seen_ms  BIGINT NOT NULL,  -- arrival time of the first report
    last_seen_ms   BIGINT NOT NULL,  -- latest arrival time
    last_report_ms BIGINT,           -- latest report time (report order, not arrival)
    report_count   BIGINT NOT NULL
);

-- One row per recorded report: (thing, report_id) recognises a redelivery.
CREATE TABLE reports (
    id             {id},
    thing          TEXT NOT NULL,
    report_id      BIGINT NOT NULL,
    report_time_ms BIGINT NOT NULL,
    received_ms    BIGINT NOT NULL,
    payload_bytes  BIGINT NOT NULL,
    UNIQUE (thing, report_id)
);
CREATE INDEX reports_by_time ON reports (report_time_ms);

-- ViolationEvents for all things; seq is the record order (the API's tie-break).
CREATE TABLE violation_events (
    seq            {id},
    violation_id   TEXT NOT NULL,
    thing          TEXT NOT NULL,
    profile        TEXT NOT NULL,
    behavior       TEXT NOT NULL,
    criteria_type  TEXT,             -- STATIC | STATISTICAL | MACHINE_LEARNING
    suppressed     BIGINT NOT NULL,  -- behavior.suppressAlerts == true
    event_type     TEXT NOT NULL,
    event_time     DOUBLE PRECISION NOT NULL,
    event          TEXT NOT NULL     -- the ViolationEvent, JSON, without verification
);
CREATE INDEX violation_events_by_time ON violation_events (event_time, seq);
CREATE INDEX violation_events_by_thing ON violation_events (thing, event_time);
CREATE INDEX violation_events_by_id ON violation_events (violation_id);

-- The engine's active violations per thing, replaced whenever a report changes them.
CREATE TABLE active_violations (
    violation_id   {key} PRIMARY KEY,
    thing          TEXT NOT NULL,
    profile        TEXT NOT NULL,
    behavior       TEXT NOT NULL,
    criteria_type  TEXT,
    suppressed     BIGINT NOT NULL,
    start_time     DOUBLE PRECISION NOT NULL,
    violation      TEXT NOT NULL     -- the ActiveViolation, JSON, without verification
);
CREATE INDEX active_violations_by_thing ON active_violations (thing);
CREATE INDEX active_violations_by_start ON active_violations (start_time, violation_id);

-- PutVerificationStateOnViolation.
CREATE TABLE verification (
    violation_id   TEXT PRIMARY KEY,
    state          TEXT NOT NULL,
    description    TEXT
);

-- The latest datapoint per (profile, behavior, thing): the population of a fleet threshold.
CREATE TABLE datapoints (
    profile        TEXT NOT NULL,
    behavior       TEXT NOT NULL,
    thing          TEXT NOT NULL,
    time_ms        BIGINT NOT NULL,
    value          DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (profile, behavior, thing)
);
CREATE INDEX datapoints_by_time ON datapoints (time_ms);

-- Computed fleet thresholds; value is NULL when the population was too small.
CREATE TABLE fleet_thresholds (
    profile        TEXT NOT NULL,
    behavior       TEXT NOT NULL,
    value          DOUBLE PRECISION,
    population     BIGINT NOT NULL,
    computed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (profile, behavior)
);

-- One holder per periodic job at a time, across instances.
CREATE TABLE leases (
    job            TEXT PRIMARY KEY,
    holder         TEXT NOT NULL,
    expires_ms     BIGINT NOT NULL
);
"#,
    },
    Migration {
        version: 2,
        description: "ingest counters",
        sql: r#"
-- What the ingest answered, per UTC minute, added to by every instance (status: reports/s,
-- rejects by code). name: received | accepted | recorded | dropped | rejected.<ErrorCode>.
CREATE TABLE ingest_counters (
    minute_ms      BIGINT NOT NULL,  -- start of the minute, epoch ms
    name           TEXT NOT NULL,
    count          BIGINT NOT NULL,
    PRIMARY KEY (minute_ms, name)
);
"#,
    },
    Migration {
        version: 3,
        description: "verification keyed by bytes, as active_violations (PostgreSQL)",
        sql: r#"
-- PostgreSQL: active_violations.violation_id is COLLATE "C", verification's is not, so the join
-- of a ListActiveViolations page could not use verification's key (every row of it read for
-- every violation of the page). An index in the same collation lets it. SQLite orders text by
-- bytes everywhere: nothing to do there.
{postgres} CREATE INDEX verification_by_key ON verification (violation_id COLLATE "C");
"#,
    },
];

/// The newest version this build knows.
pub(crate) fn known_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// A migration's statements for one engine.
pub(crate) fn statements(m: &Migration, postgres: bool) -> Vec<String> {
    let id = if postgres {
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    } else {
        "INTEGER PRIMARY KEY AUTOINCREMENT"
    };
    let text: String = m
        .sql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("{id}", id)
        .replace(
            "{key}",
            if postgres {
                "TEXT COLLATE \"C\""
            } else {
                "TEXT"
            },
        );
    text.split(";\n")
        .map(str::trim)
        .map(|s| s.trim_end_matches(';').trim())
        .filter_map(|s| match s.strip_prefix("{postgres}") {
            Some(pg) => postgres.then(|| pg.trim().to_owned()),
            None => Some(s.to_owned()),
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_consecutive_and_statements_split() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i64 + 1);
        }
        let s = statements(&MIGRATIONS[0], true);
        assert!(s.iter().all(|s| !s.contains('{') && !s.contains("--")));
        assert!(s[0].starts_with("CREATE TABLE things"));
        assert_eq!(s.len(), statements(&MIGRATIONS[0], false).len());
        // PostgreSQL-only statements.
        assert_eq!(
            statements(&MIGRATIONS[2], true),
            vec!["CREATE INDEX verification_by_key ON verification (violation_id COLLATE \"C\")"]
        );
        assert!(statements(&MIGRATIONS[2], false).is_empty());
    }
}
