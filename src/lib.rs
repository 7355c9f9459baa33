//! # defender-agent
//!
//! The device side of AWS IoT Device Defender for Linux gateways: it samples the device, builds
//! metrics reports (JSON or CBOR, long or short keys), keeps them in a durable spool, publishes them
//! over MQTT with mutual TLS, and can evaluate security profiles locally.
//!
//! # Layout
//!
//! Three layers. **Vocabulary** (plain data), **cores** (pure logic: no I/O, no clock — time comes
//! in as an argument), **edges** (OS, disk, network), plus the wiring in [`agent`].
//!
//! ```text
//!   /proc, netlink, sysinfo,            local broker (tap)          AWS IoT / any broker
//!   commands, files                          │                         ▲        │ accepted/rejected
//!        │ collect (edge)                    │                         │ mqtt (edge)
//!        ▼                                   ▼                         │        ▼
//!   ┌────────────────────── agent loop (owns all state) ───────────────┴────────┐
//!   │ report (core): Sample → MetricsReport → bytes ──► spool (edge) ──► publish│
//!   │ traffic (core): counts by TOPIC_FILTER scope                              │
//!   │ detect (core): datapoints → violation events ──► store + alarms (edges)   │
//!   └───────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - vocabulary: [`custom_metric`], [`sample`], [`topic_filter`], [`hex`]
//! - cores: [`report`], [`traffic`], [`detect`]
//! - edges: [`collect`], [`spool`], [`mqtt`], [`tap`], [`store`]
//! - assembly and wiring: [`config`], [`agent`]
//! - local management of profiles and dimensions (AWS verbs): [`manage`]
//! - the command line, one file per verb family (`main.rs` only parses and dispatches): [`cli`]
//!
//! Reading order: [`sample`] and [`report`] (what goes out), [`collect`] (where it comes from),
//! [`config`] (how it is set up), then the edges.
#![warn(missing_docs)]

pub mod agent;
pub mod alarm;
pub mod cli;
pub mod collect;
pub mod config;
pub mod custom_metric;
pub mod detect;
pub mod hex;
pub mod manage;
pub mod mqtt;
pub mod report;
pub mod sample;
pub mod spool;
pub mod status;
pub mod store;
pub mod tap;
pub mod topic_filter;
pub mod traffic;
