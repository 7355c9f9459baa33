//! `violations active` over 100,000 active violations: the store's `list_active_violations`
//! (what the command runs), on SQLite and PostgreSQL, for the first page, the next page, and
//! each filter. The violations are written through the service's own path
//! (`Store::record_reports`, one thing per violation, 1,000 reports per transaction); 1 % of
//! them get a verification state.
//!
//! Run: `cargo bench -p defender-fleet --bench violations -- [--engine sqlite|postgres|both]
//! [--violations 100000] [--runs 21]`
//!
//! Printed per query: the median and the slowest of `--runs` runs (wall time, after one warm-up
//! run), and the page's size. PostgreSQL runs with fsync on (`benches/support`), after an
//! `ANALYZE` (as autovacuum would; `BENCH_NO_ANALYZE=1` skips it, `BENCH_EXPLAIN=1` prints the
//! plan of the profile filter).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use defender_agent::detect::fleet::FleetDetect;
use defender_agent::detect::query::ListActiveViolationsRequest;
use defender_agent::detect::{ActiveViolation, SecurityProfile, ValidationContext};
use defender_fleet::store::{Engine, RecordOutcome, ReportRecord, Settings, Store};

struct Args {
    engines: Vec<&'static str>,
    violations: usize,
    runs: usize,
}

fn args() -> Args {
    let mut a = Args {
        engines: vec!["sqlite", "postgres"],
        violations: 100_000,
        runs: 21,
    };
    // `cargo test --all-targets` runs this without `--bench`: a small run (criterion's test
    // mode), SQLite only.
    if !std::env::args().any(|a| a == "--bench") {
        a.engines = vec!["sqlite"];
        a.violations = 300;
        a.runs = 2;
    }
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--bench" => {}
            "--engine" => {
                a.engines = match v().as_str() {
                    "sqlite" => vec!["sqlite"],
                    "postgres" => vec!["postgres"],
                    "both" => vec!["sqlite", "postgres"],
                    o => panic!("--engine {o}: sqlite, postgres or both"),
                }
            }
            "--violations" => a.violations = v().parse().expect("--violations N"),
            "--runs" => a.runs = v().parse().expect("--runs N"),
            o => panic!("unknown argument {o}"),
        }
    }
    a
}

/// Two profiles; the violations alternate between a STATIC behavior of P, a suppressed STATIC
/// one of P and a STATISTICAL one of Q.
fn profiles() -> Vec<SecurityProfile> {
    let p: SecurityProfile = serde_json::from_str(
        r#"{"securityProfileName":"P","behaviors":[
        {"name":"Tcp","metric":"aws:listening-tcp-ports","criteria":{"comparisonOperator":"in-port-set","value":{"ports":[22,443]}}},
        {"name":"Quiet","metric":"aws:listening-udp-ports","suppressAlerts":true,"criteria":{"comparisonOperator":"in-port-set","value":{"ports":[53]}}}]}"#,
    )
    .unwrap();
    let q: SecurityProfile = serde_json::from_str(
        r#"{"securityProfileName":"Q","behaviors":[
        {"name":"InP90","metric":"aws:all-bytes-in","criteria":{"comparisonOperator":"less-than-equals","statisticalThreshold":{"statistic":"p90"},"durationSeconds":300}}]}"#,
    )
    .unwrap();
    vec![p, q]
}

fn violation(i: usize, profiles: &[SecurityProfile]) -> ActiveViolation {
    let (p, b) = match i % 3 {
        0 => (&profiles[0], &profiles[0].behaviors[0]),
        1 => (&profiles[0], &profiles[0].behaviors[1]),
        _ => (&profiles[1], &profiles[1].behaviors[0]),
    };
    let thing = format!("thing-{i:06}");
    let start_ms = 1_780_000_000_000 + (i as i64 % 50_000) * 1000;
    ActiveViolation {
        violation_id: defender_agent::detect::violation::violation_id(
            &thing,
            &p.security_profile_name,
            &b.name,
            start_ms,
            1,
        ),
        thing_name: thing,
        security_profile_name: p.security_profile_name.clone(),
        behavior: b.clone(),
        last_violation_value: None,
        violation_event_additional_info: None,
        verification_state: None,
        verification_state_description: None,
        last_violation_time: start_ms as f64 / 1000.0,
        violation_start_time: start_ms as f64 / 1000.0,
    }
}

