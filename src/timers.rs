//! Deadlines for connections: a min-heap of `(when, slab key, serial)`.
//!
//! Entries are not removed when a deadline moves. When one reaches the top
//! of the heap, the loop asks the connection for its real deadline: it may
//! have moved later (the client was active since), gone away, or the slot
//! may hold another connection now (the serial differs). That makes moving
//! a deadline free, which matters because the idle deadline moves on every
//! line. The loop settles the top entry every turn, due or not, so the
//! earliest entry, which sets poll's timeout, is always a true deadline.
//! Below the top, stale entries would pile up (a connection whose answers
//! back up and drain arms one each time): when the heap passes twice the
//! connections, the loop rebuilds it from one true entry per connection.
//! So it holds at most 2n + 64 entries, and an arm costs O(log n),
//! amortised.
//!
//! With no deadline armed (no idle timeout, no closing client, no client
//! with answers waiting), the heap is empty and the loop sleeps without a
//! timeout: an idle server never wakes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Entries allowed beyond twice the connections before a rebuild, so that
/// a handful of connections does not rebuild on every push.
pub const SLACK: usize = 64;

/// One armed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When it comes due.
    pub at: Instant,
    /// The connection's slab key.
    pub key: usize,
    /// Which connection held that key when this was armed.
    pub serial: u64,
}

/// The heap of armed deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Arms a deadline.
    pub fn push(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// The earliest armed deadline, if any.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The earliest entry.
    pub fn peek(&self) -> Option<Entry> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    /// Removes the earliest entry.
    pub fn pop(&mut self) -> Option<Entry> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// True once the heap holds more than twice as many entries as there
    /// are connections (plus [`SLACK`]): time to [`rebuild`](Timers::rebuild).
    pub fn is_bloated(&self, connections: usize) -> bool {
        self.heap.len() > 2 * connections + SLACK
    }

    /// Replaces every entry with `entries` (one true entry per connection).
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = Entry>) {
        self.heap = entries.into_iter().map(Reverse).collect();
    }

    /// Number of armed entries (live or stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            t.push(Entry {
                at: t0 + Duration::from_millis(ms),
                key: i,
                serial: 0,
            });
        }
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.peek().map(|e| e.key), Some(1));
        let order: Vec<usize> = std::iter::from_fn(|| t.pop()).map(|e| e.key).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_rebuild_keeps_only_the_entries_given() {
        let now = Instant::now();
        let mut t = Timers::default();
        for serial in 0..200 {
            t.push(Entry {
                at: now,
                key: 0,
                serial,
            });
        }
        assert!(!t.is_bloated(100), "200 <= 2 * 100 + 64");
        assert!(t.is_bloated(1));
        t.rebuild([Entry {
            at: now,
            key: 0,
            serial: 199,
        }]);
        assert_eq!(t.len(), 1);
        assert!(!t.is_empty());
    }
}
