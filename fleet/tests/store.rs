//! The store on both engines: every case runs as `<case>::sqlite` and `<case>::postgres`
//! (a database of its own on the PostgreSQL server this binary starts; see `support`).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use defender_agent::detect::fleet::ThingState as EngineState;
use defender_agent::detect::query::{
    self, ListActiveViolationsRequest, ListViolationEventsRequest, RecordedEvent, VerificationMap,
};
use defender_agent::detect::{ActiveViolation, ViolationEvent};
use defender_fleet::store::{
    Datapoint, FleetThreshold, RecordOutcome, ReportRecord, Store, StoreError,
};
use serde_json::{json, Value};
use support::TestEngine;

/// Runs `case` on SQLite and on PostgreSQL, as two tests.
macro_rules! both {
    ($case:ident) => {
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(crate::support::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$case(crate::support::postgres(stringify!($case)).await).await
            }
        }
    };
}

async fn open(e: &TestEngine) -> Store {
    Store::open(e.settings.clone())
        .await
        .unwrap_or_else(|err| panic!("open {}: {err}", e.name))
}

fn behavior(name: &str, kind: &str, suppress: bool) -> Value {
    let criteria = match kind {
        "STATIC" => json!({"comparisonOperator": "greater-than", "value": {"count": 10},
                           "durationSeconds": 300}),
        "STATISTICAL" => json!({"comparisonOperator": "greater-than",
                                "statisticalThreshold": {"statistic": "p90"},
                                "durationSeconds": 300}),
        _ => json!({"mlDetectionConfig": {"confidenceLevel": "HIGH"}}),
    };
    let mut b = json!({"name": name, "metric": "aws:num-messages-sent", "criteria": criteria});
    if suppress {
        b["suppressAlerts"] = json!(true);
    }
    b
}

fn event(id: &str, thing: &str, profile: &str, b: &Value, kind: &str, time: f64) -> ViolationEvent {
    let mut e = json!({"violationId": id, "thingName": thing, "securityProfileName": profile,
                       "behavior": b, "violationEventType": kind, "violationEventTime": time});
    if kind != "alarm-invalidated" {
        e["metricValue"] = json!({"count": 15});
    }
    serde_json::from_value(e).expect("a ViolationEvent")
}

fn active(id: &str, thing: &str, profile: &str, b: &Value, start: f64) -> ActiveViolation {
    serde_json::from_value(json!({"violationId": id, "thingName": thing,
        "securityProfileName": profile, "behavior": b, "lastViolationValue": {"count": 15},
        "lastViolationTime": start + 300.0, "violationStartTime": start}))
    .expect("an ActiveViolation")
}

/// A report with a default engine state.
#[allow(clippy::too_many_arguments)]
async fn record(
    s: &Store,
    thing: &str,
    report_id: i64,
    expected_version: i64,
    events: &[ViolationEvent],
    active: Option<&[ActiveViolation]>,
    datapoints: &[Datapoint],
) -> Result<RecordOutcome, StoreError> {
    let state = EngineState::default();
    s.record_report(&ReportRecord {
        thing,
        report_id,
        report_time_ms: report_id * 1000,
        received_ms: report_id * 1000 + 250,
        payload_bytes: 100,
        expected_version,
        state: &state,
        events,
        active,
        datapoints,
    })
    .await
}

fn dp(profile: &str, behavior: &str, value: f64) -> Datapoint {
    Datapoint {
        profile: profile.into(),
        behavior: behavior.into(),
        value,
    }
}

/// The API error code of a failed call.
fn code<T: std::fmt::Debug>(r: Result<T, StoreError>) -> &'static str {
    match r {
        Err(StoreError::Api(a)) => a.code(),
        other => panic!("expected an API error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------

async fn migrations_are_idempotent_and_a_newer_schema_is_refused(e: TestEngine) {
    let s = open(&e).await;
    assert_eq!(s.schema_version().await.unwrap(), 3);
    assert_eq!(
        record(&s, "t1", 1000, 0, &[], None, &[]).await.unwrap(),
        RecordOutcome::Recorded { version: 1 }
    );
    s.close().await;
    // Opening again applies nothing and keeps the data.
    let s = open(&e).await;
    let s2 = open(&e).await;
    assert_eq!(s.schema_version().await.unwrap(), 3);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3);
    assert_eq!(s2.load_thing("t1").await.unwrap().unwrap().version, 1);
    s2.close().await;
    // A database from a newer build is refused, clearly.
    sqlx::query(
        "INSERT INTO schema_migrations (version, description, applied_at_ms) VALUES (99, 'x', 0)",
    )
    .execute(s.pool())
    .await
    .unwrap();
    s.close().await;
    let err = Store::open(e.settings.clone()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                known: 3
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("version 99") && msg.contains("upgrade defender-fleet"),
        "{msg}"
    );
}
both!(migrations_are_idempotent_and_a_newer_schema_is_refused);

async fn instances_starting_together_migrate_once(e: TestEngine) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let settings = e.settings.clone();
        tasks.push(tokio::spawn(async move { Store::open(settings).await }));
    }
    let mut stores = Vec::new();
    for t in tasks {
        stores.push(t.await.unwrap().unwrap_or_else(|err| panic!("open: {err}")));
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(stores[0].pool())
        .await
        .unwrap();
    assert_eq!(rows, 3, "one row per migration");
}
both!(instances_starting_together_migrate_once);

