//! Shared test support: temporary dirs, fixture paths, mosquitto on a free port.
//!
//! - [`certs`]: CA, server and client certificates generated with rcgen (`Pki::new()`).
//! - [`mosquitto`]: a real broker per test (`Mosquitto::start`, `stop`, `restart`, `log`).
//! - [`endpoint`]: a stand-in Device Defender that answers reports on accepted/rejected.
//! - [`logs`]: the tracing output of a test's thread, to count log lines.
//! - [`netns`]: a test body in a network namespace of its own (exact listening-port sets).
#![allow(dead_code)]

pub mod certs;
pub mod endpoint;
pub mod logs;
pub mod mosquitto;
pub mod netns;

use std::path::PathBuf;

/// Path of a fixture under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Path of the `defender-agent` binary under test: the one cargo built, or `DEFENDER_AGENT_BIN`
/// (CI points it at a wrapper that runs a cross-built ARM binary under qemu-user, so the daemon
/// tests run against the ARM build too).
pub fn agent_bin() -> PathBuf {
    std::env::var_os("DEFENDER_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_defender-agent")))
}
