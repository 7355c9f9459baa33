//! `spool::Spool::open` on an arbitrary `spool.log` (hostile records: huge counters, duplicate or
//! unknown ids, oversize entries, torn tails) under small bounds chosen by the first byte: opening
//! never panics, replay enforces the bounds, and re-opening what the first open left behind gives
//! the same state (recovery is idempotent).
#![no_main]

use std::path::PathBuf;

use defender_agent::spool::{Entry, Settings, Spool, LOG_NAME};
use libfuzzer_sys::fuzz_target;

/// One state directory per fuzzing process, on tmpfs when there is one (open syncs the directory).
fn state_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("defender-agent-fuzz-spool-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, image)) = data.split_first() else {
        return;
    };
    let dir = state_dir();
    let spool_dir = dir.join("spool");
    let _ = std::fs::remove_dir_all(&spool_dir);
    std::fs::create_dir_all(&spool_dir).expect("fuzz harness: create the spool directory");
    std::fs::write(spool_dir.join(LOG_NAME), image).expect("fuzz harness: write spool.log");
    let mut settings = Settings::new(&dir);
    settings.max_reports = 1 + usize::from(selector & 0x07);
    // At least 16 bytes, so the 2-byte entry appended at the end always fits.
    settings.max_bytes = 16 + u64::from(selector >> 3) * 16;

    let first = match Spool::open(settings.clone()) {
        Ok((spool, _recovery)) => spool,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let stats = first.stats();
    assert!(stats.pending + stats.superseded + stats.rejected <= settings.max_reports);
    assert!(stats.bytes <= settings.max_bytes);
    let entries: Vec<(Entry, _)> = first
        .entries()
        .map(|(e, s)| (e.clone(), s.clone()))
        .collect();
    drop(first);

    let (mut second, _) = Spool::open(settings).expect("re-opening a recovered spool fails");
    let again: Vec<(Entry, _)> = second
        .entries()
        .map(|(e, s)| (e.clone(), s.clone()))
        .collect();
    assert_eq!(again, entries, "recovery is not idempotent");
    assert_eq!(second.stats().last_id, stats.last_id);
    assert_eq!(second.stats().dropped_total, stats.dropped_total);
    // The recovered spool still takes a new report (unless the ids are exhausted).
    if let Some(id) = stats.last_id.map_or(Some(1), |l| l.checked_add(1)) {
        let appended = second.append(Entry {
            id,
            format: defender_agent::report::Format::Json,
            payload: b"{}".to_vec(),
        });
        assert!(appended.is_ok(), "append after recovery: {appended:?}");
    }
});