async fn a_redelivered_report_is_a_duplicate_and_writes_nothing(e: TestEngine) {
    let s = open(&e).await;
    let b = behavior("B", "STATIC", false);
    let ev = [event("v1", "t1", "P", &b, "in-alarm", 1000.0)];
    let r1 = record(&s, "t1", 1000, 0, &ev, None, &[dp("P", "S", 5.0)]).await;
    assert_eq!(r1.unwrap(), RecordOutcome::Recorded { version: 1 });
    // The same (thing, report_id) again — even with another value and the right version.
    let r2 = record(&s, "t1", 1000, 1, &ev, None, &[dp("P", "S", 50.0)]).await;
    assert_eq!(r2.unwrap(), RecordOutcome::Duplicate);
    // …and with a stale version (the redelivery went to another instance).
    let r3 = record(&s, "t1", 1000, 0, &ev, None, &[]).await;
    assert_eq!(r3.unwrap(), RecordOutcome::Duplicate);
    let c = s.counts().await.unwrap();
    assert_eq!((c.things, c.reports_total, c.reports_retained), (1, 1, 1));
    assert_eq!(c.violation_events, 1);
    assert_eq!(
        s.population("P", "S", 0).await.unwrap(),
        vec![("t1".to_string(), 5.0)]
    );
    let t = s.load_thing("t1").await.unwrap().unwrap();
    assert_eq!((t.version, t.last_report_ms), (1, Some(1_000_000)));
    // The same report id for another thing is another report.
    let r4 = record(&s, "t2", 1000, 0, &[], None, &[]).await;
    assert_eq!(r4.unwrap(), RecordOutcome::Recorded { version: 1 });
    let seen = s.things(None, 100).await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].thing, "t1");
    assert_eq!(seen[0].report_count, 1);
    assert_eq!(seen[0].first_seen_ms, 1_000_250);
    // Pages by name.
    let first = s.things(None, 1).await.unwrap();
    assert_eq!(first.len(), 1);
    let second = s.things(Some(&first[0].thing), 1).await.unwrap();
    assert_eq!(second[0].thing, "t2");
    assert!(s.things(Some("t2"), 1).await.unwrap().is_empty());
}
both!(a_redelivered_report_is_a_duplicate_and_writes_nothing);

async fn racing_writers_one_wins_the_other_conflicts_and_retries(e: TestEngine) {
    let s = open(&e).await;
    // A new thing: both writers expect no row.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for id in [1000, 1001] {
        let (s, barrier) = (s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            record(&s, "t1", id, 0, &[], None, &[]).await.unwrap()
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![
            RecordOutcome::Conflict,
            RecordOutcome::Recorded { version: 1 }
        ]
    );
    // The loser's report was not kept: it can retry after reloading.
    assert_eq!(s.counts().await.unwrap().reports_retained, 1);

    // Eight writers on one thing, each reloading and retrying on Conflict: all land, one
    // version step each, no report lost or counted twice.
    let n = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (s, barrier) = (s.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut conflicts = 0;
            loop {
                let v = s.load_thing("t1").await.unwrap().map_or(0, |t| t.version);
                match record(&s, "t1", 2000 + i as i64, v, &[], None, &[])
                    .await
                    .unwrap()
                {
                    RecordOutcome::Recorded { .. } => return conflicts,
                    RecordOutcome::Conflict => conflicts += 1,
                    RecordOutcome::Duplicate => panic!("not a duplicate"),
                }
            }
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let t = s.load_thing("t1").await.unwrap().unwrap();
    assert_eq!(t.version, 1 + n as i64);
    let c = s.counts().await.unwrap();
    assert_eq!(
        (c.reports_total, c.reports_retained),
        (1 + n as i64, 1 + n as i64)
    );
    eprintln!("{}: {conflicts} conflicts among {n} racing writers", e.name);
}
both!(racing_writers_one_wins_the_other_conflicts_and_retries);

async fn a_batch_commits_once_and_keeps_each_outcome(e: TestEngine) {
    fn rec<'a>(
        state: &'a EngineState,
        thing: &'a str,
        report_id: i64,
        expected_version: i64,
        events: &'a [ViolationEvent],
    ) -> ReportRecord<'a> {
        ReportRecord {
            thing,
            report_id,
            report_time_ms: report_id * 1000,
            received_ms: report_id * 1000,
            payload_bytes: 1,
            expected_version,
            state,
            events,
            active: None,
            datapoints: &[],
        }
    }
    let s = open(&e).await;
    record(&s, "old", 1000, 0, &[], None, &[]).await.unwrap();
    let st = EngineState::default();
    let b = behavior("B", "STATIC", false);
    let ev = [event("v1", "a", "P", &b, "in-alarm", 1000.0)];
    let batch = [
        rec(&st, "a", 1000, 0, &ev),   // new thing
        rec(&st, "old", 1000, 1, &[]), // redelivery
        rec(&st, "old", 1001, 0, &[]), // stale version
        rec(&st, "a", 1001, 1, &[]),   // the same thing again, after the first
        rec(&st, "b", 1000, 0, &[]),
    ];
    let out = s.record_reports(&batch).await.unwrap();
    assert_eq!(
        out,
        vec![
            RecordOutcome::Recorded { version: 1 },
            RecordOutcome::Duplicate,
            RecordOutcome::Conflict,
            RecordOutcome::Recorded { version: 2 },
            RecordOutcome::Recorded { version: 1 },
        ]
    );
    let c = s.counts().await.unwrap();
    // old: 1 report; a: 2; b: 1. The conflicting report left nothing behind.
    assert_eq!((c.things, c.reports_total, c.reports_retained), (3, 4, 4));
    assert_eq!(c.violation_events, 1);
    assert_eq!(s.load_thing("old").await.unwrap().unwrap().version, 1);
    assert!(s.record_reports(&[]).await.unwrap().is_empty());
}
both!(a_batch_commits_once_and_keeps_each_outcome);

