//! The spool: a durable on-disk outbox of encoded reports.
