//! How many clients the loop takes, and how many bytes of answers may wait
//! for them, from the command line, the open-file limit and the memory the
//! process may use: pure arithmetic, decided once at start and tested here.
//!
//! What is *not* here: reading the limits from the system ([`crate::sys`]),
//! counting clients against these numbers (the loop, [`crate::server`]),
//! and per-address counting ([`crate::per_ip`]).
//!
//! # The memory rule
//!
//! The defaults must fit a stated worst case in the memory the process may
//! use (its cgroup's limit, else the host's):
//!
//! ```text
//! START_COST                                  the server before any client
//! + max connections × IDLE_CLIENT_COST        every client connected, idle
//! + busy slots × (IDLE_CLIENT_COST + NON_READER_KERNEL_COST)
//!                                             every rejected client that
//!                                             lingers, its socket full
//! + output budget + OUT_CAP                   the budget full, and passed
//!                                             by one client's last read
//! + ⌈budget ÷ OUT_CAP⌉ × NON_READER_KERNEL_COST
//!                                             the non-readers that fill it,
//!                                             their sockets full in the kernel
//! + memory ÷ MARGIN_SHARE                     a margin
//! ≤ memory
//! ```
//!
//! Each cost was measured (docs/reliability.md, "The memory rule"), and
//! counts the kernel's socket memory whether or not the host charges it to
//! the cgroup (cgroup v2 does; v1 only once `memory.kmem.tcp` is limited).
//! Not covered: more than ⌈budget ÷ 64 KiB⌉ clients that all send and
//! never read at the same time; each pins up to `NON_READER_KERNEL_COST`
//! in the kernel until `--output-timeout` closes it.

use crate::config::DEFAULT_OUTPUT_BUDGET;
use crate::conn::OUT_CAP;

/// File descriptors kept back from `--max-connections` by default: stdio,
/// the poll, the signal pipe, listeners, the metrics listener and its
/// scrapes (at most `MAX_SCRAPES`, 4), and rejected clients in flight.
/// Under a small limit, half of it is kept back instead.
pub const RESERVED_FDS: u64 = 32;
/// Rejected clients that may be lingering at once, at least; more when
/// `--max-connections` leaves descriptors to spare. Past this, one more is
/// sent `ERR server busy` and closed at once.
pub const MIN_BUSY_SLOTS: usize = 16;
/// ... and at most.
pub const MAX_BUSY_SLOTS: usize = 1024;
/// Slab keys (clients and lingering rejections, one key each) stay below
/// this; the loop's own tokens (signals, listeners, metrics) sit at and
/// above it. A quarter of `usize`: 2^30 on a 32-bit host (where the old
/// `1 << 40` did not even compile), 2^62 on a 64-bit one; either is far
/// more connections than descriptors, since every key holds one.
pub const MAX_KEYS: usize = 1 << (usize::BITS - 2);

/// The server before its first client: measured 2,084–2,224 KiB resident
/// (release build, x86_64, `VmRSS` right after `listening on`), rounded up
/// for the listener's kernel side and the allocator's growth.
pub const START_COST: u64 = 3 << 20;
/// One idle client, as its host pays it: measured 4,083 B per client (the
/// memory cgroup's usage, grown by 10,000 idle clients, 136 B of it the
/// server's resident memory) where the cgroup charges sockets, as v2 does
/// and v1 does once `memory.kmem.tcp.limit_in_bytes` is set; 1,665–1,713 B
/// where it does not (v1's default). The larger, rounded up.
pub const IDLE_CLIENT_COST: u64 = 4 << 10;
/// The kernel memory one client pins that sends without reading: measured
/// 69,632 B charged to the cgroup's TCP memory per non-reader (`ss -tm`:
/// receive queue 50,755 B, unsent answers 15,475 B, 2,582 B allocated
/// ahead); its answers waiting in user space count in the output budget.
pub const NON_READER_KERNEL_COST: u64 = 68 << 10;
/// A part of the memory kept out of the rule: page tables, the allocator's
/// slack, the kernel's per-cgroup caches, and what was not measured.
pub const MARGIN_SHARE: u64 = 8;
/// The default `--output-budget` is this part of the memory, at most
/// [`DEFAULT_OUTPUT_BUDGET`] and at least one client's [`OUT_CAP`].
pub const BUDGET_SHARE: u64 = 16;
/// This part of the memory left for sockets is kept for rejected clients
/// that linger (busy slots), within [`MIN_BUSY_SLOTS`] and
/// [`MAX_BUSY_SLOTS`]. A lingering client's bytes are read and dropped,
/// but between two reads it may fill its receive buffer: it is counted at
/// [`BUSY_SLOT_COST`].
pub const BUSY_SHARE: u64 = 8;
/// A rejected client lingering: an idle client's cost, and its receive
/// buffer and unsent `ERR` line as a non-reader's.
pub const BUSY_SLOT_COST: u64 = IDLE_CLIENT_COST + NON_READER_KERNEL_COST;

