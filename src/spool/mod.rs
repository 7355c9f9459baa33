//! The spool: the durable on-disk outbox of encoded metrics reports (append + fsync, publish
//! order, ack, reject, bounds with drop-oldest), recovered after `kill -9` or a torn write.
//!
//! # Storage: an append-only log of checksummed records, not an embedded database
//!
//! The spool is one file, `<state_dir>/spool/spool.log`, of CRC-32-framed records
//! ([`record`]): `Append` a report, then `Ack`, `Drop`, `Supersede` or `Reject` it. The state is the
//! replay of the log. When the file holds more than twice the live records plus
//! [`COMPACT_SLACK_BYTES`], it is compacted: the live entries are written to `spool.log.tmp`,
//! fsynced, renamed over the log, and the directory is fsynced.
//!
//! redb (a well-kept ACID store) was considered and not taken, because:
//! - **Wear.** A report every 5 minutes is ~1–2 KB. The log writes those bytes plus an 18-byte
//!   frame and a 17-byte ack record, and rewrites only the live entries once per ~30 cycles. A
//!   copy-on-write B-tree rewrites whole pages per commit (leaf, branches, allocator state, header),
//!   two commits per report (insert, remove). Measured here with redb 4.6.0 (insert + remove of a
//!   1500-byte value, `wchar` from `/proc/self/io`): 37.5 KB written per report, ~24× the log's
//!   ~1.55 KB. On an SD card every rewritten page counts.
//! - **Recovery we control.** A torn tail is cut with its byte count logged; nothing can turn a
//!   damaged file into a start-up failure loop. The reader is a pure function over bytes
//!   ([`record::decode_all`]) that a fuzz target can call directly.
//! - **Size and toolchain.** The log is a few hundred lines on `crc32fast` (already a dependency).
//!   redb 4.6.0 added 590 KB to a stripped x86-64 test binary (opt-level z, LTO; 300 KB → 890 KB)
//!   against a 3 MiB armv7 budget, and needs Rust 1.90 (this crate's MSRV is 1.85).
//!
//! What the log does not do, because the spool does not need it: concurrent readers (one process
//! holds an `flock` on the spool directory), transactions across keys, indexes.
//!
//! # Durability
//! [`Spool::append`], [`Spool::ack`], [`Spool::reject`] and [`Spool::supersede_older_than`] return
//! only after their record is written and `fdatasync`ed; the in-memory state changes only after
//! that. A failed write is cut back off the file (best effort; any leftover is cut before the next
//! write), so after a disk-full or read-only error the spool is unchanged and usable, and a later
//! call succeeds once space is back. A crash at any moment leaves a valid prefix, a torn tail that
//! [`Spool::open`] cuts and logs, or a leftover `spool.log.tmp` that it removes. Other damage (a
//! flipped bit, a damaged header, garbage between records) costs only the records it hits: replay
//! resynchronises on the next intact record (see [`record`]), a copy of the damaged file is kept as
//! [`DAMAGED_NAME`] (one copy, at most [`DAMAGED_COPY_MAX_BYTES`]), and the log is rewritten from
//! what was read. `open` never fails on file content (except a newer format version, left
//! untouched); on a disk that cannot be written it still opens and reads the spool after a torn
//! tail, and the cut waits for the first write. A log path that is not a regular file (a
//! directory, a FIFO, a link to a device) is [`Error::NotAFile`], and is never read.
//!
//! A failed `ack` leaves the entry pending: it is published again later, and the service discards
//! a report id it has already seen (spec D.1), so a retry costs a message, not a duplicate.
//!
//! # Bounds and the full policy (style rule 7)
//! At most `max_reports` entries and `max_bytes` payload bytes are held (pending and history
//! alike). When an append would exceed either, the oldest **history** entries (superseded or
//! rejected) are dropped first, then the oldest **pending** ones: a report not yet sent is worth
//! more than one kept for inspection. Drops are durable `Drop` records, counted in
//! [`Stats::dropped_total`] (kept across restarts), and logged once per episode (a warning when
//! dropping starts, an info line with the count when an append fits again). An entry larger than
//! `max_bytes` on its own is refused with [`Error::EntryTooLarge`].
//!
//! # Backlog after an outage (spec: metrics-report.md D.12, A.4)
//! AWS throttles to one report per 5 minutes and does not accept history, so:
//! - [`Backlog::Latest`] (default): [`Spool::next_to_publish`] is the newest pending entry. When
//!   the agent publishes it, it calls [`Spool::supersede_older_than`] with its id: older pending
//!   entries become superseded history, kept on disk and counted, never published.
//! - [`Backlog::All`]: the oldest pending entry first; the agent paces publishes at the report
//!   interval, for brokers that want every report.
//!
//! Entries leave on acknowledgement, not on send: [`Spool::ack`] removes an accepted report;
//! [`Spool::reject`] keeps a rejected one as history with its `ErrorCode`/`ErrorMessage` (spec
//! A.3, D.13); an entry with no answer stays pending and is offered again on the next connection.

pub mod record;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::report::Format;

use record::{CorruptTail, Corruption, Record};

/// Default for `[spool] max_reports`: about 3.5 days of reports at the 5-minute AWS cadence.
pub const DEFAULT_MAX_REPORTS: usize = 1000;
/// Default for `[spool] max_bytes`: 1 MiB of encoded reports.
pub const DEFAULT_MAX_BYTES: u64 = 1_048_576;
/// Dead bytes tolerated in the log beyond the live records before it is compacted. 64 KiB means
/// one compaction per ~30 report cycles at 2 KB a report: few rewrites for an SD card, a small file.
pub const COMPACT_SLACK_BYTES: u64 = 64 * 1024;
/// Default for `[spool] drain_interval_secs`: a backlog drains at one report a second (plus the
/// answer's round trip), far faster than reports are made.
pub const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_secs(1);
/// Name of the spool's directory inside the state directory.
pub const DIR_NAME: &str = "spool";
/// Name of the log file inside the spool directory.
pub const LOG_NAME: &str = "spool.log";
/// Name of the compaction's temporary file inside the spool directory.
pub const TMP_NAME: &str = "spool.log.tmp";
/// Name of the copy of a damaged log, kept beside it before the log is rewritten without the
/// damage. One copy: a later damage replaces it (the newest is the one worth reading).
pub const DAMAGED_NAME: &str = "spool.log.damaged";
/// A damaged log larger than this is not copied (logged instead): a default spool at its
/// compaction threshold is about 2.2 MiB, and the state directory may sit on a small flash.
pub const DAMAGED_COPY_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// How the spool is set up: the `[spool]` config section plus the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The agent's state directory; the spool lives in its `spool/` subdirectory.
    pub dir: PathBuf,
    /// Most entries held, pending and history together (`max_reports`, at least 1).
    pub max_reports: usize,
    /// Most payload bytes held, pending and history together (`max_bytes`, at least 1).
    pub max_bytes: u64,
    /// Which pending entry goes out first after an outage (`backlog`).
    pub backlog: Backlog,
    /// `backlog = "all"`: the pause between two reports of a backlog (`drain_interval_secs`);
    /// used by the publisher, which drains the spool.
    pub drain_interval: Duration,
}

