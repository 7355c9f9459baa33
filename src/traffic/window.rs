//! The fixed ring of time buckets behind the window queries: bucket `b` holds the events whose
//! time lies in `((b−1)·B, b·B]`, so a window `(t−D, t]` with `t` and `D` multiples of `B` is
//! exactly the buckets `(t−D)/B + 1 ..= t/B` (spec: detect.md §3.3 "Window").
//!
//! The ring has `slots` rows of `columns` cells (column 0 = unscoped "all", column `i+1` = scope
//! `i`), so memory is `slots × columns` cells whatever the traffic. The newest bucket seen is the
//! head; buckets older than `head − slots` are forgotten (full policy: the oldest row is reused),
//! and an event that would land in a forgotten bucket is refused so the caller can count it.

use std::time::Duration;

/// Counts of one bucket for one column. Scoped columns never touch the link fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cell {
    /// PUBLISH packets sent.
    pub(crate) messages_sent: u64,
    /// PUBLISH packets received.
    pub(crate) messages_received: u64,
    /// Payload bytes sent.
    pub(crate) bytes_sent: u64,
    /// Payload bytes received.
    pub(crate) bytes_received: u64,
    /// Denied requests (scoped columns: only those with an in-scope topic).
    pub(crate) authorization_failures: u64,
    /// CONNECT attempts (column 0 only).
    pub(crate) connection_attempts: u64,
    /// Lost connections (column 0 only).
    pub(crate) disconnects: u64,
    /// Largest sent payload; meaningful only when `messages_sent > 0`.
    pub(crate) size_max: u64,
    /// Smallest sent payload; `u64::MAX` when no message was sent.
    pub(crate) size_min: u64,
    /// Sum of sent payloads (equals `bytes_sent`, kept apart for clarity of the size metric).
    pub(crate) size_sum: u64,
}

impl Cell {
    /// A bucket with no events.
    pub(crate) const EMPTY: Cell = Cell {
        messages_sent: 0,
        messages_received: 0,
        bytes_sent: 0,
        bytes_received: 0,
        authorization_failures: 0,
        connection_attempts: 0,
        disconnects: 0,
        size_max: 0,
        size_min: u64::MAX,
        size_sum: 0,
    };

    /// Folds `other` into `self` (window aggregation: sums, max of max, min of min).
    pub(crate) fn merge(&mut self, other: &Cell) {
        self.messages_sent = self.messages_sent.saturating_add(other.messages_sent);
        self.messages_received = self
            .messages_received
            .saturating_add(other.messages_received);
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.authorization_failures = self
            .authorization_failures
            .saturating_add(other.authorization_failures);
        self.connection_attempts = self
            .connection_attempts
            .saturating_add(other.connection_attempts);
        self.disconnects = self.disconnects.saturating_add(other.disconnects);
        self.size_max = self.size_max.max(other.size_max);
        self.size_min = self.size_min.min(other.size_min);
        self.size_sum = self.size_sum.saturating_add(other.size_sum);
    }
}

/// Sentinel bucket id of a row that holds no bucket yet.
const UNUSED: u64 = u64::MAX;

/// Why a window cannot be answered from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forgotten {
    /// First bucket still held.
    pub(crate) oldest_bucket: u64,
}

/// The ring itself.
#[derive(Debug)]
pub(crate) struct Ring {
    /// Bucket width in seconds, ≥ 1.
    bucket_secs: u64,
    /// Number of rows, ≥ 1.
    slots: usize,
    /// Cells per row (1 + scopes).
    columns: usize,
    /// Bucket id held by each row, or [`UNUSED`].
    ids: Vec<u64>,
    /// `slots × columns` cells, row-major.
    cells: Vec<Cell>,
    /// Newest bucket written, if any.
    head: Option<u64>,
}

impl Ring {
    /// An empty ring. The caller validates `bucket_secs ≥ 1` and `slots ≥ 1`.
    pub(crate) fn new(bucket_secs: u64, slots: usize, columns: usize) -> Ring {
        Ring {
            bucket_secs: bucket_secs.max(1),
            slots: slots.max(1),
            columns,
            ids: vec![UNUSED; slots.max(1)],
            cells: vec![Cell::EMPTY; slots.max(1) * columns],
            head: None,
        }
    }

    /// The bucket holding time `t` (since the epoch): `ceil(t / B)`, so bucket ends are inclusive.
    pub(crate) fn bucket_of(&self, t: Duration) -> u64 {
        let secs = t.as_secs();
        // Invariant: bucket_secs >= 1 (clamped in `new`).
        let whole = secs / self.bucket_secs;
        if secs % self.bucket_secs == 0 && t.subsec_nanos() == 0 {
            whole
        } else {
            whole + 1
        }
    }