/// The limits the loop enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clients served at once (`--max-connections`, or the smaller of what
    /// the open-file limit leaves after [`RESERVED_FDS`] and what the
    /// memory has room for).
    pub max_connections: usize,
    /// Rejected clients that may linger at once to read their `ERR` line.
    pub busy_slots: usize,
    /// `--max-connections-per-ip`; `None`: no limit.
    pub per_ip: Option<usize>,
    /// The connections the open-file limit has room for; a
    /// `--max-connections` above it means clients will wait in the backlog.
    pub fd_room: usize,
    /// `--output-budget`, or the part of the memory [`BUDGET_SHARE`] says.
    pub output_budget: usize,
    /// The memory the process may use, if known.
    pub memory: Option<u64>,
}

/// What the command line asked for, of the limits; `None`: the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--max-connections-per-ip` (`Some(0)`: none).
    pub max_per_ip: Option<usize>,
    /// `--output-budget`.
    pub output_budget: Option<usize>,
}

impl Limits {
    /// From what the command line asked for, the soft open-file limit in
    /// force and the memory the process may use (`None`: unknown; the
    /// open-file limit alone then sets the default).
    pub fn new(asked: Asked, fd_limit: u64, memory: Option<u64>) -> Limits {
        // Keep RESERVED_FDS back, but never more than half of a small limit.
        let fd_room = fd_limit
            .saturating_sub(RESERVED_FDS)
            .max(fd_limit / 2)
            .max(1);
        let fd_room = usize::try_from(fd_room).unwrap_or(usize::MAX);
        let output_budget = asked
            .output_budget
            .unwrap_or_else(|| memory.map_or(DEFAULT_OUTPUT_BUDGET, default_budget));
        // The memory left for sockets: busy slots first, the rest for
        // clients.
        let mem_busy = memory.map(|m| {
            let slots = socket_room(m, output_budget) / BUSY_SHARE / BUSY_SLOT_COST;
            (slots.min(MAX_BUSY_SLOTS as u64) as usize).max(MIN_BUSY_SLOTS)
        });
        let mem_room = memory.zip(mem_busy).map(|(m, busy)| {
            let room = socket_room(m, output_budget).saturating_sub(busy as u64 * BUSY_SLOT_COST);
            usize::try_from(room / IDLE_CLIENT_COST)
                .unwrap_or(usize::MAX)
                .max(1)
        });
        // With the busy slots on top, keys never reach the loop's tokens.
        let max_connections = asked
            .max_connections
            .unwrap_or_else(|| mem_room.map_or(fd_room, |m| m.min(fd_room)))
            .min(MAX_KEYS - MAX_BUSY_SLOTS);
        // Descriptors left over by --max-connections serve rejections...
        let spare = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS / 2))
            .unwrap_or(usize::MAX)
            .saturating_sub(max_connections);
        let mut busy_slots = spare.clamp(MIN_BUSY_SLOTS, MAX_BUSY_SLOTS);
        // ... as far as the memory the rule kept for them goes.
        if let Some(busy) = mem_busy {
            busy_slots = busy_slots.min(busy);
        }
        let per_ip = match asked.max_per_ip {
            None => Some(default_per_ip(max_connections)),
            Some(0) => None,
            Some(n) => Some(n),
        };
        Limits {
            max_connections,
            busy_slots,
            per_ip,
            fd_room,
            output_budget,
            memory,
        }
    }

    /// True if `--max-connections` was lowered to keep slab keys below
    /// [`MAX_KEYS`] (only a 32-bit host can be asked for that many).
    pub fn clamped(&self, asked: Option<usize>) -> bool {
        asked.is_some_and(|n| n > self.max_connections)
    }

    /// True if `--max-connections` asks for more than the descriptors allow.
    pub fn over_fd_room(&self) -> bool {
        self.max_connections > self.fd_room
    }

    /// The stated worst case (see the module's text) for these limits, in
    /// bytes, margin included.
    pub fn worst_case(&self) -> u64 {
        let clients = self.max_connections as u64;
        let busy = self.busy_slots as u64;
        fixed_cost(self.output_budget)
            .saturating_add(clients.saturating_mul(IDLE_CLIENT_COST))
            .saturating_add(busy.saturating_mul(BUSY_SLOT_COST))
            .saturating_add(self.memory.map_or(0, |m| m / MARGIN_SHARE))
    }

    /// True if the memory is known and the worst case does not fit in it
    /// (only an explicit `--max-connections` or `--output-budget` can do
    /// that, or a memory too small for the server itself).
    pub fn over_memory(&self) -> bool {
        self.memory.is_some_and(|m| self.worst_case() > m)
    }
}

