//! ListViolationEvents, ListActiveViolations and PutVerificationStateOnViolation over the
//! store, with the agent's semantics by construction: the agent's own functions
//! (`defender_agent::detect::query`) check the request (ranges, enums, the token and its filter
//! binding: same errors, same messages), and they also build the page and its token, from the
//! rows that SQL selected with the same filters, in the same order, after the token's position,
//! one more than the page size. SQL does the filtering and the keyset paging (indexes on
//! `(event_time, seq)` and `(start_time, violation_id)`), so a page costs one indexed query
//! whatever the store holds.

use std::collections::BTreeSet;

use defender_agent::detect::query::{
    self, ListActiveViolationsRequest, ListActiveViolationsResponse, ListViolationEventsRequest,
    ListViolationEventsResponse, RecordedEvent, VerificationMap,
};
use defender_agent::detect::violation::VerificationState;
use defender_agent::detect::{ActiveViolation, ApiError, ViolationEvent};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Result, Store, StoreError};

/// The page token's position, read by the agent's own decoder (the agent's query functions have
/// already checked the token and its filter binding when this runs).
fn token_position(token: &str) -> Result<(f64, String)> {
    query::token_position(token).map_err(StoreError::Api)
}

fn vstate_text(s: VerificationState) -> &'static str {
    match s {
        VerificationState::FalsePositive => "FALSE_POSITIVE",
        VerificationState::BenignPositive => "BENIGN_POSITIVE",
        VerificationState::TruePositive => "TRUE_POSITIVE",
        VerificationState::Unknown => "UNKNOWN",
    }
}

/// Reads the verification columns (`state`, `description` at `at`, `at + 1`) into `map`.
fn read_verification(row: &AnyRow, at: usize, id: &str, map: &mut VerificationMap) -> Result<()> {
    let what = || format!("verification state of violation {id}");
    let state: Option<String> = row
        .try_get(at)
        .map_err(|e| StoreError::corrupt(what(), e))?;
    let desc: Option<String> = row
        .try_get(at + 1)
        .map_err(|e| StoreError::corrupt(what(), e))?;
    if let Some(s) = state {
        let parsed = VerificationState::parse(&s)
            .ok_or_else(|| StoreError::corrupt(what(), format!("unknown state {s:?}")))?;
        map.insert(id.to_owned(), (parsed, desc));
    }
    Ok(())
}

fn page_size(m: Option<i64>) -> i64 {
    // Already checked to be 1..=250 by the agent's function.
    m.unwrap_or(250).clamp(1, 250)
}

impl Store {
    /// ListViolationEvents for the fleet (newest first, `seq` breaking ties, later first).
    pub async fn list_violation_events(
        &self,
        req: &ListViolationEventsRequest,
    ) -> Result<ListViolationEventsResponse> {
        query::list_violation_events(&[], &VerificationMap::new(), req)?;
        let after = match &req.next_token {
            Some(t) => {
                let (time, key) = token_position(t)?;
                let seq: i64 = key.parse().map_err(|_| {
                    StoreError::Api(ApiError::InvalidRequest("nextToken is invalid".into()))
                })?;
                (Some(time), Some(seq))
            }
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT e.seq, e.event, v.state, v.description FROM violation_events e \
             LEFT JOIN verification v ON v.violation_id = e.violation_id \
             WHERE e.event_time >= $1 AND e.event_time <= $2 \
             AND ($3 IS NULL OR e.thing = $3) \
             AND ($4 IS NULL OR e.profile = $4) \
             AND ($5 IS NULL OR e.criteria_type = $5) \
             AND ($6 IS NULL OR e.suppressed = $6) \
             AND ($7 IS NULL OR COALESCE(v.state, 'UNKNOWN') = $7) \
             AND ($8 IS NULL OR e.event_time < $8 OR (e.event_time = $8 AND e.seq < $9)) \
             ORDER BY e.event_time DESC, e.seq DESC LIMIT $10",
        )
        .bind(req.start_time)
        .bind(req.end_time)
        .bind(req.thing_name.as_deref())
        .bind(req.security_profile_name.as_deref())
        .bind(req.behavior_criteria_type.as_deref())
        .bind(req.list_suppressed_alerts.map(i64::from))
        .bind(req.verification_state.as_deref())
        .bind(after.0)
        .bind(after.1)
        .bind(page_size(req.max_results) + 1)
        .fetch_all(self.pool())
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        let mut verification = VerificationMap::new();
        for row in &rows {
            let seq: i64 = row
                .try_get(0)
                .map_err(|e| StoreError::corrupt("violation event", e))?;
            let what = || format!("violation event {seq}");
            let text: String = row.try_get(1).map_err(|e| StoreError::corrupt(what(), e))?;
            let event: ViolationEvent =
                serde_json::from_str(&text).map_err(|e| StoreError::corrupt(what(), e))?;
            read_verification(row, 2, &event.violation_id, &mut verification)?;
            events.push(RecordedEvent {
                seq: u64::try_from(seq).map_err(|e| StoreError::corrupt(what(), e))?,
                event,
            });
        }
        Ok(query::list_violation_events(&events, &verification, req)?)
    }

