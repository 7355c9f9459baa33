//! Integration tests of the spool on real directories: durability across reopen, bounds, backlog
//! order, corrupt files, disk full, read-only, and `kill -9` at random moments.
//!
//! Some scenarios run in a child process: the test binary re-executes itself with
//! `--exact spool::child_role --ignored` and `SPOOL_TEST_ROLE` naming the scenario. That keeps
//! process-wide changes (a file size limit, dropping root) and `SIGKILL` away from the other tests.
//!
//! Techniques for "disk full" and "read-only" (each test prints which it used; none skips):
//! - root with `CAP_SYS_ADMIN`: a 256 KiB tmpfs mounted in a temp dir — filled up for `ENOSPC`,
//!   remounted read-only for `EROFS` — unmounted (detached) on drop;
//! - otherwise: `RLIMIT_FSIZE` with `SIGXFSZ` ignored gives a real `EFBIG`, and `chmod` of the
//!   file and directory gives `EACCES` (a child running as root first drops to `nobody`, because
//!   permission bits do not stop root).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use defender_agent::report::Format;
use defender_agent::spool::{
    record, Backlog, Entry, EntryState, Error, IoCause, Settings, Spool, DAMAGED_NAME, LOG_NAME,
    TMP_NAME,
};

const ROLE_ENV: &str = "SPOOL_TEST_ROLE";
const DIR_ENV: &str = "SPOOL_TEST_DIR";
const SEED_ENV: &str = "SPOOL_TEST_SEED";

fn settings(dir: &Path) -> Settings {
    Settings::new(dir)
}

/// A deterministic payload for `id`, so a reader can check every byte came back.
fn payload(id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id.wrapping_mul(31).wrapping_add(i as u64) % 251) as u8)
        .collect()
}

fn entry(id: u64, len: usize) -> Entry {
    Entry {
        id,
        format: if id % 2 == 0 {
            Format::Json
        } else {
            Format::Cbor
        },
        payload: payload(id, len),
    }
}

fn ids(spool: &Spool) -> Vec<u64> {
    spool.entries().map(|(e, _)| e.id).collect()
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("spool").join(LOG_NAME)
}

#[test]
fn appended_acked_and_rejected_entries_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, recovery) = Spool::open(settings(dir.path())).unwrap();
        assert_eq!((recovery.entries, recovery.last_id), (0, None));
        for id in 10..15 {
            spool.append(entry(id, 500)).unwrap();
        }
        assert!(spool.ack(11).unwrap());
        assert!(!spool.ack(11).unwrap(), "a second ack finds nothing");
        assert!(spool
            .reject(12, "InvalidPayload", "Malformed metrics report")
            .unwrap());
        assert!(!spool.ack(99).unwrap());
    }
    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(recovery.entries, 4);
    assert_eq!(recovery.pending, 3);
    assert_eq!(recovery.cut_bytes(), 0);
    assert_eq!(recovery.last_id, Some(14));
    assert_eq!(ids(&spool), [10, 12, 13, 14]);
    let (e, state) = spool.get(12).unwrap();
    assert_eq!(e, &entry(12, 500));
    assert_eq!(
        state,
        &EntryState::Rejected {
            code: "InvalidPayload".into(),
            message: "Malformed metrics report".into()
        }
    );
    for (e, _) in spool.entries() {
        assert_eq!(e, &entry(e.id, 500));
    }
    let stats = spool.stats();
    assert_eq!((stats.pending, stats.rejected, stats.bytes), (3, 1, 2000));
}