    /// The row for bucket `b`, advancing (and clearing) rows when `b` is newer than the head.
    /// `None` when `b` is older than everything the ring holds.
    pub(crate) fn row_for_write(&mut self, b: u64) -> Option<usize> {
        let slots = self.slots as u64;
        match self.head {
            Some(head) if b <= head => {
                if head - b >= slots {
                    return None;
                }
            }
            Some(head) => {
                // Clear every row between the old head and `b` (at most `slots` of them).
                let first = (head + 1).max(b.saturating_sub(slots - 1));
                for id in first..=b {
                    self.reset_row(id);
                }
                self.head = Some(b);
            }
            None => self.head = Some(b),
        }
        // Invariant: row < slots = ids.len().
        let row = (b % slots) as usize;
        if self.ids[row] != b {
            // The row held a bucket outside (head − slots, head]: stale, reuse it.
            self.reset_row(b);
        }
        Some(row)
    }

    /// Gives row `id % slots` to bucket `id`, empty.
    fn reset_row(&mut self, id: u64) {
        // Invariant: row < slots = ids.len() (slots >= 1) and cells.len() = slots × columns.
        let row = (id % self.slots as u64) as usize;
        self.ids[row] = id;
        let start = row * self.columns;
        self.cells[start..start + self.columns].fill(Cell::EMPTY);
    }

    /// The cell of `column` in `row` (from [`Self::row_for_write`]).
    pub(crate) fn cell_mut(&mut self, row: usize, column: usize) -> Option<&mut Cell> {
        self.cells.get_mut(row * self.columns + column)
    }

    /// Aggregates `column` over the buckets `first..=last`. Buckets newer than the head are
    /// empty; older than the oldest row held, forgotten.
    pub(crate) fn aggregate(
        &self,
        column: usize,
        first: u64,
        last: u64,
    ) -> Result<Cell, Forgotten> {
        let mut total = Cell::EMPTY;
        let Some(head) = self.head else {
            return Ok(total);
        };
        let oldest = head.saturating_sub(self.slots as u64 - 1);
        if first < oldest && first <= head {
            return Err(Forgotten {
                oldest_bucket: oldest,
            });
        }
        for b in first..=last.min(head) {
            // Invariant: row < slots = ids.len() (slots >= 1).
            let row = (b % self.slots as u64) as usize;
            if self.ids[row] == b {
                if let Some(cell) = self.cells.get(row * self.columns + column) {
                    total.merge(cell);
                }
            }
        }
        Ok(total)
    }

    /// A ring with the same buckets and `columns` columns, where new column `c` copies old column
    /// `source(c)` or starts empty (used when scopes are replaced).
    pub(crate) fn remap(&self, columns: usize, source: impl Fn(usize) -> Option<usize>) -> Ring {
        let mut ring = Ring::new(self.bucket_secs, self.slots, columns);
        ring.ids.clone_from(&self.ids);
        ring.head = self.head;
        for row in 0..self.slots {
            for column in 0..columns {
                if let Some(old) = source(column).filter(|&c| c < self.columns) {
                    // Invariant: row < slots, column < columns and old < self.columns; both
                    // cell vectors are slots × their column count.
                    ring.cells[row * columns + column] = self.cells[row * self.columns + old];
                }
            }
        }
        ring
    }

    /// Bucket width in seconds.
    pub(crate) fn bucket_secs(&self) -> u64 {
        self.bucket_secs
    }

    /// Number of rows.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn bucket_ends_are_inclusive() {
        let ring = Ring::new(300, 12, 1);
        assert_eq!(ring.bucket_of(secs(0)), 0);
        assert_eq!(ring.bucket_of(secs(1)), 1);
        assert_eq!(ring.bucket_of(secs(300)), 1);
        assert_eq!(ring.bucket_of(Duration::from_millis(300_001)), 2);
        assert_eq!(ring.bucket_of(secs(600)), 2);
    }

    #[test]
    fn rolling_past_the_ring_forgets_the_oldest_buckets() {
        let mut ring = Ring::new(300, 3, 1);
        for b in 1..=5 {
            let row = ring.row_for_write(b).unwrap();
            ring.cell_mut(row, 0).unwrap().messages_sent = b;
        }
        // Held: 3, 4, 5.
        assert_eq!(ring.aggregate(0, 3, 5).unwrap().messages_sent, 12);
        assert_eq!(ring.aggregate(0, 2, 4), Err(Forgotten { oldest_bucket: 3 }));
        assert_eq!(ring.row_for_write(2), None);
        // A jump far ahead clears everything.
        ring.row_for_write(100).unwrap();
        assert_eq!(ring.aggregate(0, 98, 100).unwrap().messages_sent, 0);
    }

    #[test]
    fn buckets_before_the_first_write_are_empty_not_forgotten() {
        let mut ring = Ring::new(300, 12, 1);
        let row = ring.row_for_write(100).unwrap();
        ring.cell_mut(row, 0).unwrap().messages_sent = 1;
        assert_eq!(ring.aggregate(0, 89, 100).unwrap().messages_sent, 1);
        // A late event for bucket 95 still finds its row.
        let row = ring.row_for_write(95).unwrap();
        ring.cell_mut(row, 0).unwrap().messages_sent = 2;
        assert_eq!(ring.aggregate(0, 89, 100).unwrap().messages_sent, 3);
        // Windows after the head hold nothing yet.
        assert_eq!(ring.aggregate(0, 101, 112).unwrap().messages_sent, 0);
    }
}
