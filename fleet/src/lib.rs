//! # defender-fleet
//!
//! The fleet service: a Device Defender endpoint and Detect for a whole fleet (issue 13). It
//! reuses the agent library's cores (report decoding and validation, the Detect engine, the
//! violation queries) and adds its own edges. This crate so far holds the storage foundation:
//! [`store`], on SQLite (default) or PostgreSQL (several instances).
#![warn(missing_docs)]

pub mod store;