#[test]
fn inspection_reads_a_locked_spool_without_changing_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = Spool::inspect(&settings(dir.path())).unwrap();
    assert!(empty.entries.is_empty());
    let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
    spool.append(entry(1, 10)).unwrap();
    spool.append(entry(2, 10)).unwrap();
    spool.reject(1, "InvalidPayload", "Malformed").unwrap();
    let mut torn = fs::OpenOptions::new()
        .append(true)
        .open(spool.log_path())
        .unwrap();
    torn.write_all(&[1, 2, 3]).unwrap();
    let on_disk = fs::read(spool.log_path()).unwrap();
    // The agent's spool is open (and locked) while we look.
    let seen = Spool::inspect(&settings(dir.path())).unwrap();
    assert_eq!(
        seen.entries.iter().map(|(e, _)| e.id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert!(matches!(seen.entries[0].1, EntryState::Rejected { .. }));
    assert_eq!((seen.stats.pending, seen.stats.rejected), (1, 1));
    assert_eq!(seen.corrupt_tail.map(|t| t.len), Some(3));
    assert_eq!(
        fs::read(spool.log_path()).unwrap(),
        on_disk,
        "nothing written"
    );
}

#[test]
fn a_rejected_entry_is_never_offered_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.backlog = Backlog::All;
    let (mut spool, _) = Spool::open(s).unwrap();
    spool.append(entry(1, 10)).unwrap();
    spool.append(entry(2, 10)).unwrap();
    assert_eq!(spool.next_to_publish().map(|e| e.id), Some(1));
    spool.reject(1, "InvalidPayload", "Malformed").unwrap();
    assert_eq!(spool.next_to_publish().map(|e| e.id), Some(2));
    spool.reject(2, "InvalidPayload", "Malformed").unwrap();
    assert_eq!(spool.next_to_publish(), None);
    assert_eq!(spool.stats().rejected, 2);
}

#[test]
fn latest_backlog_publishes_the_newest_and_supersedes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=4 {
            spool.append(entry(id, 100)).unwrap();
        }
        let next = spool.next_to_publish().unwrap().id;
        assert_eq!(next, 4);
        assert_eq!(spool.supersede_older_than(next).unwrap(), 3);
        assert_eq!(spool.supersede_older_than(next).unwrap(), 0);
        assert_eq!(spool.next_to_publish().map(|e| e.id), Some(4));
        let stats = spool.stats();
        assert_eq!((stats.pending, stats.superseded), (1, 3));
    }
    // Superseded history survives a restart and is never offered; the in-flight one still is.
    let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(spool.next_to_publish().map(|e| e.id), Some(4));
    assert!(spool.ack(4).unwrap());
    assert_eq!(spool.next_to_publish(), None);
    let states: Vec<_> = spool.entries().map(|(_, s)| s.clone()).collect();
    assert_eq!(states, vec![EntryState::Superseded; 3]);
}

#[test]
fn all_backlog_publishes_every_pending_entry_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.backlog = Backlog::All;
    let (mut spool, _) = Spool::open(s).unwrap();
    for id in 1..=3 {
        spool.append(entry(id, 100)).unwrap();
    }
    let mut published = Vec::new();
    while let Some(e) = spool.next_to_publish() {
        let id = e.id;
        published.push(id);
        spool.ack(id).unwrap();
    }
    assert_eq!(published, [1, 2, 3]);
    assert_eq!(spool.entries().count(), 0);
}

#[test]
fn the_count_bound_drops_the_oldest_and_counts_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_reports = 3;
    {
        let (mut spool, _) = Spool::open(s.clone()).unwrap();
        for id in 1..=3 {
            assert_eq!(spool.append(entry(id, 10)).unwrap().dropped_oldest, 0);
        }
        let appended = spool.append(entry(4, 10)).unwrap();
        assert_eq!((appended.dropped_oldest, appended.dropped_pending), (1, 1));
        spool.append(entry(5, 10)).unwrap();
        assert_eq!(ids(&spool), [3, 4, 5]);
        assert_eq!(spool.stats().dropped_total, 2);
    }
    let (spool, recovery) = Spool::open(s).unwrap();
    assert_eq!(recovery.dropped, 0);
    assert_eq!(ids(&spool), [3, 4, 5]);
    assert_eq!(spool.stats().dropped_total, 2);
}

#[test]
fn the_byte_bound_drops_as_many_old_entries_as_needed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_bytes = 1000;
    let (mut spool, _) = Spool::open(s).unwrap();
    for id in 1..=4 {
        spool.append(entry(id, 250)).unwrap();
    }
    assert_eq!(spool.stats().bytes, 1000);
    let appended = spool.append(entry(5, 600)).unwrap();
    assert_eq!(appended.dropped_oldest, 3);
    assert_eq!(ids(&spool), [4, 5]);
    assert_eq!(spool.stats().bytes, 850);
    assert!(matches!(
        spool.append(entry(6, 1001)),
        Err(Error::EntryTooLarge {
            size: 1001,
            max: 1000,
            ..
        })
    ));
    assert_eq!(ids(&spool), [4, 5], "a refused entry drops nothing");
}

