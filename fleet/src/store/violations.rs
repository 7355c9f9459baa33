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

/// The page token's position. Format (the agent's, `detect::query`): hex of
/// `v1|<f64 bits of the time>|<key>|<filter hash>`; the agent has already checked it and its
/// filter hash when this runs. TODO(lead): expose the agent's `read_token` instead.
fn token_position(token: &str) -> Result<(f64, String)> {
    let bad = || StoreError::Api(ApiError::InvalidRequest("nextToken is invalid".into()));
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(4, '|');
    let (Some("v1"), Some(bits), Some(key), Some(_hash)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let bits: u64 = bits.parse().map_err(|_| bad())?;
    Ok((f64::from_bits(bits), key.to_owned()))
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
        let rows = sqlx::query(
            "SELECT a.violation_id, a.violation, v.state, v.description FROM active_violations a \
             LEFT JOIN verification v ON v.violation_id = a.violation_id \
             WHERE ($1 IS NULL OR a.thing = $1) \
             AND ($2 IS NULL OR a.profile = $2) \
             AND ($3 IS NULL OR a.criteria_type = $3) \
             AND ($4 IS NULL OR a.suppressed = $4) \
             AND ($5 IS NULL OR COALESCE(v.state, 'UNKNOWN') = $5) \
             AND ($6 IS NULL OR a.start_time < $6 \
             OR (a.start_time = $6 AND a.violation_id < $7)) \
             ORDER BY a.start_time DESC, a.violation_id DESC LIMIT $8",
        )
        .bind(req.thing_name.as_deref())
        .bind(req.security_profile_name.as_deref())
        .bind(req.behavior_criteria_type.as_deref())
        .bind(req.list_suppressed_alerts.map(i64::from))
        .bind(req.verification_state.as_deref())
        .bind(after.0)
        .bind(after.1.as_deref())
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
        let tok = defender_agent::detect::violation::hex(text.as_bytes());
        let (t, k) = token_position(&tok).unwrap();
        assert_eq!((t, k.as_str()), (1500.5, "42"));
        assert!(token_position("zz").is_err());
        assert!(token_position("abc").is_err());
        assert!(token_position(&defender_agent::detect::violation::hex(b"v2|1|2|3")).is_err());
    }
}
