//! Durable local state in the state directory.