impl Settings {
    /// Settings with the documented defaults for the state directory `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Settings {
            dir: dir.into(),
            max_reports: DEFAULT_MAX_REPORTS,
            max_bytes: DEFAULT_MAX_BYTES,
            backlog: Backlog::default(),
            drain_interval: DEFAULT_DRAIN_INTERVAL,
        }
    }
}

/// Backlog policy after an outage (`[spool] backlog = "latest" | "all"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backlog {
    /// Publish the newest pending report; older ones become superseded history (AWS's rule).
    #[default]
    Latest,
    /// Publish every pending report: the backlog oldest first, one per `drain_interval`, and each
    /// new report when it is made.
    All,
}

impl Backlog {
    /// The one backlog rule: of the pending `candidates`, the one to publish next — the newest
    /// (highest id) under [`Backlog::Latest`], the oldest (lowest id) under [`Backlog::All`]. On
    /// equal ids, the last candidate under `Latest`, the first under `All`.
    pub fn choose<'a>(self, candidates: impl IntoIterator<Item = &'a Entry>) -> Option<&'a Entry> {
        let candidates = candidates.into_iter();
        match self {
            Backlog::Latest => candidates.max_by_key(|e| e.id),
            Backlog::All => candidates.min_by_key(|e| e.id),
        }
    }
}

/// One spooled report, opaque to the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Report id; strictly increasing across appends and restarts.
    pub id: u64,
    /// The payload's encoding (stored as a one-byte tag: 0 JSON, 1 CBOR).
    pub format: Format,
    /// The encoded report.
    pub payload: Vec<u8>,
}

/// Where an entry stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryState {
    /// Not yet accepted; offered by [`Spool::next_to_publish`].
    Pending,
    /// History: a newer report was published in its place ([`Backlog::Latest`]).
    Superseded,
    /// History: the broker rejected it; never published again.
    Rejected {
        /// The broker's `ErrorCode` (at most [`record::MAX_CODE_BYTES`]).
        code: String,
        /// The broker's `ErrorMessage` (at most [`record::MAX_MESSAGE_BYTES`]).
        message: String,
    },
}

/// What [`Spool::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Entries held after recovery (pending and history).
    pub entries: usize,
    /// Of those, pending ones.
    pub pending: usize,
    /// The first damage found in the log (a torn or corrupt tail, or a damaged record with intact
    /// ones after it), if any (logged once as a warning).
    pub corrupt_tail: Option<CorruptTail>,
    /// Bytes of the log that were in no intact record and were discarded.
    pub skipped_bytes: u64,
    /// Records read after the first damage by resynchronising on the next intact record.
    pub resynced: usize,
    /// Where the damaged log was copied before it was rewritten (see [`DAMAGED_NAME`]).
    pub damaged_copy: Option<PathBuf>,
    /// Entries dropped while loading because the bounds are now smaller than the file's content.
    pub dropped: usize,
    /// Well-checksummed records that did not fit the state (e.g. a non-increasing id), skipped.
    pub ignored_records: usize,
    /// The highest report id ever appended, if any.
    pub last_id: Option<u64>,
}

impl Recovery {
    /// Bytes discarded from the log (0 when the log was intact): a torn tail, or the damaged
    /// spans that were skipped.
    pub fn cut_bytes(&self) -> u64 {
        self.skipped_bytes
    }
}

/// Result of a successful [`Spool::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Entries dropped to make room (history first, then the oldest pending).
    pub dropped_oldest: usize,
    /// Of those, pending ones (reports that will never be sent).
    pub dropped_pending: usize,
}

/// Counters for status output and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Entries waiting to be published or answered.
    pub pending: usize,
    /// History entries replaced by a newer report.
    pub superseded: usize,
    /// History entries the broker rejected.
    pub rejected: usize,
    /// Payload bytes held (what `max_bytes` bounds).
    pub bytes: u64,
    /// Size of the log file on disk.
    pub file_bytes: u64,
    /// Entries dropped by the bounds since the spool was created.
    pub dropped_total: u64,
    /// The highest report id ever appended.
    pub last_id: Option<u64>,
}

/// A read-only view of a spool on disk, from [`Spool::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// Every entry with its state, oldest first.
    pub entries: Vec<(Entry, EntryState)>,
    /// Counters, as [`Spool::stats`] would give them after an open (before any repair).
    pub stats: Stats,
    /// A corrupt or torn tail that an open would cut.
    pub corrupt_tail: Option<CorruptTail>,
}

/// What kind of I/O failure an [`Error::Io`] is, so the agent can name the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCause {
    /// No space (`ENOSPC`), quota (`EDQUOT`) or file size limit (`EFBIG`).
    DiskFull,
    /// Read-only file system (`EROFS`) or no write permission (`EACCES`, `EPERM`).
    ReadOnly,
    /// Anything else.
    Other,
}

impl IoCause {
    /// Classifies an I/O error by its OS error number.
    pub fn of(error: &io::Error) -> IoCause {
        match error.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => IoCause::DiskFull,
            Some(libc::EROFS | libc::EACCES | libc::EPERM) => IoCause::ReadOnly,
            _ => IoCause::Other,
        }
    }
}