#[test]
fn smaller_bounds_at_reopen_drop_the_oldest_while_loading() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=10 {
            spool.append(entry(id, 100)).unwrap();
        }
    }
    let mut s = settings(dir.path());
    s.max_reports = 4;
    let (spool, recovery) = Spool::open(s.clone()).unwrap();
    assert_eq!(recovery.dropped, 6);
    assert_eq!(ids(&spool), [7, 8, 9, 10]);
    drop(spool);
    let (spool, recovery) = Spool::open(s).unwrap();
    assert_eq!((recovery.dropped, recovery.entries), (0, 4));
    assert_eq!(spool.stats().dropped_total, 6);
}

#[test]
fn ids_must_increase_even_after_every_entry_left_and_the_log_was_compacted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        // Enough append + ack cycles to force several compactions.
        for id in 1..=200 {
            spool.append(entry(id, 2000)).unwrap();
            spool.ack(id).unwrap();
        }
        let file = fs::metadata(log_path(dir.path())).unwrap().len();
        assert!(
            file < 2 * 2000 + defender_agent::spool::COMPACT_SLACK_BYTES + 100,
            "log not compacted: {file} bytes"
        );
        assert_eq!(spool.stats().file_bytes, file);
    }
    let (mut spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!((recovery.entries, recovery.last_id), (0, Some(200)));
    assert!(matches!(
        spool.append(entry(200, 1)),
        Err(Error::IdNotIncreasing { id: 200, last: 200 })
    ));
    spool.append(entry(201, 1)).unwrap();
}

#[test]
fn a_torn_last_write_is_cut_durably_and_the_rest_survives() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=3 {
            spool.append(entry(id, 300)).unwrap();
        }
    }
    let path = log_path(dir.path());
    let whole = fs::read(&path).unwrap();
    // A fourth record torn after 100 of its bytes.
    let mut frame = Vec::new();
    record::encode_append(&entry(4, 300), &mut frame);
    let mut torn = whole.clone();
    torn.extend_from_slice(&frame[..100]);
    fs::write(&path, &torn).unwrap();

    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    let tail = recovery.corrupt_tail.unwrap();
    assert_eq!(
        (tail.offset, tail.len, tail.reason),
        (whole.len() as u64, 100, record::Corruption::Torn)
    );
    assert_eq!(ids(&spool), [1, 2, 3]);
    assert_eq!(fs::read(&path).unwrap(), whole, "the tail is cut on disk");
    drop(spool);
    let (_, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(recovery.corrupt_tail, None, "the repair is durable");
}

#[test]
fn a_damaged_record_in_the_middle_costs_only_that_record_and_a_copy_is_kept() {
    // Regression, issue 16 defect 8: a flipped byte used to cut every later record.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=5 {
            spool.append(entry(id, 100)).unwrap();
        }
    }
    let path = log_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    // Header, meta record, then 5 appends of 118 bytes: damage a payload byte of the third.
    let meta = bytes.len() - 5 * 118 - record::FILE_HEADER_LEN;
    let third = record::FILE_HEADER_LEN + meta + 2 * 118;
    bytes[third + 50] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(
        recovery.corrupt_tail.map(|t| (t.offset, t.reason)),
        Some((third as u64, record::Corruption::ChecksumMismatch))
    );
    assert_eq!(ids(&spool), [1, 2, 4, 5]);
    assert_eq!((recovery.resynced, recovery.cut_bytes()), (2, 118));
    assert_eq!(spool.last_id(), Some(5));
    let copy = dir.path().join("spool").join(DAMAGED_NAME);
    assert_eq!(recovery.damaged_copy.as_deref(), Some(copy.as_path()));
    assert_eq!(
        fs::read(&copy).unwrap(),
        bytes,
        "the damaged file is kept as it was"
    );
    drop(spool);
    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(
        (recovery.corrupt_tail, ids(&spool)),
        (None, vec![1, 2, 4, 5])
    );
}

