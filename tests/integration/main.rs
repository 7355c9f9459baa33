//! The one integration test binary: modules beside this file.

mod agent;
mod cli;
mod collect;
mod detect;
mod mqtt;
mod regression;
mod report;
mod spool;
mod support;
mod traffic;