impl std::fmt::Display for IoCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IoCause::DiskFull => "disk full",
            IoCause::ReadOnly => "read-only file system or no write permission",
            IoCause::Other => "I/O error",
        })
    }
}

/// Why a spool operation failed. A corrupt log is not an error: [`Spool::open`] repairs it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed; `cause` says whether the disk is full or not writable. The OS
    /// error is part of the message (one log line says it all) and is also the error's source.
    #[error("cannot {op} {}: {cause} ({source})", path.display())]
    Io {
        /// What was being done ("append to", "create directory", …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Disk full, read-only, or other.
        cause: IoCause,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds the spool directory's lock.
    #[error("spool directory {} is in use by another process", path.display())]
    Locked {
        /// The spool directory.
        path: PathBuf,
    },
    /// The log is from a newer format; it is left untouched.
    #[error("spool file {} has format version {version}; this agent reads version {supported} and leaves it untouched", path.display())]
    UnsupportedVersion {
        /// The log file.
        path: PathBuf,
        /// Version found in the file.
        version: u8,
        /// Version this code reads.
        supported: u8,
    },
    /// The log path exists but is not a regular file.
    #[error("spool path {} is not a regular file", path.display())]
    NotAFile {
        /// The log path.
        path: PathBuf,
    },
    /// The entry alone exceeds `max_bytes` or [`record::MAX_PAYLOAD_BYTES`].
    #[error("report {id} is {size} bytes, more than the spool holds ({max} bytes)")]
    EntryTooLarge {
        /// Report id.
        id: u64,
        /// Payload size.
        size: u64,
        /// The limit it exceeds.
        max: u64,
    },
    /// Report ids must be strictly increasing (spec: metrics-report.md D.1).
    #[error("report id {id} is not greater than the last spooled id {last}")]
    IdNotIncreasing {
        /// The refused id.
        id: u64,
        /// The last id appended.
        last: u64,
    },
    /// A setting is out of range.
    #[error("invalid spool settings: {0}")]
    InvalidSettings(&'static str),
}

impl Error {
    /// The kind of I/O failure, for an [`Error::Io`].
    pub fn io_cause(&self) -> Option<IoCause> {
        match self {
            Error::Io { cause, .. } => Some(*cause),
            _ => None,
        }
    }

    fn io(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            cause: IoCause::of(&source),
            source,
        }
    }
}

/// An entry and where it stands.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    state: EntryState,
}