#[test]
fn a_flipped_magic_byte_keeps_every_record() {
    // Regression, issue 16 defect 8: a flip at offset 3 emptied the file.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=16 {
            spool.append(entry(id, 50)).unwrap();
        }
    }
    let path = log_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] ^= 0xFF;
    fs::write(&path, &bytes).unwrap();
    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(
        recovery.corrupt_tail.map(|t| t.reason),
        Some(record::Corruption::BadMagic)
    );
    assert_eq!(ids(&spool), (1..=16).collect::<Vec<_>>());
    assert!(recovery.damaged_copy.is_some());
}

#[test]
fn a_spool_log_that_is_a_directory_fifo_or_device_link_is_refused() {
    // Regression, issue 16 defect 8: such a path must be a clear error, and is never read.
    for kind in ["directory", "fifo", "device link"] {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("spool")).unwrap();
        let path = log_path(dir.path());
        match kind {
            "directory" => fs::create_dir(&path).unwrap(),
            "fifo" => {
                let c = CString::new(path.as_os_str().as_bytes()).unwrap();
                // SAFETY: a valid NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            }
            _ => std::os::unix::fs::symlink("/dev/zero", &path).unwrap(),
        }
        let error = Spool::open(settings(dir.path())).unwrap_err();
        assert!(matches!(error, Error::NotAFile { .. }), "{kind}: {error}");
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let error = Spool::inspect(&settings(dir.path())).unwrap_err();
        assert!(matches!(error, Error::NotAFile { .. }), "{kind}: {error}");
    }
}

#[test]
fn a_file_that_is_not_a_spool_is_replaced_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("spool")).unwrap();
    let path = log_path(dir.path());
    fs::write(&path, b"this is not a spool file at all").unwrap();
    let (mut spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(
        recovery.corrupt_tail.map(|t| (t.offset, t.len, t.reason)),
        Some((0, 31, record::Corruption::BadMagic))
    );
    spool.append(entry(1, 10)).unwrap();
    drop(spool);
    let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!((recovery.corrupt_tail, ids(&spool)), (None, vec![1]));
}

#[test]
fn an_empty_or_torn_new_file_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("spool")).unwrap();
    for content in [&b""[..], &b"DDSP"[..]] {
        fs::write(log_path(dir.path()), content).unwrap();
        let (mut spool, recovery) = Spool::open(settings(dir.path())).unwrap();
        assert_eq!(
            recovery.corrupt_tail.map(|t| t.reason),
            Some(record::Corruption::Torn)
        );
        spool.append(entry(1, 10)).unwrap();
        drop(spool);
        let (spool, recovery) = Spool::open(settings(dir.path())).unwrap();
        assert_eq!((recovery.corrupt_tail, ids(&spool)), (None, vec![1]));
        drop(spool);
        fs::remove_file(log_path(dir.path())).unwrap();
    }
}

#[test]
fn a_newer_format_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        spool.append(entry(1, 10)).unwrap();
    }
    let path = log_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    bytes[7] = 9;
    fs::write(&path, &bytes).unwrap();
    let error = Spool::open(settings(dir.path())).unwrap_err();
    assert!(
        matches!(error, Error::UnsupportedVersion { version: 9, .. }),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn an_interrupted_compaction_leaves_the_log_in_charge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        spool.append(entry(1, 10)).unwrap();
    }
    let tmp = dir.path().join("spool").join(TMP_NAME);
    fs::write(&tmp, b"half a compaction").unwrap();
    let (spool, _) = Spool::open(settings(dir.path())).unwrap();
    assert_eq!(ids(&spool), [1]);
    assert!(!tmp.exists());
}

#[test]
fn zero_bounds_are_invalid_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_reports = 0;
    assert!(matches!(Spool::open(s), Err(Error::InvalidSettings(_))));
    let mut s = settings(dir.path());
    s.max_bytes = 0;
    assert!(matches!(Spool::open(s), Err(Error::InvalidSettings(_))));
}

// ---------------------------------------------------------------------------------------------
// Disk full and read-only.

/// A small tmpfs mounted on a temp dir (root with CAP_SYS_ADMIN only), detached on drop.
struct Tmpfs {
    path: CString,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let path = CString::new(dir.path().as_os_str().as_bytes()).ok()?;
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                path.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=256k".as_ptr().cast(),
            )
        };
        (rc == 0).then_some(Tmpfs { path, _dir: dir })
    }

    fn path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.path.as_bytes()))
    }

    fn remount(&self, read_only: bool) {
        let flags = libc::MS_REMOUNT | if read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: valid NUL-terminated path; null source, type and data are allowed for a remount.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                self.path.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "remount failed: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(self.path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the file system holding `dir` with a filler file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    filler
}

