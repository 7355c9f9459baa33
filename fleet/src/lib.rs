//! # defender-fleet
//!
//! The fleet service: a Device Defender endpoint and Detect for a whole fleet (issue 13). It
//! reuses the agent library's cores (report decoding and validation, the Detect engine, the
//! violation queries) and adds its own edges: the storage foundation, [`store`], on SQLite
//! (default) or PostgreSQL (several instances); the configuration, [`config`]; the ingest,
//! [`serve`] (the `defender-fleet` binary's `serve`).
#![warn(missing_docs)]

pub mod alarm;
pub mod config;
pub mod counters;
pub mod serve;
pub mod status;
pub mod store;
pub mod webhook;
