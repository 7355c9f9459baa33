//! The store's one error type. [`StoreError::Unavailable`] (the database cannot be reached, is
//! shutting down, is full or is too busy) is apart from everything else: the ingest withholds
//! `accepted` and retries later; every other variant is about the data or the request.

use defender_agent::detect::ApiError;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be used now (connection refused or lost, server shutting down, disk
    /// full, busy past the timeout, serialization failure): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Data in the database does not have the expected shape (e.g. a corrupt engine state).
    #[error("corrupt data in the store: {what}: {detail}")]
    Corrupt {
        /// What was being read, naming the thing or row.
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// The database was migrated by a newer defender-fleet.
    #[error(
        "the store's schema is version {found}, newer than the {known} this defender-fleet knows: \
         upgrade defender-fleet (or point it at another database)"
    )]
    SchemaTooNew {
        /// Highest version recorded in `schema_migrations`.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// A list/verify request broke the API's rules (the agent's error, same code and message).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The settings cannot work (bad URL, unusable path).
    #[error("store settings: {0}")]
    Config(String),
    /// Any other database error (a bug or bad SQL): not retried.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    /// True for [`StoreError::Unavailable`]: the operation may succeed if retried later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// PostgreSQL SQLSTATEs (and classes) that mean "not now" rather than "wrong".
fn pg_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources: disk full, out of memory, too many connections
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock detected
        || code == "55P03" // lock not available
}

/// SQLite primary result codes (the low byte of the extended code) that mean "not now".
fn sqlite_transient(code: &str) -> bool {
    let Ok(n) = code.parse::<i64>() else {
        return false;
    };
    matches!(
        n & 0xff,
        5  // SQLITE_BUSY
        | 6  // SQLITE_LOCKED
        | 7  // SQLITE_NOMEM
        | 10 // SQLITE_IOERR
        | 13 // SQLITE_FULL
        | 14 // SQLITE_CANTOPEN
        | 15 // SQLITE_PROTOCOL
    )
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_)
            | E::BeginFailed => StoreError::Unavailable(e.to_string()),
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                // Behind the Any driver the error is still the engine's own type.
                let is_pg = db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some();
                let transient = if is_pg {
                    pg_transient(&code)
                } else {
                    sqlite_transient(&code)
                };
                if transient {
                    StoreError::Unavailable(format!("{} (code {code})", db.message()))
                } else {
                    StoreError::Database(format!("{} (code {code})", db.message()))
                }
            }
            E::ColumnDecode { .. }
            | E::Decode(_)
            | E::ColumnNotFound(_)
            | E::TypeNotFound { .. } => StoreError::corrupt("a row", &e),
            E::Configuration(_) => StoreError::Config(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes() {
        assert!(pg_transient("08006"));
        assert!(pg_transient("57P01"));
        assert!(pg_transient("53100"));
        assert!(!pg_transient("23505"));
        assert!(sqlite_transient("5"));
        assert!(sqlite_transient("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(sqlite_transient("13"));
        assert!(!sqlite_transient("19")); // constraint
        assert!(!sqlite_transient("x"));
    }
}