/// The common batch (every report new, every state at its version) is written in a few
/// multi-row statements: the outcomes, versions, counters, active violations and the latest
/// datapoints are those of one report after the other.
async fn a_clean_batch_writes_what_report_by_report_writes(e: TestEngine) {
    let s = open(&e).await;
    for t in ["k0", "k1", "k2"] {
        record(&s, t, 1000, 0, &[], None, &[dp("P", "S", 1.0)])
            .await
            .unwrap();
    }
    let st = EngineState::default();
    let b = behavior("B", "STATIC", false);
    let act = [active("a1", "k1", "P", &b, 1000.0)];
    let d_old = [dp("P", "S", 7.0)];
    let d_new = [dp("P", "S", 8.0)];
    let rec = |thing: &'static str, report_id: i64, v: i64, d: &'static [Datapoint]| ReportRecord {
        thing,
        report_id,
        report_time_ms: report_id * 1000,
        received_ms: report_id * 1000 + 5,
        payload_bytes: 10,
        expected_version: v,
        state: &st,
        events: &[],
        active: None,
        datapoints: d,
    };
    let d_old: &'static [Datapoint] = Box::leak(Box::new(d_old));
    let d_new: &'static [Datapoint] = Box::leak(Box::new(d_new));
    let mut with_active = rec("k1", 1300, 1, &[]);
    with_active.active = Some(&act);
    let batch = [
        rec("k0", 1300, 1, d_new),
        with_active,
        rec("n0", 1300, 0, d_old),
        rec("k0", 1600, 2, d_old), // k0 again: chained on the first; an older value?
        rec("n0", 1600, 1, d_new), // n0 again, new in this batch
        rec("k2", 1300, 1, &[]),
    ];
    let out = s.record_reports(&batch).await.unwrap();
    assert_eq!(
        out,
        vec![
            RecordOutcome::Recorded { version: 2 },
            RecordOutcome::Recorded { version: 2 },
            RecordOutcome::Recorded { version: 1 },
            RecordOutcome::Recorded { version: 3 },
            RecordOutcome::Recorded { version: 2 },
            RecordOutcome::Recorded { version: 2 },
        ]
    );
    let c = s.counts().await.unwrap();
    assert_eq!((c.things, c.reports_total, c.reports_retained), (4, 9, 9));
    assert_eq!(c.active_violations, 1);
    let k0 = s.load_thing("k0").await.unwrap().unwrap();
    assert_eq!((k0.version, k0.last_report_ms), (3, Some(1_600_000)));
    let n0 = s.load_thing("n0").await.unwrap().unwrap();
    assert_eq!((n0.version, n0.last_report_ms), (2, Some(1_600_000)));
    let seen = s.things(None, 10).await.unwrap();
    let n0 = seen.iter().find(|t| t.thing == "n0").unwrap();
    assert_eq!(
        (n0.first_seen_ms, n0.last_seen_ms, n0.report_count),
        (1_300_005, 1_600_005, 2)
    );
    // The latest datapoint per thing: k0's at 1600 s (7.0), n0's at 1600 s (8.0).
    let pop = s.population("P", "S", 0).await.unwrap();
    assert_eq!(
        pop,
        vec![
            ("k0".to_owned(), 7.0),
            ("k1".to_owned(), 1.0),
            ("k2".to_owned(), 1.0),
            ("n0".to_owned(), 8.0)
        ]
    );
}
both!(a_clean_batch_writes_what_report_by_report_writes);