/// The shared check: a write fails with `cause`, leaves memory and disk unchanged, and succeeds
/// once `make_room` has run; everything survives a reopen.
fn full_or_read_only_scenario(
    dir: &Path,
    cause: IoCause,
    make_trouble: &dyn Fn(&Spool),
    make_room: &dyn Fn(&Spool),
) {
    let (mut spool, _) = Spool::open(settings(dir)).unwrap();
    for id in 1..=3 {
        spool.append(entry(id, 1000)).unwrap();
    }
    make_trouble(&spool);
    let before = spool.stats();
    // 8 KiB needs fresh pages, so a page's slack cannot absorb it.
    let error = spool.append(entry(4, 8192)).unwrap_err();
    assert_eq!(error.io_cause(), Some(cause), "{error}");
    let text = error.to_string();
    assert!(text.contains(&cause.to_string()), "{text}");
    assert_eq!(spool.stats(), before, "a failed append changes nothing");
    assert_eq!(ids(&spool), [1, 2, 3]);
    assert_eq!(spool.next_to_publish().map(|e| e.id), Some(3));
    // While the trouble lasts, a restarted agent can still open the spool and read it.
    drop(spool);
    let (mut spool, recovery) = Spool::open(settings(dir)).unwrap();
    assert_eq!((recovery.entries, recovery.corrupt_tail), (3, None));
    assert_eq!(spool.next_to_publish().map(|e| e.id), Some(3));
    let error = spool.append(entry(4, 8192)).unwrap_err();
    assert_eq!(error.io_cause(), Some(cause), "{error}");
    make_room(&spool);
    assert_eq!(
        fs::metadata(spool.log_path()).unwrap().len(),
        before.file_bytes,
        "the partial write was cut"
    );
    spool.append(entry(4, 8192)).unwrap();
    assert!(spool.ack(1).unwrap());
    drop(spool);
    let (spool, recovery) = Spool::open(settings(dir)).unwrap();
    assert_eq!(recovery.corrupt_tail, None);
    assert_eq!(ids(&spool), [2, 3, 4]);
    assert_eq!(spool.get(4).unwrap().0, &entry(4, 8192));

    // A torn tail found while the disk cannot be written: open still succeeds (the cut may have
    // to wait), and the first write that works cuts it.
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(spool.log_path())
        .unwrap();
    log.write_all(&[0x55; 40]).unwrap();
    drop(log);
    make_trouble(&spool);
    drop(spool);
    let (mut spool, recovery) = Spool::open(settings(dir)).unwrap();
    assert_eq!(recovery.cut_bytes(), 40);
    assert_eq!(ids(&spool), [2, 3, 4]);
    make_room(&spool);
    spool.append(entry(5, 100)).unwrap();
    drop(spool);
    let (spool, recovery) = Spool::open(settings(dir)).unwrap();
    assert_eq!(recovery.corrupt_tail, None);
    assert_eq!(ids(&spool), [2, 3, 4, 5]);
    assert_eq!(spool.get(5).unwrap().0, &entry(5, 100));
}

#[test]
fn a_full_disk_fails_the_append_clearly_and_the_spool_recovers_when_space_frees() {
    match Tmpfs::mount() {
        Some(fs_) => {
            eprintln!("technique: 256 KiB tmpfs filled up (ENOSPC)");
            let filler = std::cell::RefCell::new(None);
            full_or_read_only_scenario(
                fs_.path(),
                IoCause::DiskFull,
                &|_| *filler.borrow_mut() = Some(fill(fs_.path())),
                &|_| fs::remove_file(filler.borrow().as_ref().unwrap()).unwrap(),
            );
        }
        None => {
            eprintln!("technique: cannot mount a tmpfs here; RLIMIT_FSIZE in a child (EFBIG)");
            run_child("fsize", Path::new("/nonexistent"), 0);
        }
    }
}

#[test]
fn a_file_size_limit_fails_the_append_clearly_and_the_spool_recovers() {
    let dir = tempfile::tempdir().unwrap();
    run_child("fsize", dir.path(), 0);
}

