//! Deadlines for connections: a min-heap of `(when, slab key)`.
//!
//! A connection has at most one *current* entry: the loop keeps its time
//! beside the connection (its `armed` field; see [`Timers::arm`]), and an
//! entry is current exactly when the connection at its key has that time
//! armed. Every other entry is stale: its connection is gone, or armed an
//! earlier entry since. Stale entries are not removed from the heap when
//! they go stale; they are dropped when they surface, or all at once by a
//! rebuild.
//!
//! Moving a deadline *later* pushes nothing (the idle deadline moves on
//! every line): when the current entry surfaces, the loop asks the
//! connection for its real deadline, and re-arms if it moved. Moving it
//! *earlier* pushes one entry, which becomes the current one.
//!
//! The cost, provably: `current` entries are at most one per connection;
//! a push that leaves more than `2 × current + SLACK` entries rebuilds the
//! heap from the current ones, freeing more than half of it. A rebuild
//! costs O(entries), and each entry it frees was one earlier push: so an
//! arm costs O(log n) amortised and no rebuild frees nothing. Entries only
//! grow by a push, so the heap never holds more than `2n + SLACK + 1`,
//! with `n` the most connections ever armed at once.
//!
//! With no deadline armed (no idle timeout, no closing client, no client
//! with answers waiting), the heap is empty and the loop sleeps without a
//! timeout: an idle server never wakes.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Stale entries allowed beyond the current ones before a rebuild, so that
/// a handful of connections does not rebuild on every push.
pub const SLACK: usize = 64;

/// One armed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When it comes due.
    pub at: Instant,
    /// The connection's slab key.
    pub key: usize,
}

/// The heap of armed deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    /// Connections with a current entry (their `armed` is `Some`).
    current: usize,
}

impl Timers {
    /// Makes sure the connection at `key`, whose current entry is `armed`,
    /// is woken by `deadline`: pushes an entry only if none is armed or
    /// the deadline is earlier. Returns true if the heap should now be
    /// [`rebuild`](Timers::rebuild)t.
    pub fn arm(
        &mut self,
        armed: &mut Option<Instant>,
        deadline: Option<Instant>,
        key: usize,
    ) -> bool {
        let Some(at) = deadline else {
            return false;
        };
        if armed.is_some_and(|a| a <= at) {
            return false;
        }
        if armed.is_none() {
            self.current += 1;
        }
        *armed = Some(at);
        self.heap.push(Reverse(Entry { at, key }));
        self.heap.len() > 2 * self.current + SLACK
    }

    /// The connection's current entry stops being current: it was popped,
    /// or the connection is freed.
    pub fn disarm(&mut self, armed: &mut Option<Instant>) {
        if armed.take().is_some() {
            debug_assert!(self.current > 0, "more entries disarmed than armed");
            self.current -= 1;
        }
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

    /// Replaces every entry with the current ones (one per connection
    /// with a deadline armed).
    pub fn rebuild(&mut self, current: impl IntoIterator<Item = Entry>) {
        self.heap = current.into_iter().map(Reverse).collect();
        debug_assert_eq!(
            self.heap.len(),
            self.current,
            "a rebuild lost or found entries"
        );
    }

    /// Number of entries (current or stale).
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
        let mut armed = [None; 3];
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            t.arm(&mut armed[i], Some(t0 + Duration::from_millis(ms)), i);
        }
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.peek().map(|e| e.key), Some(1));
        let order: Vec<usize> = std::iter::from_fn(|| t.pop()).map(|e| e.key).collect();
        assert_eq!(order, vec![1, 2, 0]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_later_deadline_pushes_nothing_and_an_earlier_one_pushes_one() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut armed = None;
        t.arm(&mut armed, Some(t0 + Duration::from_secs(10)), 0);
        for s in 11..100 {
            t.arm(&mut armed, Some(t0 + Duration::from_secs(s)), 0);
        }
        assert_eq!(t.len(), 1, "moving later is free");
        t.arm(&mut armed, Some(t0 + Duration::from_secs(2)), 0);
        assert_eq!(t.len(), 2);
        assert_eq!(armed, Some(t0 + Duration::from_secs(2)));
        t.arm(&mut armed, None, 0);
        assert_eq!(
            t.len(),
            2,
            "no deadline: the current entry stays until it surfaces"
        );
    }

    /// The bound in the module docs, under a seeded random mix of arms and
    /// disarms (entries popped, connections freed): every rebuild frees more
    /// than half of the heap, and it never passes 2 × connections + SLACK + 1.
    #[test]
    fn the_heap_stays_within_twice_the_connections() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let mut armed: Vec<Option<Instant>> = vec![None; 500];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15; // seed: replayable
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = (x % 500) as usize;
            let at = t0 + Duration::from_millis(step + (x >> 40) % 1000);
            if x.is_multiple_of(7) {
                t.disarm(&mut armed[key]); // freed, or its entry popped
            } else if t.arm(&mut armed[key], Some(at), key) {
                let before = t.len();
                let current: Vec<Entry> = armed
                    .iter()
                    .enumerate()
                    .filter_map(|(key, a)| a.map(|at| Entry { at, key }))
                    .collect();
                t.rebuild(current);
                assert!(
                    t.len() * 2 < before,
                    "a rebuild freed too little: {before} -> {}",
                    t.len()
                );
            }
            assert!(
                t.len() <= 2 * armed.len() + SLACK + 1,
                "step {step}: {} entries",
                t.len()
            );
        }
    }
}
