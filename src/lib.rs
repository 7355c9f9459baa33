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
//! - vocabulary: [`custom_metric`], [`sample`], [`topic_filter`], [`hex`], [`text`] (untrusted
//!   text as it may be logged)
//! - cores: [`report`], [`traffic`], [`detect`] (the engine split into input, compile, state and
//!   evaluate; [`detect::Settings`] is the `[detect]` section)
//! - edges: [`collect`], [`spool`] (the durable outbox and the one backlog policy), [`mqtt`]
//!   ([`mqtt::session`]: the one MQTT connection loop, used by the link, the [`tap`] and the local
//!   alarm connection), [`store`] (violations, the report id, and [`store::definitions`]: the one
//!   directory store for profiles, dimensions and custom metrics), [`alarm`], [`status`]
//! - assembly and wiring: each module owns its `Settings`; [`config`] turns each TOML section into
//!   them; [`agent`] builds its parts from the config and runs the loop, and
//!   [`agent::publisher`] is the pure publishing state machine
//! - local management of profiles and dimensions (AWS verbs): [`manage`]
//! - the command line, one file per verb family (`main.rs` only parses and dispatches): [`cli`]
//!
//! Reading order: [`sample`] and [`report`] (what goes out), [`collect`] (where it comes from),
//! [`config`] (how it is set up), [`agent::publisher`] (what goes out when), then the edges.
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
pub mod text;
pub mod topic_filter;
pub mod traffic;