/// A thing's second report of a batch was evaluated on the first's state: when the first is
/// not recorded (a duplicate here), the second is a conflict even if the stored version now
/// matches what it expects, and leaves nothing behind.
async fn a_report_after_an_unrecorded_one_of_its_thing_is_a_conflict(e: TestEngine) {
    let s = open(&e).await;
    record(&s, "t", 1000, 0, &[], None, &[]).await.unwrap();
    record(&s, "t", 1300, 1, &[], None, &[]).await.unwrap();
    let st = EngineState::default();
    let rec = |report_id: i64, v: i64| ReportRecord {
        thing: "t",
        report_id,
        report_time_ms: report_id * 1000,
        received_ms: report_id * 1000,
        payload_bytes: 10,
        expected_version: v,
        state: &st,
        events: &[],
        active: None,
        datapoints: &[],
    };
    // Stored: version 2. The batch thought it was 1: the redelivered 1300 and then 1600 on it.
    let out = s
        .record_reports(&[rec(1300, 1), rec(1600, 2)])
        .await
        .unwrap();
    assert_eq!(out, vec![RecordOutcome::Duplicate, RecordOutcome::Conflict]);
    let c = s.counts().await.unwrap();
    assert_eq!((c.reports_total, c.reports_retained), (2, 2));
    assert_eq!(s.load_thing("t").await.unwrap().unwrap().version, 2);
    // The same report alone, on the stored version, is recorded.
    assert_eq!(
        s.record_reports(&[rec(1600, 2)]).await.unwrap(),
        vec![RecordOutcome::Recorded { version: 3 }]
    );
}
both!(a_report_after_an_unrecorded_one_of_its_thing_is_a_conflict);

/// Events for the list tests, in record order (times with ties, three things, two profiles,
/// every criteria type, suppressed or not).
fn sample_events() -> Vec<ViolationEvent> {
    let kinds = ["STATIC", "STATISTICAL", "ML"];
    let mut out = Vec::new();
    for i in 0..30 {
        let thing = format!("thing-{}", i % 3);
        let profile = if i % 4 == 0 { "P2" } else { "P1" };
        let kind = kinds[i % 3];
        let b = behavior(&format!("B{}", i % 5), kind, i % 7 == 0);
        let etype = ["in-alarm", "alarm-cleared", "alarm-invalidated"][i % 3];
        // Ties: two events per time.
        let time = 1_700_000_000.0 + (i / 2) as f64 * 300.0;
        out.push(event(
            &format!("v{:02}", i % 12),
            &thing,
            profile,
            &b,
            etype,
            time,
        ));
    }
    out
}

fn sample_active() -> Vec<ActiveViolation> {
    let kinds = ["STATIC", "STATISTICAL", "ML"];
    (0..17)
        .map(|i| {
            let thing = format!("thing-{}", i % 3);
            let profile = if i % 4 == 0 { "P2" } else { "P1" };
            let b = behavior(&format!("B{}", i % 5), kinds[i % 3], i % 5 == 0);
            // Ties on start time; ids ordered differently from the record order.
            let start = 1_700_000_000.0 + (i / 3) as f64 * 300.0;
            active(&format!("a{:02}", (i * 7) % 17), &thing, profile, &b, start)
        })
        .collect()
}

