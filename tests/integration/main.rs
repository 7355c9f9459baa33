//! The one integration test binary: modules beside this file.

mod agent;
mod cli;
mod collect;
mod config_deploy;
mod detect;
mod detect_agent;
mod detect_cases;
mod manage;
mod mqtt;
mod proxy;
mod push;
mod regression;
mod report;
mod spool;
mod support;
mod tap;
mod traffic;
