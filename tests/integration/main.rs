//! The one integration test binary: modules beside this file.

mod cli;
mod collect;
mod mqtt;
mod support;
mod report;