async fn violation_lists_match_the_agents_queries_across_pages(e: TestEngine) {
    let s = open(&e).await;
    let events = sample_events();
    let act = sample_active();
    // Recorded one report per event, active violations per thing on the last report.
    let mut model = Vec::new();
    let mut version = std::collections::BTreeMap::<String, i64>::new();
    for (i, ev) in events.iter().enumerate() {
        let v = version.entry(ev.thing_name.clone()).or_insert(0);
        let r = record(
            &s,
            &ev.thing_name,
            1000 + i as i64,
            *v,
            std::slice::from_ref(ev),
            None,
            &[],
        )
        .await
        .unwrap();
        assert!(matches!(r, RecordOutcome::Recorded { .. }));
        *v += 1;
        model.push(RecordedEvent {
            seq: i as u64 + 1,
            event: ev.clone(),
        });
    }
    for thing in ["thing-0", "thing-1", "thing-2"] {
        let mine: Vec<ActiveViolation> = act
            .iter()
            .filter(|a| a.thing_name == thing)
            .cloned()
            .collect();
        let v = version[thing];
        let r = record(&s, thing, 5000, v, &[], Some(&mine), &[])
            .await
            .unwrap();
        assert_eq!(r, RecordOutcome::Recorded { version: v + 1 });
    }
    // Verification states, through the store and in the model.
    let mut vmap = VerificationMap::new();
    let known: BTreeSet<String> = events
        .iter()
        .map(|e| e.violation_id.clone())
        .chain(act.iter().map(|a| a.violation_id.clone()))
        .collect();
    for (id, state, desc) in [
        ("v01", "TRUE_POSITIVE", Some("seen")),
        ("v05", "FALSE_POSITIVE", None),
        ("a03", "BENIGN_POSITIVE", Some("lab")),
    ] {
        s.put_verification_state(id, state, desc).await.unwrap();
        query::put_verification_state(&mut vmap, &known, id, state, desc).unwrap();
    }
    let profiles: BTreeSet<String> = ["P1".to_string(), "P2".to_string()].into();

    let all = |start: f64, end: f64| ListViolationEventsRequest {
        start_time: start,
        end_time: end,
        ..Default::default()
    };
    let event_requests = vec![
        all(0.0, 2e9),
        all(1_700_000_600.0, 1_700_002_400.0),
        ListViolationEventsRequest {
            thing_name: Some("thing-1".into()),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            security_profile_name: Some("P2".into()),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            behavior_criteria_type: Some("STATISTICAL".into()),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            behavior_criteria_type: Some("MACHINE_LEARNING".into()),
            list_suppressed_alerts: Some(false),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            list_suppressed_alerts: Some(true),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            verification_state: Some("UNKNOWN".into()),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            verification_state: Some("TRUE_POSITIVE".into()),
            ..all(0.0, 2e9)
        },
        ListViolationEventsRequest {
            thing_name: Some("nobody".into()),
            ..all(0.0, 2e9)
        },
    ];
    for base in event_requests {
        for page in [1, 4, 250] {
            let mut req = ListViolationEventsRequest {
                max_results: Some(page),
                ..base.clone()
            };
            let mut pages = 0;
            let mut seen = 0;
            loop {
                let want = query::list_violation_events(&model, &vmap, &req).unwrap();
                let got = s.list_violation_events(&req).await.unwrap();
                assert_eq!(got, want, "{} events {req:?}", e.name);
                pages += 1;
                seen += got.violation_events.len();
                match got.next_token {
                    Some(t) => req.next_token = Some(t),
                    None => break,
                }
                assert!(pages <= 31, "paging does not end");
            }
            let total = query::list_violation_events(
                &model,
                &vmap,
                &ListViolationEventsRequest {
                    max_results: None,
                    next_token: None,
                    ..base.clone()
                },
            )
            .unwrap()
            .violation_events
            .len();
            assert_eq!(seen, total);
        }
    }

    let active_requests = vec![
        ListActiveViolationsRequest::default(),
        ListActiveViolationsRequest {
            thing_name: Some("thing-2".into()),
            ..Default::default()
        },
        ListActiveViolationsRequest {
            security_profile_name: Some("P1".into()),
            behavior_criteria_type: Some("STATIC".into()),
            ..Default::default()
        },
        ListActiveViolationsRequest {
            list_suppressed_alerts: Some(true),
            ..Default::default()
        },
        ListActiveViolationsRequest {
            verification_state: Some("BENIGN_POSITIVE".into()),
            ..Default::default()
        },
        ListActiveViolationsRequest {
            verification_state: Some("UNKNOWN".into()),
            ..Default::default()
        },
    ];
    for base in active_requests {
        for page in [1, 3, 250] {
            let mut req = ListActiveViolationsRequest {
                max_results: Some(page),
                ..base.clone()
            };
            let mut pages = 0;
            loop {
                let want = query::list_active_violations(&act, &profiles, &vmap, &req).unwrap();
                let got = s.list_active_violations(&profiles, &req).await.unwrap();
                assert_eq!(got, want, "{} active {req:?}", e.name);
                pages += 1;
                match got.next_token {
                    Some(t) => req.next_token = Some(t),
                    None => break,
                }
                assert!(pages <= 18, "paging does not end");
            }
        }
    }

    // The agent's errors, unchanged.
    let p1 = s
        .list_violation_events(&ListViolationEventsRequest {
            max_results: Some(2),
            ..all(0.0, 2e9)
        })
        .await
        .unwrap();
    let tok = p1.next_token.unwrap();
    let reused = ListViolationEventsRequest {
        next_token: Some(tok),
        thing_name: Some("thing-0".into()),
        ..all(0.0, 2e9)
    };
    assert_eq!(
        code(s.list_violation_events(&reused).await),
        "InvalidRequestException"
    );
    let bad_token = ListViolationEventsRequest {
        next_token: Some("zz".into()),
        ..all(0.0, 2e9)
    };
    assert_eq!(
        code(s.list_violation_events(&bad_token).await),
        "InvalidRequestException"
    );
    assert_eq!(
        code(s.list_violation_events(&all(10.0, 5.0)).await),
        "InvalidRequestException"
    );
    let too_many = ListViolationEventsRequest {
        max_results: Some(251),
        ..all(0.0, 1.0)
    };
    assert_eq!(
        code(s.list_violation_events(&too_many).await),
        "InvalidRequestException"
    );
    let unknown = ListActiveViolationsRequest {
        security_profile_name: Some("Nope".into()),
        ..Default::default()
    };
    assert_eq!(
        code(s.list_active_violations(&profiles, &unknown).await),
        "ResourceNotFoundException"
    );
    assert_eq!(
        code(
            s.put_verification_state("nope", "TRUE_POSITIVE", None)
                .await
        ),
        "InvalidRequestException"
    );
    assert_eq!(
        code(s.put_verification_state("v01", "MAYBE", None).await),
        "InvalidRequestException"
    );
    // Omitting the description removes it.
    s.put_verification_state("v01", "TRUE_POSITIVE", None)
        .await
        .unwrap();
    let got = s
        .list_violation_events(&ListViolationEventsRequest {
            verification_state: Some("TRUE_POSITIVE".into()),
            ..all(0.0, 2e9)
        })
        .await
        .unwrap();
    assert!(!got.violation_events.is_empty());
    assert!(got
        .violation_events
        .iter()
        .all(|e| e.violation_id == "v01" && e.verification_state_description.is_none()));
}
both!(violation_lists_match_the_agents_queries_across_pages);