/// The durable outbox. One per state directory (an `flock` on the spool directory enforces it).
#[derive(Debug)]
pub struct Spool {
    settings: Settings,
    dir: PathBuf,
    log_path: PathBuf,
    /// The spool directory, opened read-only: holds the lock and is fsynced after a rename.
    dir_handle: File,
    /// Ordered by id, oldest first.
    slots: VecDeque<Slot>,
    payload_bytes: u64,
    /// Length of the valid, fsynced log; anything beyond it on disk is a failed write to cut.
    file_len: u64,
    last_id: Option<u64>,
    dropped_total: u64,
    /// Entries dropped in the current drop episode (0 when not dropping).
    episode_dropped: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `settings.dir/spool/`, replays the log, cuts a corrupt or
    /// torn tail (logged once as a warning) and applies the bounds.
    pub fn open(settings: Settings) -> Result<(Spool, Recovery), Error> {
        if settings.max_reports == 0 {
            return Err(Error::InvalidSettings("max_reports must be at least 1"));
        }
        if settings.max_bytes == 0 {
            return Err(Error::InvalidSettings("max_bytes must be at least 1"));
        }
        let dir = settings.dir.join(DIR_NAME);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
            // The new directory entry must survive a crash too.
            sync_dir(&settings.dir).map_err(|e| Error::io("sync directory", &settings.dir, e))?;
        }
        let dir_handle = File::open(&dir).map_err(|e| Error::io("open directory", &dir, e))?;
        lock(&dir_handle, &dir)?;
        let log_path = dir.join(LOG_NAME);
        let mut spool = Spool {
            settings,
            dir,
            log_path,
            dir_handle,
            slots: VecDeque::new(),
            payload_bytes: 0,
            file_len: 0,
            last_id: None,
            dropped_total: 0,
            episode_dropped: 0,
        };
        let tmp = spool.dir.join(TMP_NAME);
        if tmp.exists() {
            // A compaction was interrupted before its rename: the log is still the truth. If the
            // file cannot go (read-only), the next compaction truncates it anyway.
            match fs::remove_file(&tmp) {
                Ok(()) => tracing::debug!(
                    path = %tmp.display(),
                    "Removed an interrupted spool compaction."
                ),
                Err(e) => tracing::warn!(
                    path = %tmp.display(),
                    error = %Error::io("remove", &tmp, e),
                    "Cannot remove an interrupted spool compaction; leaving it."
                ),
            }
        }
        let mut recovery = Recovery {
            entries: 0,
            pending: 0,
            corrupt_tail: None,
            skipped_bytes: 0,
            resynced: 0,
            damaged_copy: None,
            dropped: 0,
            ignored_records: 0,
            last_id: None,
        };
        let exists = match fs::metadata(&spool.log_path) {
            Ok(meta) if meta.is_file() => true,
            Ok(_) => {
                return Err(Error::NotAFile {
                    path: spool.log_path,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io("inspect", &spool.log_path, e)),
        };
        let mut rewrite = !exists;
        if exists {
            let replayed = spool.replay(&mut recovery)?;
            let valid_len = replayed.valid_len;
            if let Some(tail) = replayed.damage {
                if let Corruption::UnsupportedVersion(version) = tail.reason {
                    return Err(Error::UnsupportedVersion {
                        path: spool.log_path,
                        version,
                        supported: record::VERSION,
                    });
                }
                recovery.corrupt_tail = Some(tail);
                recovery.skipped_bytes = replayed.skipped;
                recovery.resynced = replayed.resynced;
                // Damage with nothing intact after it is a tail: cut it, as after a crash. Intact
                // records after a hole (or a damaged header) mean the log is rewritten from what
                // was read. Anything but a crash's torn write or zero-filled space is kept in a copy.
                let tail_only = replayed.resynced == 0;
                let crash = matches!(
                    tail.reason,
                    Corruption::Torn | Corruption::LengthOutOfRange(0)
                );
                if !(tail_only && crash) {
                    recovery.damaged_copy = spool.keep_damaged_copy();
                }
                if tail_only {
                    tracing::warn!(
                        path = %spool.log_path.display(),
                        offset = tail.offset,
                        bytes = tail.len,
                        reason = %tail.reason,
                        "Spool file had a corrupt tail; cut it and kept the records before it."
                    );
                } else {
                    tracing::warn!(
                        path = %spool.log_path.display(),
                        offset = tail.offset,
                        skipped_bytes = replayed.skipped,
                        resynced_records = replayed.resynced,
                        reason = %tail.reason,
                        copy = %recovery.damaged_copy.as_deref().map_or_else(|| "none".into(), |p| p.display().to_string()),
                        "Spool file was damaged; kept every intact record and rewrote the log without the damage."
                    );
                }
                if valid_len < record::FILE_HEADER_LEN as u64 || !tail_only {
                    rewrite = true;
                } else if let Err(error) = truncate(&spool.log_path, valid_len) {
                    // Not fatal: every write first cuts the file back to the valid length, and a
                    // spool on a read-only disk can still be opened and inspected.
                    tracing::warn!(%error, "Cannot cut the spool's corrupt tail yet; the next write will.");
                }
            }
            spool.file_len = valid_len;
        }
        if rewrite {
            // No usable file (new, or not even a valid header): nothing can be written without one.
            spool.compact()?;
        } else if recovery.dropped > 0 {
            // Persist the drops now; if that fails, replaying the same log drops the same entries.
            if let Err(error) = spool.compact() {
                tracing::warn!(%error, "Spool compaction failed; keeping the uncompacted log.");
            }
        } else {
            spool.maybe_compact();
        }
        recovery.entries = spool.slots.len();
        recovery.pending = spool.stats().pending;
        recovery.last_id = spool.last_id;
        if recovery.dropped > 0 {
            tracing::warn!(
                dropped = recovery.dropped,
                max_reports = spool.settings.max_reports,
                max_bytes = spool.settings.max_bytes,
                "Spool held more than its bounds allow; dropped the oldest entries."
            );
        }
        Ok((spool, recovery))
    }

    /// Adds a pending entry, durably (written and fsynced) before returning. Drops the oldest
    /// entries first if the bounds require it (history before pending; counted and logged).
    pub fn append(&mut self, entry: Entry) -> Result<Appended, Error> {
        let size = entry.payload.len() as u64;
        let max = self
            .settings
            .max_bytes
            .min(record::MAX_PAYLOAD_BYTES as u64);
        if size > max {
            return Err(Error::EntryTooLarge {
                id: entry.id,
                size,
                max,
            });
        }
        if let Some(last) = self.last_id.filter(|&last| entry.id <= last) {
            return Err(Error::IdNotIncreasing { id: entry.id, last });
        }
        let victims = self.victims(1, size);
        let mut buf = Vec::with_capacity(victims.len() * 17 + entry.payload.len() + 32);
        for slot in victims.iter().filter_map(|&i| self.slots.get(i)) {
            record::encode(&Record::Drop { id: slot.entry.id }, &mut buf);
        }
        record::encode_append(&entry, &mut buf);
        self.write("append to", &buf)?;

        let mut dropped_pending = 0;
        // Remove from the back so the earlier indices stay valid (victims are ascending).
        for &index in victims.iter().rev() {
            if let Some(slot) = self.slots.remove(index) {
                dropped_pending += usize::from(slot.state == EntryState::Pending);
                self.payload_bytes -= slot.entry.payload.len() as u64;
            }
        }
        // The counter comes from the file's Meta record: saturate, never overflow (fuzz: spool_open).
        self.dropped_total = self.dropped_total.saturating_add(victims.len() as u64);
        self.last_id = Some(entry.id);
        self.payload_bytes += size;
        self.slots.push_back(Slot {
            entry,
            state: EntryState::Pending,
        });
        self.note_drops(victims.len(), dropped_pending);
        if !victims.is_empty() {
            self.maybe_compact();
        }
        Ok(Appended {
            dropped_oldest: victims.len(),
            dropped_pending,
        })
    }

    /// The entry to publish next, if any: the newest pending one under [`Backlog::Latest`], the
    /// oldest pending one under [`Backlog::All`] ([`Backlog::choose`]; the agent's publisher
    /// applies the same rule over the spool and its memory outbox).
    pub fn next_to_publish(&self) -> Option<&Entry> {
        let pending = self
            .slots
            .iter()
            .filter(|s| s.state == EntryState::Pending)
            .map(|s| &s.entry);
        self.settings.backlog.choose(pending)
    }

    /// Marks every pending entry with an id below `id` as superseded history, durably; returns
    /// how many. Under [`Backlog::Latest`] the agent calls it with the id it is about to publish.
    pub fn supersede_older_than(&mut self, id: u64) -> Result<usize, Error> {
        let mut buf = Vec::new();
        let mut count = 0;
        for slot in self.slots.iter().take_while(|s| s.entry.id < id) {
            if slot.state == EntryState::Pending {
                record::encode(&Record::Supersede { id: slot.entry.id }, &mut buf);
                count += 1;
            }
        }
        if count == 0 {
            return Ok(0);
        }
        self.write("record superseded reports in", &buf)?;
        for slot in self.slots.iter_mut().take_while(|s| s.entry.id < id) {
            if slot.state == EntryState::Pending {
                slot.state = EntryState::Superseded;
            }
        }
        self.maybe_compact();
        Ok(count)
    }

    /// The report was accepted: removes it, durably. `false` if no entry has this id.
    pub fn ack(&mut self, id: u64) -> Result<bool, Error> {
        let Some(index) = self.index_of(id) else {
            return Ok(false);
        };
        let mut buf = Vec::with_capacity(17);
        record::encode(&Record::Ack { id }, &mut buf);
        self.write("record an accepted report in", &buf)?;
        if let Some(slot) = self.slots.remove(index) {
            self.payload_bytes -= slot.entry.payload.len() as u64;
        }
        self.maybe_compact();
        Ok(true)
    }

    /// The report was rejected: keeps it as history with the broker's `ErrorCode` and
    /// `ErrorMessage` (cut to their caps), never to be published again. `false` if no entry has
    /// this id or it is already rejected.
    pub fn reject(&mut self, id: u64, code: &str, message: &str) -> Result<bool, Error> {
        let Some(index) = self.index_of(id) else {
            return Ok(false);
        };
        if matches!(
            self.slots.get(index).map(|s| &s.state),
            Some(EntryState::Rejected { .. })
        ) {
            return Ok(false);
        }
        let mut buf = Vec::new();
        record::encode_reject(id, code, message, &mut buf);
        self.write("record a rejected report in", &buf)?;
        if let Some(slot) = self.slots.get_mut(index) {
            slot.state = EntryState::Rejected {
                code: record::truncate_utf8(code, record::MAX_CODE_BYTES).to_owned(),
                message: record::truncate_utf8(message, record::MAX_MESSAGE_BYTES).to_owned(),
            };
        }
        self.maybe_compact();
        Ok(true)
    }

    /// Reads the spool in `settings.dir` without locking, writing or repairing anything: for
    /// `status` and inspection while an agent may be running. A write in progress may show as a
    /// corrupt tail here; only [`Spool::open`] cuts it. A missing log file reads as empty.
    pub fn inspect(settings: &Settings) -> Result<Inspection, Error> {
        let dir = settings.dir.join(DIR_NAME);
        let log_path = dir.join(LOG_NAME);
        let mut spool = Spool {
            settings: settings.clone(),
            dir_handle: File::open(&settings.dir)
                .map_err(|e| Error::io("open directory", &settings.dir, e))?,
            dir,
            log_path,
            slots: VecDeque::new(),
            payload_bytes: 0,
            file_len: 0,
            last_id: None,
            dropped_total: 0,
            episode_dropped: 0,
        };
        let mut recovery = Recovery {
            entries: 0,
            pending: 0,
            corrupt_tail: None,
            skipped_bytes: 0,
            resynced: 0,
            damaged_copy: None,
            dropped: 0,
            ignored_records: 0,
            last_id: None,
        };
        let mut corrupt_tail = None;
        match fs::metadata(&spool.log_path) {
            Ok(meta) if meta.is_file() => {
                let replayed = spool.replay(&mut recovery)?;
                spool.file_len = replayed.valid_len;
                corrupt_tail = replayed.damage.filter(|t| t.len > 0);
            }
            Ok(_) => {
                return Err(Error::NotAFile {
                    path: spool.log_path,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("inspect", &spool.log_path, e)),
        }
        Ok(Inspection {
            stats: spool.stats(),
            corrupt_tail,
            entries: spool
                .slots
                .into_iter()
                .map(|s| (s.entry, s.state))
                .collect(),
        })
    }

    /// Counters for status output.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            pending: 0,
            superseded: 0,
            rejected: 0,
            bytes: self.payload_bytes,
            file_bytes: self.file_len,
            dropped_total: self.dropped_total,
            last_id: self.last_id,
        };
        for slot in &self.slots {
            match slot.state {
                EntryState::Pending => stats.pending += 1,
                EntryState::Superseded => stats.superseded += 1,
                EntryState::Rejected { .. } => stats.rejected += 1,
            }
        }
        stats
    }

    /// The highest report id ever appended (kept across restarts and compaction).
    pub fn last_id(&self) -> Option<u64> {
        self.last_id
    }

    /// Every entry held, oldest first, with its state (for status and inspection).
    pub fn entries(&self) -> impl Iterator<Item = (&Entry, &EntryState)> + '_ {
        self.slots.iter().map(|s| (&s.entry, &s.state))
    }