#[test]
fn a_read_only_file_system_fails_the_append_clearly_and_the_spool_recovers() {
    match Tmpfs::mount() {
        Some(fs_) => {
            eprintln!("technique: tmpfs remounted read-only (EROFS)");
            full_or_read_only_scenario(
                fs_.path(),
                IoCause::ReadOnly,
                &|_| fs_.remount(true),
                &|_| fs_.remount(false),
            );
            // Opening a fresh spool on a read-only file system fails with a clear cause.
            fs_.remount(true);
            let error = Spool::open(settings(&fs_.path().join("fresh"))).unwrap_err();
            assert_eq!(error.io_cause(), Some(IoCause::ReadOnly), "{error}");
            fs_.remount(false);
        }
        None => {
            eprintln!("technique: cannot mount a tmpfs here; chmod in a child (EACCES)");
            run_child("denied", Path::new("/nonexistent"), 0);
        }
    }
}

#[test]
fn a_directory_without_write_permission_fails_the_append_clearly_and_the_spool_recovers() {
    run_child("denied", Path::new("/nonexistent"), 0);
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// Runs `child_role` in a fresh process of this test binary and asserts it passed.
fn run_child(role: &str, dir: &Path, seed: u64) {
    let output = child_command(role, dir, seed).output().unwrap();
    assert!(
        output.status.success(),
        "child role {role} failed: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn child_command(role: &str, dir: &Path, seed: u64) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "spool::child_role",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .env(DIR_ENV, dir)
    .env(SEED_ENV, seed.to_string());
    cmd
}

/// Entry point of the child processes (ignored: the parent tests run it with `--ignored`).
#[test]
#[ignore = "run by the other spool tests in a child process"]
fn child_role() {
    let role = std::env::var(ROLE_ENV).expect("SPOOL_TEST_ROLE names the child's scenario");
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).expect("SPOOL_TEST_DIR"));
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    match role.as_str() {
        "fsize" => fsize_role(),
        "denied" => denied_role(),
        "writer" => writer_role(&dir, seed),
        other => panic!("unknown role {other}"),
    }
}

/// `RLIMIT_FSIZE` just above the log's size turns the next big write into `EFBIG` (with
/// `SIGXFSZ` ignored, the kernel returns the error instead of killing the process).
fn fsize_role() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let set = |cur: libc::rlim_t| {
        let limit = libc::rlimit {
            rlim_cur: cur,
            rlim_max: old.rlim_max,
        };
        // SAFETY: plain syscall on a valid struct.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &limit) }, 0);
    };
    full_or_read_only_scenario(
        dir.path(),
        IoCause::DiskFull,
        &|spool| set(spool.stats().file_bytes + 100),
        &|_| set(old.rlim_cur),
    );
    println!("fsize role passed");
}

/// Permission bits: the log file read-only and the directory not writable. Root ignores them,
/// so a root child first becomes `nobody`.
fn denied_role() {
    // SAFETY: plain syscalls; the child is single-purpose and owns its process.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    let dir = tempfile::tempdir().expect("a temp dir writable by the unprivileged child");
    let chmod = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    full_or_read_only_scenario(
        dir.path(),
        IoCause::ReadOnly,
        &|spool| {
            chmod(spool.log_path(), 0o444);
            chmod(spool.log_path().parent().unwrap(), 0o555);
        },
        &|spool| {
            chmod(spool.log_path().parent().unwrap(), 0o755);
            chmod(spool.log_path(), 0o644);
        },
    );
    println!("denied role passed");
}

