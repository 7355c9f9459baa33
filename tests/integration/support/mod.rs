//! Shared test support: temporary dirs, fixture paths, mosquitto on a free port.
//!
//! - [`certs`]: CA, server and client certificates generated with rcgen (`Pki::new()`).
//! - [`mosquitto`]: a real broker per test (`Mosquitto::start`, `stop`, `restart`, `log`).
//! - [`endpoint`]: a stand-in Device Defender that answers reports on accepted/rejected.
#![allow(dead_code)]

pub mod certs;
pub mod endpoint;
pub mod mosquitto;

use std::path::PathBuf;

/// Path of a fixture under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Path of the built `defender-agent` binary.
pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_defender-agent"))
}