    /// ListActiveViolations for the fleet (newest start first, id breaking ties).
    /// `known_profiles`: the configured profile names (an unknown `securityProfileName` is
    /// ResourceNotFoundException, as on the agent).
    pub async fn list_active_violations(
        &self,
        known_profiles: &BTreeSet<String>,
        req: &ListActiveViolationsRequest,
    ) -> Result<ListActiveViolationsResponse> {
        query::list_active_violations(&[], known_profiles, &VerificationMap::new(), req)?;
        let after = match &req.next_token {
            Some(t) => {
                let (time, key) = token_position(t)?;
                (Some(time), Some(key))
            }
            None => (None, None),
        };
        // Only the filters given, as plain predicates: a thing's few violations come from its
        // index, and no planner has to see through `$n IS NULL OR …` (SQLite cannot use an
        // index for it; PostgreSQL's generic plan scans and sorts the whole table).
        let mut conds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if req.thing_name.is_some() {
            conds.push(format!("a.thing = {}", param()));
        }
        if req.security_profile_name.is_some() {
            conds.push(format!("a.profile = {}", param()));
        }
        if req.behavior_criteria_type.is_some() {
            conds.push(format!("a.criteria_type = {}", param()));
        }
        if req.list_suppressed_alerts.is_some() {
            conds.push(format!("a.suppressed = {}", param()));
        }
        if req.verification_state.is_some() {
            conds.push(format!("COALESCE(v.state, 'UNKNOWN') = {}", param()));
        }
        if after.0.is_some() {
            let (t, id) = (param(), param());
            conds.push(format!(
                "(a.start_time < {t} OR (a.start_time = {t} AND a.violation_id < {id}))"
            ));
        }
        let limit = param();
        let sql = format!(
            "SELECT a.violation_id, a.violation, v.state, v.description FROM active_violations a \
             LEFT JOIN verification v ON v.violation_id = a.violation_id{}{} \
             ORDER BY a.start_time DESC, a.violation_id DESC LIMIT {limit}",
            if conds.is_empty() { "" } else { " WHERE " },
            conds.join(" AND ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(t) = req.thing_name.as_deref() {
            q = q.bind(t);
        }
        if let Some(p) = req.security_profile_name.as_deref() {
            q = q.bind(p);
        }
        if let Some(c) = req.behavior_criteria_type.as_deref() {
            q = q.bind(c);
        }
        if let Some(s) = req.list_suppressed_alerts {
            q = q.bind(i64::from(s));
        }
        if let Some(v) = req.verification_state.as_deref() {
            q = q.bind(v);
        }
        if let (Some(t), Some(id)) = (after.0, after.1.as_deref()) {
            q = q.bind(t).bind(id);
        }
        let rows = q
            .bind(page_size(req.max_results) + 1)
            .fetch_all(self.pool())
            .await?;
        let mut active = Vec::with_capacity(rows.len());
        let mut verification = VerificationMap::new();
        for row in &rows {
            let id: String = row
                .try_get(0)
                .map_err(|e| StoreError::corrupt("active violation", e))?;
            let what = || format!("active violation {id}");
            let text: String = row.try_get(1).map_err(|e| StoreError::corrupt(what(), e))?;
            let a: ActiveViolation =
                serde_json::from_str(&text).map_err(|e| StoreError::corrupt(what(), e))?;
            read_verification(row, 2, &id, &mut verification)?;
            active.push(a);
        }
        Ok(query::list_active_violations(
            &active,
            known_profiles,
            &verification,
            req,
        )?)
    }

    /// True when an event or an active violation has this id.
    pub async fn violation_exists(&self, violation_id: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM violation_events WHERE violation_id = $1) + \
             (SELECT COUNT(*) FROM active_violations WHERE violation_id = $1)",
        )
        .bind(violation_id)
        .fetch_one(self.pool())
        .await?;
        Ok(n > 0)
    }

    /// PutVerificationStateOnViolation: the agent's rules (state names, description length and
    /// characters, unknown id), then stored for every event and active violation of that id. An
    /// omitted description removes the stored one.
    pub async fn put_verification_state(
        &self,
        violation_id: &str,
        state: &str,
        description: Option<&str>,
    ) -> Result<()> {
        let known: BTreeSet<String> = if self.violation_exists(violation_id).await? {
            BTreeSet::from([violation_id.to_owned()])
        } else {
            BTreeSet::new()
        };
        let mut map = VerificationMap::new();
        query::put_verification_state(&mut map, &known, violation_id, state, description)?;
        let Some((s, d)) = map.get(violation_id) else {
            return Err(StoreError::Database(
                "the verification state was checked but not produced".into(),
            ));
        };
        sqlx::query(
            "INSERT INTO verification (violation_id, state, description) VALUES ($1, $2, $3) \
             ON CONFLICT (violation_id) DO UPDATE \
             SET state = excluded.state, description = excluded.description",
        )
        .bind(violation_id)
        .bind(vstate_text(*s))
        .bind(d.as_deref())
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_positions_come_from_the_agents_tokens() {
        let text = format!("v1|{}|42|abcd", 1500.5f64.to_bits());
        let tok = defender_agent::hex::encode(text.as_bytes());
        let (t, k) = token_position(&tok).unwrap();
        assert_eq!((t, k.as_str()), (1500.5, "42"));
        assert!(token_position("zz").is_err());
        assert!(token_position("abc").is_err());
        assert!(token_position(&defender_agent::hex::encode(b"v2|1|2|3")).is_err());
    }
}