/// A small xorshift generator: reproducible from the seed the parent prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Payload length of report `id` in the kill test: 1 byte to 16 KiB, recomputable by the parent.
fn kill_test_len(id: u64) -> usize {
    let mut r = Rng(id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    1 + r.below(16 * 1024) as usize
}

fn kill_test_settings(dir: &Path) -> Settings {
    let mut s = Settings::new(dir);
    // No drops: every id the child printed must be accounted for.
    s.max_reports = 1_000_000;
    s.max_bytes = 1 << 30;
    s
}

/// Appends, acks, rejects and supersedes in a loop, printing each id before ("a", "k") and after
/// ("A", "K", "R", "S") the call returns, until it is killed.
fn writer_role(dir: &Path, seed: u64) {
    let (mut spool, _) = Spool::open(kill_test_settings(dir)).unwrap();
    let mut rng = Rng(seed | 1);
    let first = spool.last_id().map_or(1, |l| l + 1);
    let out = std::io::stdout();
    // libtest has printed "test spool::child_role ... " without a newline: end that line first.
    writeln!(out.lock()).unwrap();
    // Bounded so that an orphaned child cannot run forever.
    for id in first..first + 100_000 {
        writeln!(out.lock(), "a {id}").unwrap();
        spool.append(entry(id, kill_test_len(id))).unwrap();
        writeln!(out.lock(), "A {id}").unwrap();
        let pending: Vec<u64> = spool
            .entries()
            .filter(|(_, s)| **s == EntryState::Pending)
            .map(|(e, _)| e.id)
            .collect();
        let pick = pending[rng.below(pending.len() as u64) as usize];
        match rng.below(10) {
            0 => {
                spool.reject(pick, "InvalidPayload", "Malformed").unwrap();
                writeln!(out.lock(), "R {pick}").unwrap();
            }
            1 => {
                spool.supersede_older_than(pick).unwrap();
                writeln!(out.lock(), "S {pick}").unwrap();
            }
            2..=3 => {}
            _ => {
                writeln!(out.lock(), "k {pick}").unwrap();
                spool.ack(pick).unwrap();
                writeln!(out.lock(), "K {pick}").unwrap();
            }
        }
        // Acked history goes too, so the log keeps compacting.
        let history = spool
            .entries()
            .find(|(_, s)| **s != EntryState::Pending)
            .map(|(e, _)| e.id);
        if let Some(id) = history {
            writeln!(out.lock(), "k {id}").unwrap();
            spool.ack(id).unwrap();
            writeln!(out.lock(), "K {id}").unwrap();
        }
    }
}

/// What the parent knows from the child's lines, over all rounds.
#[derive(Default)]
struct Model {
    /// Every id the child started to append.
    attempted: BTreeSet<u64>,
    /// Ids whose append returned (durable), minus those whose ack returned.
    durable: BTreeSet<u64>,
    /// Ids an ack was started for (they may or may not be gone).
    ack_started: BTreeSet<u64>,
    /// Ids whose rejection returned.
    rejected: BTreeSet<u64>,
}

impl Model {
    fn read(&mut self, line: &str) {
        let Some((tag, id)) = line.split_once(' ') else {
            return;
        };
        let Ok(id) = id.trim().parse::<u64>() else {
            return;
        };
        match tag {
            "a" => {
                self.attempted.insert(id);
            }
            "A" => {
                self.durable.insert(id);
            }
            "k" => {
                self.ack_started.insert(id);
            }
            "K" => {
                self.durable.remove(&id);
                self.rejected.remove(&id);
            }
            "R" => {
                self.rejected.insert(id);
            }
            _ => {}
        }
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_that_was_appended() {
    const ROUNDS: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let seed = std::process::id() as u64 ^ 0x5eed;
    eprintln!("kill -9 test seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut model = Model::default();
    let mut torn_rounds = 0;
    let mut compacted_or_grew = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = child_command("writer", dir.path(), rng.next())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut lines = Vec::new();
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    // A line without its newline was cut by the kill: ignore it.
                    Ok(_) if line.last() != Some(&b'\n') => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                        if line.starts_with("A ") {
                            let _ = tx.send(());
                        }
                        lines.push(line);
                    }
                }
            }
            lines
        });
        // Wait until the child is writing (a generous bound for a loaded CI box; not a timing
        // assertion), then let it run a random while and kill it mid-operation.
        if rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "writer child never appended: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_micros(rng.below(250_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let lines = reader.join().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "round {round}: the child ended on its own: {status:?}"
        );
        for line in &lines {
            model.read(line);
        }

        let (spool, recovery) = Spool::open(kill_test_settings(dir.path())).unwrap();
        torn_rounds += usize::from(recovery.corrupt_tail.is_some());
        compacted_or_grew.insert(round, spool.stats().file_bytes);
        let present: BTreeSet<u64> = spool.entries().map(|(e, _)| e.id).collect();
        let order: Vec<u64> = spool.entries().map(|(e, _)| e.id).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "round {round}: ids not strictly increasing"
        );
        for id in &model.durable {
            assert!(
                present.contains(id) || model.ack_started.contains(id),
                "round {round}: durably appended id {id} is missing (seed {seed})"
            );
        }
        for (e, state) in spool.entries() {
            assert!(
                model.attempted.contains(&e.id),
                "round {round}: id {} was never appended",
                e.id
            );
            assert_eq!(e, &entry(e.id, kill_test_len(e.id)), "round {round}");
            if model.rejected.contains(&e.id) {
                assert!(
                    matches!(state, EntryState::Rejected { .. }),
                    "round {round}: id {} lost its rejection",
                    e.id
                );
            }
        }
        // The last id never goes back below a durable append.
        if let Some(&max) = model.durable.iter().next_back() {
            assert!(spool.last_id() >= Some(max), "round {round}");
        }
        // What is on disk now is the truth for the next round.
        model.durable = present;
        model.ack_started.clear();
        drop(spool);
        let (_, again) = Spool::open(kill_test_settings(dir.path())).unwrap();
        assert_eq!(
            again.corrupt_tail, None,
            "round {round}: repair not durable"
        );
    }
    eprintln!(
        "kill -9 test: {ROUNDS} rounds, {torn_rounds} with a torn tail cut, {} ids appended, log sizes {:?}",
        model.attempted.len(),
        compacted_or_grew.values().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// Replay equals memory.

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Ack(usize),
    Reject(usize),
    Supersede(usize),
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => (0usize..3000).prop_map(Op::Append),
        2 => (0usize..8).prop_map(Op::Ack),
        1 => (0usize..8).prop_map(Op::Reject),
        1 => (0usize..8).prop_map(Op::Supersede),
        1 => Just(Op::Reopen),
    ]
}

