//! Shared test support: temporary dirs, fixture paths, mosquitto on a free port.
#![allow(dead_code)]

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