async fn active_violations_are_replaced_per_thing(e: TestEngine) {
    let s = open(&e).await;
    let b = behavior("B", "STATIC", false);
    let a1 = [
        active("x1", "t1", "P", &b, 1000.0),
        active("x2", "t1", "P", &b, 1300.0),
    ];
    let a2 = [active("y1", "t2", "P", &b, 1000.0)];
    record(&s, "t1", 1, 0, &[], Some(&a1), &[]).await.unwrap();
    record(&s, "t2", 1, 0, &[], Some(&a2), &[]).await.unwrap();
    // None: unchanged.
    record(&s, "t1", 2, 1, &[], None, &[]).await.unwrap();
    let profiles: BTreeSet<String> = ["P".to_string()].into();
    let ids = |r: defender_agent::detect::query::ListActiveViolationsResponse| -> Vec<String> {
        r.active_violations
            .into_iter()
            .map(|a| a.violation_id)
            .collect()
    };
    let req = ListActiveViolationsRequest::default();
    assert_eq!(
        ids(s.list_active_violations(&profiles, &req).await.unwrap()),
        ["x2", "y1", "x1"]
    );
    // Some(list): replaces t1's, t2's untouched.
    record(&s, "t1", 3, 2, &[], Some(&a1[1..]), &[])
        .await
        .unwrap();
    assert_eq!(
        ids(s.list_active_violations(&profiles, &req).await.unwrap()),
        ["x2", "y1"]
    );
    record(&s, "t1", 4, 3, &[], Some(&[]), &[]).await.unwrap();
    assert_eq!(
        ids(s.list_active_violations(&profiles, &req).await.unwrap()),
        ["y1"]
    );
    assert_eq!(s.counts().await.unwrap().active_violations, 1);
}
both!(active_violations_are_replaced_per_thing);

async fn one_lease_holder_per_period(e: TestEngine) {
    let s = open(&e).await;
    let ttl = 300_000;
    assert!(s
        .try_lease("thresholds", "a", 1_000_000, ttl)
        .await
        .unwrap());
    assert!(!s
        .try_lease("thresholds", "b", 1_000_000, ttl)
        .await
        .unwrap());
    assert!(!s
        .try_lease("thresholds", "b", 1_299_999, ttl)
        .await
        .unwrap());
    // The holder renews; another job is independent.
    assert!(s
        .try_lease("thresholds", "a", 1_100_000, ttl)
        .await
        .unwrap());
    assert!(s.try_lease("retention", "b", 1_100_000, ttl).await.unwrap());
    assert!(!s
        .try_lease("thresholds", "b", 1_399_999, ttl)
        .await
        .unwrap());
    // Expired: the next comer takes it, the old holder no longer has it.
    assert!(s
        .try_lease("thresholds", "b", 1_400_000, ttl)
        .await
        .unwrap());
    assert!(!s
        .try_lease("thresholds", "a", 1_400_001, ttl)
        .await
        .unwrap());
    // Released: free at once (only by its holder).
    s.release_lease("thresholds", "a").await.unwrap();
    assert!(!s
        .try_lease("thresholds", "a", 1_400_002, ttl)
        .await
        .unwrap());
    s.release_lease("thresholds", "b").await.unwrap();
    assert!(s
        .try_lease("thresholds", "a", 1_400_003, ttl)
        .await
        .unwrap());

    // Ten instances racing for a fresh period, each with its own store (own pool): one wins.
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(open(&e).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(10));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let s = stores[i % stores.len()].clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            s.try_lease("race", &format!("holder-{i}"), 5_000_000, ttl)
                .await
                .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1);
}
both!(one_lease_holder_per_period);