    /// The entry with this id and its state, if held.
    pub fn get(&self, id: u64) -> Option<(&Entry, &EntryState)> {
        self.index_of(id)
            .and_then(|i| self.slots.get(i))
            .map(|s| (&s.entry, &s.state))
    }

    /// The settings the spool was opened with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&id, |s| s.entry.id).ok()
    }

    /// Indices (ascending) of the entries to drop so that `extra` more entries of `extra_bytes`
    /// fit: history oldest first, then pending oldest first.
    fn victims(&self, extra: usize, extra_bytes: u64) -> Vec<usize> {
        let mut count = self.slots.len() + extra;
        let mut bytes = self.payload_bytes + extra_bytes;
        let mut victims = Vec::new();
        let history = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state != EntryState::Pending);
        let pending = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state == EntryState::Pending);
        for (index, slot) in history.chain(pending) {
            if count <= self.settings.max_reports && bytes <= self.settings.max_bytes {
                break;
            }
            count -= 1;
            bytes -= slot.entry.payload.len() as u64;
            victims.push(index);
        }
        victims.sort_unstable();
        victims
    }

    /// One log line per drop episode: a warning when it starts, an info line when it ends.
    fn note_drops(&mut self, dropped: usize, dropped_pending: usize) {
        if dropped > 0 {
            if self.episode_dropped == 0 {
                tracing::warn!(
                    dropped,
                    dropped_pending,
                    max_reports = self.settings.max_reports,
                    max_bytes = self.settings.max_bytes,
                    "Spool is full; dropping the oldest entries (history first, then unsent reports)."
                );
            }
            self.episode_dropped = self.episode_dropped.saturating_add(dropped as u64);
        } else if self.episode_dropped > 0 {
            tracing::info!(
                dropped = self.episode_dropped,
                "Spool has room again; stopped dropping entries."
            );
            self.episode_dropped = 0;
        }
    }

    /// Writes `buf` at the end of the valid log and fsyncs it. On failure the partial write is cut
    /// off again (best effort; [`Spool::write`] cuts any leftover first) and nothing changes.
    fn write(&mut self, op: &'static str, buf: &[u8]) -> Result<(), Error> {
        let path = &self.log_path;
        // Opened per write, not held: a spool on a remounted or replaced file system is picked
        // up again, and a held writable descriptor would block a read-only remount.
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| Error::io(op, path, e))?;
        let result = (|| {
            if file.metadata()?.len() != self.file_len {
                file.set_len(self.file_len)?;
            }
            file.write_all_at(buf, self.file_len)?;
            file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.file_len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = file.set_len(self.file_len).and_then(|()| file.sync_data());
                Err(Error::io(op, path, e))
            }
        }
    }

    /// Bytes a freshly compacted log would take.
    fn live_len(&self) -> u64 {
        let meta = record::encoded_len(&Record::Meta {
            last_id: None,
            dropped_total: 0,
        });
        let entries: usize = self
            .slots
            .iter()
            .map(|s| {
                record::FRAME_HEADER_LEN
                    + 1
                    + 8
                    + 1
                    + s.entry.payload.len()
                    + match &s.state {
                        EntryState::Pending => 0,
                        EntryState::Superseded => record::FRAME_HEADER_LEN + 9,
                        EntryState::Rejected { code, message } => {
                            record::FRAME_HEADER_LEN + 11 + code.len() + message.len()
                        }
                    }
            })
            .sum();
        (record::FILE_HEADER_LEN + meta + entries) as u64
    }

    /// Compacts when the log holds more than twice its live bytes plus [`COMPACT_SLACK_BYTES`].
    /// A failure is logged and left for the next call: the old log is still valid.
    fn maybe_compact(&mut self) {
        if self.file_len <= 2 * self.live_len() + COMPACT_SLACK_BYTES {
            return;
        }
        if let Err(error) = self.compact() {
            tracing::warn!(%error, "Spool compaction failed; keeping the uncompacted log.");
        }
    }

    /// Rewrites the log with only the live entries: temp file, fsync, rename, directory fsync.
    fn compact(&mut self) -> Result<(), Error> {
        let tmp = self.dir.join(TMP_NAME);
        let result = self.write_compacted(&tmp);
        let written = match result {
            Ok(n) => n,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = fs::rename(&tmp, &self.log_path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("replace", &self.log_path, e));
        }
        let before = self.file_len;
        self.file_len = written;
        // The rename is durable only once the directory is synced; the new log is complete either way.
        self.dir_handle
            .sync_all()
            .map_err(|e| Error::io("sync directory", &self.dir, e))?;
        tracing::debug!(before, after = written, "Spool compacted.");
        Ok(())
    }

    fn write_compacted(&self, tmp: &Path) -> Result<u64, Error> {
        let op = "write compacted spool";
        let file = File::create(tmp).map_err(|e| Error::io(op, tmp, e))?;
        let mut out = BufWriter::new(&file);
        let mut buf = record::file_header().to_vec();
        record::encode(
            &Record::Meta {
                last_id: self.last_id,
                dropped_total: self.dropped_total,
            },
            &mut buf,
        );
        let mut written = 0u64;
        let mut flush = |buf: &mut Vec<u8>, out: &mut BufWriter<&File>| -> io::Result<()> {
            out.write_all(buf)?;
            written += buf.len() as u64;
            buf.clear();
            Ok(())
        };
        let io_result = (|| {
            for slot in &self.slots {
                let id = slot.entry.id;
                record::encode_append(&slot.entry, &mut buf);
                match &slot.state {
                    EntryState::Pending => {}
                    EntryState::Superseded => record::encode(&Record::Supersede { id }, &mut buf),
                    EntryState::Rejected { code, message } => {
                        record::encode_reject(id, code, message, &mut buf)
                    }
                }
                flush(&mut buf, &mut out)?;
            }
            flush(&mut buf, &mut out)?;
            out.flush()?;
            drop(out);
            file.sync_all()
        })();
        io_result.map_err(|e| Error::io(op, tmp, e))?;
        Ok(written)
    }

    /// Copies the damaged log to [`DAMAGED_NAME`] beside it (replacing an older copy), unless it
    /// is larger than [`DAMAGED_COPY_MAX_BYTES`]; failures are logged, never fatal.
    fn keep_damaged_copy(&self) -> Option<PathBuf> {
        let copy = self.dir.join(DAMAGED_NAME);
        let len = fs::metadata(&self.log_path).map_or(0, |m| m.len());
        if len > DAMAGED_COPY_MAX_BYTES {
            tracing::warn!(
                path = %self.log_path.display(),
                bytes = len,
                max_bytes = DAMAGED_COPY_MAX_BYTES,
                "The damaged spool file is too large to keep a copy of."
            );
            return None;
        }
        match fs::copy(&self.log_path, &copy) {
            Ok(_) => Some(copy),
            Err(e) => {
                tracing::warn!(error = %Error::io("copy the damaged spool to", &copy, e), "Cannot keep a copy of the damaged spool file.");
                None
            }
        }
    }

    /// Reads the log through the record decoder into the in-memory state, enforcing the bounds as
    /// it goes (memory stays bounded whatever the file holds: one frame and one scan window at a
    /// time), and resynchronises past damage as [`record::decode_all`] does.
    fn replay(&mut self, recovery: &mut Recovery) -> Result<Replayed, Error> {
        let path = self.log_path.clone();
        let op = "read";
        let file = open_regular(&path)?;
        let file_len = file.metadata().map_err(|e| Error::io(op, &path, e))?.len();
        let mut out = Replayed {
            valid_len: 0,
            damage: None,
            skipped: 0,
            resynced: 0,
        };
        let tail = |offset: u64, reason| CorruptTail {
            offset,
            len: file_len - offset,
            reason,
        };
        if file_len == 0 {
            // Created but not yet written: treat as a torn creation so it is rewritten.
            out.damage = Some(tail(0, Corruption::Torn));
            return Ok(out);
        }
        // Invariant: min(file_len, 8) fits in usize on every target.
        let mut header = vec![0u8; file_len.min(record::FILE_HEADER_LEN as u64) as usize];
        read_exact_at(&file, &mut header, 0, &path)?;
        let mut pos = record::FILE_HEADER_LEN as u64;
        let mut frame = Vec::new();
        if let Err(reason) = record::check_file_header(&header) {
            out.damage = Some(tail(0, reason));
            out.skipped = file_len;
            if reason != Corruption::BadMagic || file_len < pos {
                return Ok(out);
            }
            // A damaged magic: the frames after it may be intact.
            match find_frame(&file, pos, file_len, &mut frame, &path)? {
                Some(next) => {
                    out.skipped = next;
                    pos = next;
                }
                None => return Ok(out),
            }
        }
        while pos < file_len {
            match read_frame_at(&file, pos, file_len, &mut frame, &path)? {
                Ok((rec, n)) => {
                    self.apply(rec, recovery);
                    out.resynced += usize::from(out.damage.is_some());
                    pos += n as u64;
                }
                Err(reason) => {
                    if out.damage.is_none() {
                        out.valid_len = pos;
                        out.damage = Some(tail(pos, reason));
                    }
                    let next = find_frame(&file, pos + 1, file_len, &mut frame, &path)?
                        .unwrap_or(file_len);
                    out.skipped += next - pos;
                    pos = next;
                }
            }
        }
        if out.damage.is_none() {
            out.valid_len = pos;
        }
        Ok(out)
    }

    /// Applies one replayed record to the in-memory state.
    fn apply(&mut self, rec: Record, recovery: &mut Recovery) {
        match rec {
            Record::Meta {
                last_id,
                dropped_total,
            } => {
                self.last_id = self.last_id.max(last_id);
                self.dropped_total = self.dropped_total.max(dropped_total);
            }
            Record::Append(entry) => {
                let size = entry.payload.len() as u64;
                // Held entries must stay sorted by id (lookups are binary searches). The Meta
                // record's last_id may be higher: a compacted log starts with it.
                let newest = self.slots.back().map(|s| s.entry.id);
                if newest.is_some_and(|newest| entry.id <= newest) || size > self.settings.max_bytes
                {
                    recovery.ignored_records += 1;
                    return;
                }
                // Enforce the (possibly smaller) bounds while loading.
                let victims = self.victims(1, size);
                for &index in victims.iter().rev() {
                    if let Some(slot) = self.slots.remove(index) {
                        self.payload_bytes -= slot.entry.payload.len() as u64;
                    }
                }
                recovery.dropped += victims.len();
                // The counter comes from the file's Meta record: saturate, never overflow (fuzz: spool_open).
                self.dropped_total = self.dropped_total.saturating_add(victims.len() as u64);
                self.last_id = self.last_id.max(Some(entry.id));
                self.payload_bytes += size;
                self.slots.push_back(Slot {
                    entry,
                    state: EntryState::Pending,
                });
            }
            Record::Ack { id } | Record::Drop { id } => {
                // Not found: dropped while loading under smaller bounds, already counted.
                if let Some(slot) = self.index_of(id).and_then(|i| self.slots.remove(i)) {
                    self.payload_bytes -= slot.entry.payload.len() as u64;
                    if matches!(rec, Record::Drop { .. }) {
                        self.dropped_total = self.dropped_total.saturating_add(1);
                    }
                }
            }
            Record::Supersede { id } => {
                if let Some(slot) = self.index_of(id).and_then(|i| self.slots.get_mut(i)) {
                    if slot.state == EntryState::Pending {
                        slot.state = EntryState::Superseded;
                    }
                }
            }
            Record::Reject { id, code, message } => {
                if let Some(slot) = self.index_of(id).and_then(|i| self.slots.get_mut(i)) {
                    slot.state = EntryState::Rejected { code, message };
                }
            }
        }
    }
}

