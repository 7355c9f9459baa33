//! A bounded time series of (epoch ms, value) points for sliding windows (t−D, t] and trailing
//! histories. Full policy: at `cap` points the oldest point is dropped.
//!
//! spec: detect.md §3.3 (windows), §3.5 (history), §7.2 (baseline).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Time-ordered points, oldest first, at most `cap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeWindow {
    points: VecDeque<(i64, f64)>,
    cap: usize,
}

impl TimeWindow {
    /// An empty series holding at most `cap` points (at least 1).
    pub fn new(cap: usize) -> TimeWindow {
        TimeWindow {
            points: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Appends a point, dropping the oldest when full.
    pub fn push(&mut self, t: i64, v: f64) {
        if self.points.len() >= self.cap {
            self.points.pop_front();
        }
        self.points.push_back((t, v));
    }

    /// Drops points with time <= `t_exclusive` (keeps (t_exclusive, ∞)).
    pub fn prune_through(&mut self, t_exclusive: i64) {
        while self.points.front().is_some_and(|&(t, _)| t <= t_exclusive) {
            self.points.pop_front();
        }
    }

    /// Drops points with time < `t_inclusive` (keeps [t_inclusive, ∞)).
    pub fn prune_before(&mut self, t_inclusive: i64) {
        while self.points.front().is_some_and(|&(t, _)| t < t_inclusive) {
            self.points.pop_front();
        }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Time of the oldest point.
    pub fn oldest(&self) -> Option<i64> {
        self.points.front().map(|p| p.0)
    }

    /// The newest point.
    pub fn last(&self) -> Option<(i64, f64)> {
        self.points.back().copied()
    }

    /// Iterates the values, oldest first.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|p| p.1)
    }

    /// Sum of values.
    pub fn sum(&self) -> f64 {
        self.values().sum()
    }

    /// Maximum value.
    pub fn max(&self) -> Option<f64> {
        self.values().reduce(f64::max)
    }

    /// Minimum value.
    pub fn min(&self) -> Option<f64> {
        self.values().reduce(f64::min)
    }

    /// Heap bytes held (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.points.capacity() * std::mem::size_of::<(i64, f64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_drops_its_oldest_point() {
        let mut w = TimeWindow::new(2);
        w.push(1, 1.0);
        w.push(2, 2.0);
        w.push(3, 3.0);
        assert_eq!(w.values().collect::<Vec<_>>(), vec![2.0, 3.0]);
    }

    #[test]
    fn pruning_keeps_the_half_open_window() {
        let mut w = TimeWindow::new(10);
        for t in [0, 300, 600] {
            w.push(t, 1.0);
        }
        w.prune_through(300);
        assert_eq!(w.oldest(), Some(600));
        w.prune_before(600);
        assert_eq!(w.len(), 1);
        assert_eq!((w.sum(), w.max(), w.min()), (1.0, Some(1.0), Some(1.0)));
    }
}
