//! What a fleet store holds after a run, read through the store's own queries
//! (`defender_fleet::store`), all pages: things with their report counts, the counts of
//! `status`, every violation event and every active violation (as their JSON, sorted, so two
//! runs compare with `==`).

use std::collections::BTreeSet;

use defender_agent::detect::query::{ListActiveViolationsRequest, ListViolationEventsRequest};
use defender_agent::detect::{ActiveViolation, ViolationEvent};
use defender_fleet::store::{Counts, Store, ThingSeen};

/// A statistical behavior's stored datapoints: (profile, behavior) and (thing, value) by thing.
pub type Datapoints = ((String, String), Vec<(String, f64)>);

/// A store's content.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every thing, by name.
    pub things: Vec<ThingSeen>,
    /// `status` counts.
    pub counts: Counts,
    /// Every violation event, oldest first.
    pub events: Vec<ViolationEvent>,
    /// Every active violation.
    pub active: Vec<ActiveViolation>,
    /// Per statistical behavior asked for, (profile, behavior) → the stored datapoints (the
    /// latest per thing: the thresholds' population, all times), by thing.
    pub datapoints: Vec<Datapoints>,
}

impl Snapshot {
    /// Reads everything (`profiles`: the profiles loaded, for the active violations query;
    /// `statistical`: the (profile, behavior) pairs whose datapoints to read).
    pub async fn read(store: &Store, profiles: &[&str], statistical: &[(&str, &str)]) -> Snapshot {
        let mut things = Vec::new();
        loop {
            let page = store
                .things(things.last().map(|t: &ThingSeen| t.thing.as_str()), 500)
                .await
                .expect("things");
            let done = page.len() < 500;
            things.extend(page);
            if done {
                break;
            }
        }
        let mut events = Vec::new();
        let mut req = ListViolationEventsRequest {
            start_time: 0.0,
            end_time: 4_000_000_000.0,
            ..Default::default()
        };
        loop {
            let page = store.list_violation_events(&req).await.expect("events");
            events.extend(page.violation_events);
            match page.next_token {
                Some(t) => req.next_token = Some(t),
                None => break,
            }
        }
        events.reverse();
        let known: BTreeSet<String> = profiles.iter().map(|p| p.to_string()).collect();
        let mut active = Vec::new();
        let mut req = ListActiveViolationsRequest::default();
        loop {
            let page = store
                .list_active_violations(&known, &req)
                .await
                .expect("active violations");
            active.extend(page.active_violations);
            match page.next_token {
                Some(t) => req.next_token = Some(t),
                None => break,
            }
        }
        active.sort_by(|a, b| a.violation_id.cmp(&b.violation_id));
        let mut datapoints = Vec::new();
        for (p, b) in statistical {
            let d = store.population(p, b, 0).await.expect("datapoints");
            datapoints.push(((p.to_string(), b.to_string()), d));
        }
        Snapshot {
            things,
            counts: store.counts().await.expect("counts"),
            events,
            active,
            datapoints,
        }
    }

    /// The events as JSON lines, sorted (comparable across runs).
    pub fn event_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .events
            .iter()
            .map(|e| serde_json::to_string(e).expect("an event serializes"))
            .collect();
        v.sort();
        v
    }

    /// The active violations as JSON lines, sorted.
    pub fn active_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .active
            .iter()
            .map(|a| serde_json::to_string(a).expect("a violation serializes"))
            .collect();
        v.sort();
        v
    }

    /// (thing, behavior) of each active violation, sorted.
    pub fn active_pairs(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .active
            .iter()
            .map(|a| (a.thing_name.clone(), a.behavior.name.clone()))
            .collect();
        v.sort();
        v
    }
}