async fn retention_purges_old_rows_in_batches(e: TestEngine) {
    let s = open(&e).await;
    let b = behavior("B", "STATIC", false);
    // Reports 1000..1009 s (old) and 2000..2004 s (new); one event per report at its time.
    for (v, id) in (1000..1010).chain(2000..2005).enumerate() {
        let ev = [event(
            &format!("v{id}"),
            "t1",
            "P",
            &b,
            "in-alarm",
            id as f64,
        )];
        let r = record(&s, "t1", id, v as i64, &ev, None, &[dp("P", "B", 1.0)])
            .await
            .unwrap();
        assert!(matches!(r, RecordOutcome::Recorded { .. }));
    }
    record(&s, "t2", 1005, 0, &[], None, &[dp("P", "B", 2.0)])
        .await
        .unwrap();
    s.put_verification_state("v1001", "TRUE_POSITIVE", Some("old"))
        .await
        .unwrap();
    s.put_verification_state("v2001", "TRUE_POSITIVE", Some("new"))
        .await
        .unwrap();
    let before = s.counts().await.unwrap();
    assert_eq!((before.reports_retained, before.violation_events), (16, 15));

    let p = s.purge_older_than(1_500_000, 3).await.unwrap();
    assert_eq!(
        (p.events, p.reports, p.datapoints, p.verifications),
        (10, 11, 1, 1)
    );
    let after = s.counts().await.unwrap();
    assert_eq!((after.reports_retained, after.violation_events), (5, 5));
    // Totals and things stay; the newest datapoint of t1 stays, t2's old one went.
    assert_eq!((after.things, after.reports_total), (2, 16));
    assert_eq!(
        s.population("P", "B", 0).await.unwrap(),
        vec![("t1".to_string(), 1.0)]
    );
    let all = ListViolationEventsRequest {
        start_time: 0.0,
        end_time: 1e10,
        ..Default::default()
    };
    let left = s
        .list_violation_events(&all)
        .await
        .unwrap()
        .violation_events;
    assert_eq!(left.len(), 5);
    assert!(left.iter().all(|e| e.violation_event_time >= 1500.0));
    assert!(left
        .iter()
        .any(|e| e.verification_state_description.as_deref() == Some("new")));
    // Nothing left to purge.
    assert_eq!(
        s.purge_older_than(1_500_000, 3).await.unwrap(),
        Default::default()
    );
    // Retention from the settings (14 days by default) keeps everything recent.
    assert_eq!(
        s.purge_expired(2_010_000).await.unwrap(),
        Default::default()
    );
}
both!(retention_purges_old_rows_in_batches);

async fn thresholds_population_and_counts(e: TestEngine) {
    let s = open(&e).await;
    for (i, thing) in ["a", "b", "c"].iter().enumerate() {
        record(
            &s,
            thing,
            1000,
            0,
            &[],
            None,
            &[dp("P", "S", i as f64), dp("P", "T", 9.0)],
        )
        .await
        .unwrap();
    }
    // A late (older) report never replaces a newer datapoint; a newer one does.
    record(&s, "a", 900, 1, &[], None, &[dp("P", "S", 100.0)])
        .await
        .unwrap();
    record(&s, "b", 1100, 1, &[], None, &[dp("P", "S", 7.0)])
        .await
        .unwrap();
    let pop = s.population("P", "S", 0).await.unwrap();
    assert_eq!(
        pop,
        vec![("a".into(), 0.0), ("b".into(), 7.0), ("c".into(), 2.0)]
    );
    assert_eq!(
        s.population("P", "S", 1_050_000).await.unwrap(),
        vec![("b".into(), 7.0)]
    );
    // last_report_ms keeps the latest report time, not the latest arrival.
    assert_eq!(
        s.load_thing("a").await.unwrap().unwrap().last_report_ms,
        Some(1_000_000)
    );

    let t = |behavior: &str, value: Option<f64>, population: i64, at: i64| FleetThreshold {
        profile: "P".into(),
        behavior: behavior.into(),
        value,
        population,
        computed_at_ms: at,
    };
    s.upsert_threshold(&t("S", Some(7.0), 3, 10)).await.unwrap();
    s.upsert_threshold(&t("T", None, 3, 10)).await.unwrap();
    s.upsert_threshold(&t("S", Some(2.5), 12, 20))
        .await
        .unwrap();
    assert_eq!(
        s.thresholds().await.unwrap(),
        vec![t("S", Some(2.5), 12, 20), t("T", None, 3, 10)]
    );
    let c = s.counts().await.unwrap();
    assert_eq!((c.things, c.reports_total), (3, 5));
    assert!(c.size_bytes > 0, "{c:?}");
    assert!(support::sqlite_path(&e).is_none_or(|p| p.is_file()));
}
both!(thresholds_population_and_counts);

async fn a_corrupt_state_is_an_error_naming_the_thing(e: TestEngine) {
    let s = open(&e).await;
    record(&s, "sensor-7", 1000, 0, &[], None, &[])
        .await
        .unwrap();
    sqlx::query("UPDATE things SET state = '{not json' WHERE thing = 'sensor-7'")
        .execute(s.pool())
        .await
        .unwrap();
    let err = s.load_thing("sensor-7").await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(!err.is_unavailable());
    assert!(err.to_string().contains("\"sensor-7\""), "{err}");
    // Other things are unaffected; an unknown thing is None.
    assert!(s.load_thing("other").await.unwrap().is_none());
    // A corrupt stored event is an error too, not a panic.
    let b = behavior("B", "STATIC", false);
    let ev = [event("v1", "t1", "P", &b, "in-alarm", 1000.0)];
    record(&s, "t1", 1000, 0, &ev, None, &[]).await.unwrap();
    sqlx::query("UPDATE violation_events SET event = '[]'")
        .execute(s.pool())
        .await
        .unwrap();
    let all = ListViolationEventsRequest {
        start_time: 0.0,
        end_time: 1e10,
        ..Default::default()
    };
    let err = s.list_violation_events(&all).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}