/// What [`Spool::replay`] found.
struct Replayed {
    /// Length of the valid prefix (before any damage).
    valid_len: u64,
    /// The first damage, if any (`len` runs to the end of the file).
    damage: Option<CorruptTail>,
    /// Bytes in no checked frame.
    skipped: u64,
    /// Records found after the first damage.
    resynced: usize,
}

/// Opens the log for reading, refusing anything but a regular file without blocking on it (a FIFO
/// would block an ordinary open; a device such as `/dev/zero` would read forever).
fn open_regular(path: &Path) -> Result<File, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io("read", path, e))?;
    let meta = file.metadata().map_err(|e| Error::io("read", path, e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    Ok(file)
}

fn read_exact_at(file: &File, buf: &mut [u8], at: u64, path: &Path) -> Result<(), Error> {
    file.read_exact_at(buf, at)
        .map_err(|e| Error::io("read", path, e))
}

/// Reads and checks the frame at `pos` into `frame`: `Ok(Err(_))` is damage, `Err(_)` an I/O error.
/// A length is checked against the bytes present before anything is allocated.
fn read_frame_at(
    file: &File,
    pos: u64,
    file_len: u64,
    frame: &mut Vec<u8>,
    path: &Path,
) -> Result<Result<(Record, usize), Corruption>, Error> {
    let remaining = file_len - pos;
    if remaining < record::FRAME_HEADER_LEN as u64 {
        return Ok(Err(Corruption::Torn));
    }
    let mut frame_header = [0u8; record::FRAME_HEADER_LEN];
    read_exact_at(file, &mut frame_header, pos, path)?;
    let body_len = match record::body_len(&frame_header) {
        Ok(n) => n,
        Err(reason) => return Ok(Err(reason)),
    };
    if body_len as u64 > remaining - record::FRAME_HEADER_LEN as u64 {
        return Ok(Err(Corruption::Torn));
    }
    frame.clear();
    frame.resize(record::FRAME_HEADER_LEN + body_len, 0);
    read_exact_at(file, frame, pos, path)?;
    Ok(record::decode_frame(frame))
}

/// Bytes scanned per read while resynchronising.
const SCAN_WINDOW: usize = 64 * 1024;

/// The streaming form of [`record::resync`]: the first offset at or after `from` where a whole
/// frame passes every check. Reads [`SCAN_WINDOW`] bytes at a time; a candidate whose length field
/// is out of range or beyond the file is skipped without reading its body.
fn find_frame(
    file: &File,
    from: u64,
    file_len: u64,
    frame: &mut Vec<u8>,
    path: &Path,
) -> Result<Option<u64>, Error> {
    const HEADER: usize = record::FRAME_HEADER_LEN;
    let mut window = vec![0u8; SCAN_WINDOW];
    let mut start = from;
    while start + HEADER as u64 <= file_len {
        // Invariant: the min with SCAN_WINDOW fits in usize.
        let n = (file_len - start).min(SCAN_WINDOW as u64) as usize;
        // Invariant: n <= SCAN_WINDOW = window.len().
        let chunk = &mut window[..n];
        read_exact_at(file, chunk, start, path)?;
        // Candidates i with i + HEADER <= n; n >= HEADER here.
        let candidates = n + 1 - HEADER;
        for i in 0..candidates {
            let at = start + i as u64;
            let Some(header) = chunk.get(i..).and_then(|c| c.first_chunk::<HEADER>()) else {
                break;
            };
            let Ok(len) = record::body_len(header) else {
                continue;
            };
            if len as u64 > file_len - at - HEADER as u64 {
                continue;
            }
            let ok = match chunk.get(i..i + HEADER + len) {
                Some(whole) => record::decode_frame(whole).is_ok(),
                None => read_frame_at(file, at, file_len, frame, path)?.is_ok(),
            };
            if ok {
                return Ok(Some(at));
            }
        }
        start += candidates as u64;
    }
    Ok(None)
}

/// Cuts the log to `len` bytes, durably.
fn truncate(path: &Path, len: u64) -> Result<(), Error> {
    let op = "cut the corrupt tail of";
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(op, path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(op, path, e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Takes an exclusive, non-blocking `flock` on the spool directory for the life of `handle`.
///
/// A lock this process released a moment ago can still look held: a child forked by another
/// thread (a custom-metric command, an alarm command) shares the old descriptor until its
/// `exec` closes it (close-on-exec). So a refusal is retried for up to [`LOCK_PATIENCE`] before
/// it counts as another agent holding the spool.
fn lock(handle: &File, dir: &Path) -> Result<(), Error> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        // SAFETY: flock only reads the descriptor number, which `handle` keeps open for this call.
        let rc = unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Error::io("lock", dir, error));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Locked {
                path: dir.to_path_buf(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long [`lock`] waits for a lock that a fork-to-exec window may still hold.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        Settings::new(dir)
    }

    fn entry(id: u64, len: usize) -> Entry {
        Entry {
            id,
            format: Format::Json,
            payload: vec![b'x'; len],
        }
    }

    #[test]
    fn io_errors_are_classified_by_errno() {
        let of = |n| IoCause::of(&io::Error::from_raw_os_error(n));
        assert_eq!(of(libc::ENOSPC), IoCause::DiskFull);
        assert_eq!(of(libc::EFBIG), IoCause::DiskFull);
        assert_eq!(of(libc::EDQUOT), IoCause::DiskFull);
        assert_eq!(of(libc::EROFS), IoCause::ReadOnly);
        assert_eq!(of(libc::EACCES), IoCause::ReadOnly);
        assert_eq!(of(libc::EIO), IoCause::Other);
        let error = Error::io(
            "append to",
            Path::new("/s/spool.log"),
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(error
            .to_string()
            .starts_with("cannot append to /s/spool.log: disk full ("));
    }

    #[test]
    fn the_backlog_policy_reads_lowercase() {
        #[derive(Deserialize)]
        struct S {
            backlog: Backlog,
        }
        let latest: S = toml::from_str("backlog = \"latest\"").unwrap();
        let all: S = toml::from_str("backlog = \"all\"").unwrap();
        assert_eq!(
            (latest.backlog, all.backlog),
            (Backlog::Latest, Backlog::All)
        );
        assert!(toml::from_str::<S>("backlog = \"Latest\"").is_err());
    }

    #[test]
    fn the_backlog_rule_picks_the_newest_or_the_oldest_of_any_candidates_in_any_order() {
        let candidates = [entry(5, 1), entry(2, 1), entry(9, 1), entry(7, 1)];
        assert_eq!(Backlog::Latest.choose(&candidates).map(|e| e.id), Some(9));
        assert_eq!(Backlog::All.choose(&candidates).map(|e| e.id), Some(2));
        assert_eq!(Backlog::Latest.choose(&[]), None);
    }

    #[test]
    fn history_is_dropped_before_pending_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.max_reports = 3;
        let (mut spool, _) = Spool::open(s).unwrap();
        for id in 1..=3 {
            spool.append(entry(id, 10)).unwrap();
        }
        spool
            .reject(2, "InvalidPayload", "Malformed metrics report")
            .unwrap();
        let appended = spool.append(entry(4, 10)).unwrap();
        assert_eq!(appended.dropped_oldest, 1);
        assert_eq!(appended.dropped_pending, 0);
        let ids: Vec<u64> = spool.entries().map(|(e, _)| e.id).collect();
        assert_eq!(ids, [1, 3, 4]);
        let appended = spool.append(entry(5, 10)).unwrap();
        assert_eq!((appended.dropped_oldest, appended.dropped_pending), (1, 1));
        let ids: Vec<u64> = spool.entries().map(|(e, _)| e.id).collect();
        assert_eq!(ids, [3, 4, 5]);
        assert_eq!(spool.stats().dropped_total, 2);
    }

    #[test]
    fn the_live_length_estimate_matches_a_compacted_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(settings(dir.path())).unwrap();
        for id in 1..=5 {
            spool.append(entry(id, 100 + id as usize)).unwrap();
        }
        spool.supersede_older_than(3).unwrap();
        spool
            .reject(4, "InvalidPayload", "Malformed metrics report")
            .unwrap();
        spool.ack(5).unwrap();
        spool.compact().unwrap();
        assert_eq!(spool.stats().file_bytes, spool.live_len());
        assert_eq!(
            fs::metadata(spool.log_path()).unwrap().len(),
            spool.live_len()
        );
    }

    #[test]
    fn a_lock_released_within_the_patience_window_is_taken() {
        // A forked child between fork and exec holds a copy of the descriptor for a moment.
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Spool::open(settings(dir.path())).unwrap();
        let spool_dir = first.log_path().parent().unwrap().to_path_buf();
        drop(first);
        let holder = File::open(&spool_dir).unwrap();
        lock(&holder, &spool_dir).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(holder);
        });
        assert!(Spool::open(settings(dir.path())).is_ok());
        release.join().unwrap();
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Spool::open(settings(dir.path())).unwrap();
        assert!(matches!(
            Spool::open(settings(dir.path())),
            Err(Error::Locked { .. })
        ));
        drop(first);
        assert!(Spool::open(settings(dir.path())).is_ok());
    }
}