type Snapshot = Vec<(Entry, EntryState)>;

fn snapshot(spool: &Spool) -> Snapshot {
    spool
        .entries()
        .map(|(e, s)| (e.clone(), s.clone()))
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Whatever the operations (including drops and compactions), reopening the spool yields
    /// exactly the entries, states and counters the live spool held, and the bounds hold.
    #[test]
    fn reopening_after_any_operations_restores_exactly_the_live_state(
        ops in proptest::collection::vec(op(), 1..40),
        backlog_all in proptest::bool::ANY,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.max_reports = 5;
        s.max_bytes = 6000;
        s.backlog = if backlog_all { Backlog::All } else { Backlog::Latest };
        let (mut spool, _) = Spool::open(s.clone()).unwrap();
        let mut next_id = 1;
        for op in ops {
            // Operations address held entries by position, so they mostly hit something.
            let held: Vec<u64> = ids(&spool);
            let pick = |i: usize| held.get(i % held.len().max(1)).copied().unwrap_or(0);
            match op {
                Op::Append(len) => {
                    spool.append(entry(next_id, len)).unwrap();
                    next_id += 1;
                }
                Op::Ack(i) => {
                    spool.ack(pick(i)).unwrap();
                }
                Op::Reject(i) => {
                    spool.reject(pick(i), "InvalidPayload", "Malformed").unwrap();
                }
                Op::Supersede(i) => {
                    spool.supersede_older_than(pick(i)).unwrap();
                }
                Op::Reopen => {
                    let before = (snapshot(&spool), spool.stats());
                    drop(spool);
                    let (again, recovery) = Spool::open(s.clone()).unwrap();
                    proptest::prop_assert_eq!(recovery.corrupt_tail, None);
                    proptest::prop_assert_eq!((snapshot(&again), again.stats()), before);
                    spool = again;
                }
            }
            let stats = spool.stats();
            proptest::prop_assert!(stats.pending + stats.superseded + stats.rejected <= 5);
            proptest::prop_assert!(stats.bytes <= 6000);
            let order = ids(&spool);
            proptest::prop_assert!(order.windows(2).all(|w| w[0] < w[1]));
        }
        let before = (snapshot(&spool), spool.stats(), spool.next_to_publish().cloned());
        drop(spool);
        let (again, _) = Spool::open(s).unwrap();
        proptest::prop_assert_eq!(
            (snapshot(&again), again.stats(), again.next_to_publish().cloned()),
            before
        );
    }
}