both!(a_corrupt_state_is_an_error_naming_the_thing);

async fn the_engine_state_round_trips(e: TestEngine) {
    use defender_agent::detect::fleet::FleetDetect;
    use defender_agent::detect::{DeviceReport, NetworkDeltas, SecurityProfile, ValidationContext};
    let s = open(&e).await;
    let profile: SecurityProfile = serde_json::from_value(json!({
        "securityProfileName": "P",
        "behaviors": [{"name": "B1", "metric": "aws:all-bytes-out",
            "criteria": {"comparisonOperator": "less-than-equals", "value": {"count": 10},
                         "durationSeconds": 300, "consecutiveDatapointsToAlarm": 1}}]
    }))
    .unwrap();
    let ctx = ValidationContext::default();
    let fleet = FleetDetect::new(std::slice::from_ref(&profile), &ctx);
    let mut state = fleet.new_thing_state();
    let report = DeviceReport {
        network: Some(NetworkDeltas {
            bytes_in: 1,
            bytes_out: 15,
            packets_in: 1,
            packets_out: 1,
        }),
        ..Default::default()
    };
    let emitted = fleet.evaluate_report(&mut state, "t1", &report, 300_000);
    let events: Vec<ViolationEvent> = emitted.iter().map(|e| e.event.clone()).collect();
    assert_eq!(events.len(), 1);
    let act = fleet.active_violations(&state, "t1");
    let r = s
        .record_report(&ReportRecord {
            thing: "t1",
            report_id: 300,
            report_time_ms: 300_000,
            received_ms: 300_100,
            payload_bytes: 321,
            expected_version: 0,
            state: &state,
            events: &events,
            active: Some(&act),
            datapoints: &[],
        })
        .await
        .unwrap();
    assert_eq!(r, RecordOutcome::Recorded { version: 1 });
    let loaded = s.load_thing("t1").await.unwrap().unwrap();
    assert_eq!(loaded.state, state);
    // A fresh FleetDetect (another instance, a restart) continues from the stored state.
    let restored = FleetDetect::new(&[profile], &ctx);
    assert_eq!(restored.active_violations(&loaded.state, "t1"), act);
    let profiles: BTreeSet<String> = ["P".to_string()].into();
    let listed = s
        .list_active_violations(&profiles, &ListActiveViolationsRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.active_violations, act);
}
both!(the_engine_state_round_trips);

// ---------------------------------------------------------------------------------------------
// Faults.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_unavailable_and_back_works_again() {
    // Its own server: stopping the shared one would break the other tests.
    let server = support::PgServer::start();
    let e = support::postgres_on(&server, "down").await;
    let s = open(&e).await;
    assert_eq!(
        record(&s, "t1", 1000, 0, &[], None, &[]).await.unwrap(),
        RecordOutcome::Recorded { version: 1 }
    );
    server.stop();
    let err = record(&s, "t1", 1001, 1, &[], None, &[]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(s.load_thing("t1").await.unwrap_err().is_unavailable());
    assert!(s.counts().await.unwrap_err().is_unavailable());
    // Opening while down is Unavailable too.
    let err = Store::open(e.settings.clone()).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    server.restart();
    // The pool replaces its dead connections: the retried report lands, nothing was lost.
    assert_eq!(
        record(&s, "t1", 1001, 1, &[], None, &[]).await.unwrap(),
        RecordOutcome::Recorded { version: 2 }
    );
    assert_eq!(s.load_thing("t1").await.unwrap().unwrap().version, 2);
    assert_eq!(s.counts().await.unwrap().reports_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_locked_past_the_busy_timeout_is_unavailable() {
    use sqlx::Connection;
    let mut e = support::sqlite();
    e.settings.busy_timeout = std::time::Duration::from_millis(200);
    let s = open(&e).await;
    record(&s, "t1", 1000, 0, &[], None, &[]).await.unwrap();
    // Another process holds the write lock.
    let path = support::sqlite_path(&e).unwrap().to_owned();
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let err = record(&s, "t1", 1001, 1, &[], None, &[]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // Readers still read (WAL).
    assert_eq!(s.load_thing("t1").await.unwrap().unwrap().version, 1);
    sqlx::raw_sql("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(
        record(&s, "t1", 1001, 1, &[], None, &[]).await.unwrap(),
        RecordOutcome::Recorded { version: 2 }
    );
}

#[tokio::test]
async fn bad_settings_are_config_errors() {
    use defender_fleet::store::{Engine, Settings};
    let err = Store::open(Settings::new(Engine::Postgres {
        url: "mysql://x".into(),
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let err = Store::open(Settings::new(Engine::Sqlite { path: "".into() }))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let err = Store::open(Settings::new(Engine::Sqlite {
        path: "/nonexistent-dir/fleet.db".into(),
    }))
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent-dir/fleet.db"),
        "{err}"
    );
}