/// The default `--output-budget` for `memory` bytes.
fn default_budget(memory: u64) -> usize {
    let share = usize::try_from(memory / BUDGET_SHARE).unwrap_or(usize::MAX);
    share.clamp(OUT_CAP, DEFAULT_OUTPUT_BUDGET)
}

/// What the worst case costs whatever the number of clients: the server,
/// the output budget full and passed by one client's [`OUT_CAP`], and the
/// non-readers that fill it, at their kernel cost.
fn fixed_cost(output_budget: usize) -> u64 {
    let budget = output_budget as u64;
    let non_readers = budget.div_ceil(OUT_CAP as u64);
    START_COST
        .saturating_add(budget)
        .saturating_add(OUT_CAP as u64)
        .saturating_add(non_readers.saturating_mul(NON_READER_KERNEL_COST))
}

/// The bytes of `memory` left for sockets (clients and busy slots) beside
/// the fixed cost of `output_budget` and the margin.
fn socket_room(memory: u64, output_budget: usize) -> u64 {
    memory
        .saturating_sub(memory / MARGIN_SHARE)
        .saturating_sub(fixed_cost(output_budget))
}

/// The default `--max-connections-per-ip`: a sixteenth of the connections,
/// so that one address cannot take them all, but never under 64, so that a
/// NAT of a few dozen users or a test box is not refused.
fn default_per_ip(max_connections: usize) -> usize {
    (max_connections / 16).max(64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(max_connections: Option<usize>, max_per_ip: Option<usize>) -> Asked {
        Asked {
            max_connections,
            max_per_ip,
            output_budget: None,
        }
    }

    #[test]
    fn the_default_keeps_descriptors_back_and_lends_the_rest_to_rejections() {
        let l = Limits::new(asked(None, None), 1024, None);
        assert_eq!(l.max_connections, 1024 - 32);
        // 1024 - 16 - 992 = 16 spare descriptors: the minimum.
        assert_eq!(l.busy_slots, MIN_BUSY_SLOTS);
        assert_eq!(l.per_ip, Some(64));
        assert!(!l.over_fd_room());
    }

    #[test]
    fn a_small_limit_keeps_half_back_and_never_reaches_zero() {
        assert_eq!(Limits::new(asked(None, None), 16, None).max_connections, 8);
        assert_eq!(Limits::new(asked(None, None), 40, None).max_connections, 20);
        assert_eq!(Limits::new(asked(None, None), 0, None).max_connections, 1);
    }

    #[test]
    fn an_explicit_maximum_leaves_its_spare_descriptors_to_rejections() {
        let l = Limits::new(asked(Some(100), None), 20_000, None);
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.busy_slots, MAX_BUSY_SLOTS, "19,884 spare, capped");
        let l = Limits::new(asked(Some(19_500), None), 20_000, None);
        assert_eq!(l.busy_slots, 20_000 - 16 - 19_500);
    }

    #[test]
    fn a_maximum_beyond_the_descriptors_is_kept_and_flagged() {
        let l = Limits::new(asked(Some(5_000), None), 1024, None);
        assert_eq!(l.max_connections, 5_000);
        assert!(l.over_fd_room());
        assert_eq!(l.busy_slots, MIN_BUSY_SLOTS);
    }

    #[test]
    fn connections_and_busy_slots_never_reach_the_reserved_tokens() {
        for max_connections in [Some(usize::MAX), Some(MAX_KEYS), None] {
            let l = Limits::new(asked(max_connections, None), u64::MAX, None);
            assert!(l.max_connections + l.busy_slots <= MAX_KEYS, "{l:?}");
            assert_eq!(
                l.clamped(max_connections),
                max_connections.is_some(),
                "{l:?}"
            );
        }
        let l = Limits::new(asked(Some(100), None), 1024, None);
        assert!(!l.clamped(Some(100)));
    }

    #[test]
    fn per_address_defaults_to_a_sixteenth_never_under_64_and_zero_is_none() {
        assert_eq!(
            Limits::new(asked(Some(19_968), None), 20_000, None).per_ip,
            Some(1_248)
        );
        assert_eq!(
            Limits::new(asked(Some(100), None), 20_000, None).per_ip,
            Some(64)
        );
        assert_eq!(
            Limits::new(asked(Some(100), Some(0)), 20_000, None).per_ip,
            None
        );
        assert_eq!(
            Limits::new(asked(Some(100), Some(3)), 20_000, None).per_ip,
            Some(3)
        );
    }

    const MIB: u64 = 1 << 20;

    /// Defaults only, the open-file limit of this project's CI (20,000).
    fn defaults(memory: u64) -> Limits {
        Limits::new(Asked::default(), 20_000, Some(memory))
    }

    #[test]
    fn the_defaults_fit_the_worst_case_in_any_memory_from_16_mib_up() {
        let mut memory = 16 * MIB;
        while memory <= 64 << 30 {
            let l = defaults(memory);
            assert!(!l.over_memory(), "{memory}: {l:?} needs {}", l.worst_case());
            // And it is the memory or the descriptors that stop it, not
            // the rule's rounding: one more client would not fit.
            let one_more = Limits {
                max_connections: l.max_connections + 1,
                ..l
            };
            assert!(
                one_more.over_memory() || l.max_connections == l.fd_room,
                "{memory}: {l:?}"
            );
            memory += memory / 3;
        }
    }

    #[test]
    fn memory_sets_the_defaults_on_a_small_host_and_descriptors_on_a_large_one() {
        // The figures docs/deploy.md's table gives ("Small hosts"); with
        // 20,000 descriptors (CI), 256 MiB and up get 19,968 connections.
        let rows = [
            (16 * MIB, 1_984, 16, 1 << 20),
            (32 * MIB, 4_662, 37, 2 << 20),
            (64 * MIB, 10_018, 79, 4 << 20),
            (256 * MIB, 42_100, 334, 16 << 20),
            (1 << 30, 201_712, 1_024, 16 << 20),
        ];
        for (memory, max_connections, busy_slots, output_budget) in rows {
            // Descriptors to spare (systemd's default hard limit is
            // 524,288): the memory's own figure.
            let l = Limits::new(Asked::default(), 1 << 20, Some(memory));
            println!(
                "{} MiB: {} connections, {} busy slots, budget {} KiB, worst case {} KiB",
                memory / MIB,
                l.max_connections,
                l.busy_slots,
                l.output_budget >> 10,
                l.worst_case() >> 10
            );
            assert_eq!(
                (l.max_connections, l.busy_slots, l.output_budget),
                (max_connections, busy_slots, output_budget),
                "{} MiB",
                memory / MIB
            );
        }
        // 10,000 idle clients held in 64 MiB before memory was read (on
        // cgroup v1, which did not charge their sockets' buffers): the
        // rule, which counts those, still takes them.
        assert!(defaults(64 * MIB).max_connections >= 10_000);
        assert_eq!(defaults(256 * MIB).max_connections, 19_968);
    }

    #[test]
    fn unknown_memory_keeps_the_descriptor_rule_and_the_16_mib_budget() {
        let l = Limits::new(Asked::default(), 20_000, None);
        assert_eq!(l.max_connections, 19_968);
        assert_eq!(l.output_budget, DEFAULT_OUTPUT_BUDGET);
        assert!(!l.over_memory());
    }

    #[test]
    fn explicit_values_win_and_are_flagged_when_they_cannot_fit() {
        let asked = Asked {
            max_connections: Some(15_000),
            ..Asked::default()
        };
        let l = Limits::new(asked, 20_000, Some(32 * MIB));
        assert_eq!(l.max_connections, 15_000);
        assert!(l.over_memory(), "15,000 clients at 4 KiB are 58 MiB");
        // A larger budget leaves room for fewer clients: 8 MiB and its
        // non-readers' 8.5 MiB leave about 8 MiB of 32.
        let asked = Asked {
            output_budget: Some(8 << 20),
            ..Asked::default()
        };
        let l = Limits::new(asked, 20_000, Some(32 * MIB));
        assert_eq!(l.output_budget, 8 << 20);
        assert!((1_000..2_000).contains(&l.max_connections), "{l:?}");
        assert!(!l.over_memory());
        // The old default, 16 MiB, cannot fit 32 MiB at all (the OOM kill
        // of issue 18): room for one client, and flagged.
        let asked = Asked {
            output_budget: Some(16 << 20),
            ..Asked::default()
        };
        let l = Limits::new(asked, 20_000, Some(32 * MIB));
        assert_eq!(l.max_connections, 1);
        assert!(l.over_memory());
        // A memory too small for the server itself: flagged too.
        assert!(defaults(2 * MIB).over_memory());
    }

    #[test]
    fn the_budget_is_a_sixteenth_of_the_memory_between_64_kib_and_16_mib() {
        assert_eq!(defaults(MIB).output_budget, OUT_CAP);
        assert_eq!(defaults(48 * MIB).output_budget, 3 << 20);
        assert_eq!(defaults(8 << 30).output_budget, 16 << 20);
    }
}