async fn fill(store: &Store, n: usize, profiles: &[SecurityProfile]) {
    let fleet = FleetDetect::new(profiles, &ValidationContext::new(vec![], vec![]));
    let state = fleet.new_thing_state();
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let active: Vec<[ActiveViolation; 1]> =
            chunk.iter().map(|&i| [violation(i, profiles)]).collect();
        let records: Vec<ReportRecord> = active
            .iter()
            .map(|a| ReportRecord {
                thing: &a[0].thing_name,
                report_id: 1,
                report_time_ms: 1_780_000_000_000,
                received_ms: 1_780_000_000_000,
                payload_bytes: 100,
                expected_version: 0,
                state: &state,
                events: &[],
                active: Some(a),
                datapoints: &[],
            })
            .collect();
        let out = store.record_reports(&records).await.unwrap();
        assert!(out
            .iter()
            .all(|o| matches!(o, RecordOutcome::Recorded { .. })));
    }
    for i in (0..n).step_by(100) {
        let v = violation(i, profiles);
        store
            .put_verification_state(&v.violation_id, "TRUE_POSITIVE", Some("bench"))
            .await
            .unwrap();
    }
    println!(
        "  filled {n} active violations in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

async fn run(engine: &str, a: &Args) {
    let dir = tempfile::tempdir().unwrap();
    let pg = (engine == "postgres").then(support::Pg::start);
    let e = match &pg {
        Some(pg) => Engine::Postgres { url: pg.url() },
        None => Engine::sqlite_in(dir.path()),
    };
    let mut settings = Settings::new(e);
    settings.acquire_timeout = Duration::from_secs(30);
    let store = Store::open(settings).await.unwrap();
    println!("violations/{engine}: {} active violations", a.violations);
    let profiles = profiles();
    fill(&store, a.violations, &profiles).await;
    if engine == "postgres" {
        // What autovacuum does within a minute of such a load (the planner needs the row
        // counts); `BENCH_NO_ANALYZE=1` measures before it.
        if std::env::var_os("BENCH_NO_ANALYZE").is_none() {
            sqlx::raw_sql("ANALYZE active_violations; ANALYZE verification")
                .execute(store.pool())
                .await
                .unwrap();
        }
    }
    if engine == "postgres" && std::env::var_os("BENCH_EXPLAIN").is_some() {
        let plan: Vec<String> = sqlx::query_scalar(
            "EXPLAIN ANALYZE SELECT a.violation_id, a.violation, v.state, v.description \
             FROM active_violations a LEFT JOIN verification v ON v.violation_id = a.violation_id \
             WHERE a.profile = 'Q' ORDER BY a.start_time DESC, a.violation_id DESC LIMIT 251",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        println!("{}", plan.join("\n"));
    }
    let known: BTreeSet<String> = profiles
        .iter()
        .map(|p| p.security_profile_name.clone())
        .collect();
    let all = ListActiveViolationsRequest::default();
    let first = store.list_active_violations(&known, &all).await.unwrap();
    let token = first.next_token.clone().expect("a second page");
    let cases: Vec<(&str, ListActiveViolationsRequest)> = vec![
        ("first page (250)", all.clone()),
        (
            "next page",
            ListActiveViolationsRequest {
                next_token: Some(token),
                ..Default::default()
            },
        ),
        (
            "--thing-name",
            ListActiveViolationsRequest {
                thing_name: Some(format!("thing-{:06}", a.violations / 2)),
                ..Default::default()
            },
        ),
        (
            "--security-profile-name Q",
            ListActiveViolationsRequest {
                security_profile_name: Some("Q".into()),
                ..Default::default()
            },
        ),
        (
            "--behavior-criteria-type STATISTICAL",
            ListActiveViolationsRequest {
                behavior_criteria_type: Some("STATISTICAL".into()),
                ..Default::default()
            },
        ),
        (
            "--list-suppressed-alerts false",
            ListActiveViolationsRequest {
                list_suppressed_alerts: Some(false),
                ..Default::default()
            },
        ),
        (
            "--verification-state TRUE_POSITIVE (1 %)",
            ListActiveViolationsRequest {
                verification_state: Some("TRUE_POSITIVE".into()),
                ..Default::default()
            },
        ),
        (
            "--max-results 10",
            ListActiveViolationsRequest {
                max_results: Some(10),
                ..Default::default()
            },
        ),
    ];
    for (name, req) in cases {
        let _ = store.list_active_violations(&known, &req).await.unwrap();
        let mut times = Vec::with_capacity(a.runs);
        let mut size = 0;
        for _ in 0..a.runs.max(1) {
            let t = Instant::now();
            let r = store.list_active_violations(&known, &req).await.unwrap();
            times.push(t.elapsed());
            size = r.active_violations.len();
        }
        times.sort();
        println!(
            "  {name:<42} median {:>8.2} ms  max {:>8.2} ms  ({size} violations)",
            times[times.len() / 2].as_secs_f64() * 1000.0,
            times[times.len() - 1].as_secs_f64() * 1000.0
        );
    }
    store.close().await;
    drop(pg);
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for e in a.engines.clone() {
        rt.block_on(run(e, &a));
    }
}
