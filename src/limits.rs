//! How many clients the loop takes, from the command line and the
//! open-file limit: pure arithmetic, decided once at start and tested here.
//!
//! What is *not* here: counting clients against these numbers (the loop,
//! [`crate::server`]), and per-address counting ([`crate::per_ip`]).

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

/// The limits the loop enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clients served at once (`--max-connections`, or what the open-file
    /// limit leaves after [`RESERVED_FDS`]).
    pub max_connections: usize,
    /// Rejected clients that may linger at once to read their `ERR` line.
    pub busy_slots: usize,
    /// `--max-connections-per-ip`; `None`: no limit.
    pub per_ip: Option<usize>,
    /// The connections the open-file limit has room for; a
    /// `--max-connections` above it means clients will wait in the backlog.
    pub fd_room: usize,
}

impl Limits {
    /// From `--max-connections`, `--max-connections-per-ip` (`Some(0)`:
    /// none) and the soft open-file limit in force.
    pub fn new(max_connections: Option<usize>, max_per_ip: Option<usize>, fd_limit: u64) -> Limits {
        // Keep RESERVED_FDS back, but never more than half of a small limit.
        let fd_room = fd_limit
            .saturating_sub(RESERVED_FDS)
            .max(fd_limit / 2)
            .max(1);
        let fd_room = usize::try_from(fd_room).unwrap_or(usize::MAX);
        // With the busy slots on top, keys never reach the loop's tokens.
        let max_connections = max_connections
            .unwrap_or(fd_room)
            .min(MAX_KEYS - MAX_BUSY_SLOTS);
        // Descriptors left over by --max-connections serve rejections.
        let spare = usize::try_from(fd_limit.saturating_sub(RESERVED_FDS / 2))
            .unwrap_or(usize::MAX)
            .saturating_sub(max_connections);
        let per_ip = match max_per_ip {
            None => Some(default_per_ip(max_connections)),
            Some(0) => None,
            Some(n) => Some(n),
        };
        Limits {
            max_connections,
            busy_slots: spare.clamp(MIN_BUSY_SLOTS, MAX_BUSY_SLOTS),
            per_ip,
            fd_room,
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

    #[test]
    fn the_default_keeps_descriptors_back_and_lends_the_rest_to_rejections() {
        let l = Limits::new(None, None, 1024);
        assert_eq!(l.max_connections, 1024 - 32);
        // 1024 - 16 - 992 = 16 spare descriptors: the minimum.
        assert_eq!(l.busy_slots, MIN_BUSY_SLOTS);
        assert_eq!(l.per_ip, Some(64));
        assert!(!l.over_fd_room());
    }

    #[test]
    fn a_small_limit_keeps_half_back_and_never_reaches_zero() {
        assert_eq!(Limits::new(None, None, 16).max_connections, 8);
        assert_eq!(Limits::new(None, None, 40).max_connections, 20);
        assert_eq!(Limits::new(None, None, 0).max_connections, 1);
    }

    #[test]
    fn an_explicit_maximum_leaves_its_spare_descriptors_to_rejections() {
        let l = Limits::new(Some(100), None, 20_000);
        assert_eq!(l.max_connections, 100);
        assert_eq!(l.busy_slots, MAX_BUSY_SLOTS, "19,884 spare, capped");
        let l = Limits::new(Some(19_500), None, 20_000);
        assert_eq!(l.busy_slots, 20_000 - 16 - 19_500);
    }

    #[test]
    fn a_maximum_beyond_the_descriptors_is_kept_and_flagged() {
        let l = Limits::new(Some(5_000), None, 1024);
        assert_eq!(l.max_connections, 5_000);
        assert!(l.over_fd_room());
        assert_eq!(l.busy_slots, MIN_BUSY_SLOTS);
    }

    #[test]
    fn connections_and_busy_slots_never_reach_the_reserved_tokens() {
        for asked in [Some(usize::MAX), Some(MAX_KEYS), None] {
            let l = Limits::new(asked, None, u64::MAX);
            assert!(l.max_connections + l.busy_slots <= MAX_KEYS, "{l:?}");
            assert_eq!(l.clamped(asked), asked.is_some(), "{l:?}");
        }
        assert!(!Limits::new(Some(100), None, 1024).clamped(Some(100)));
    }

    #[test]
    fn per_address_defaults_to_a_sixteenth_never_under_64_and_zero_is_none() {
        assert_eq!(Limits::new(Some(19_968), None, 20_000).per_ip, Some(1_248));
        assert_eq!(Limits::new(Some(100), None, 20_000).per_ip, Some(64));
        assert_eq!(Limits::new(Some(100), Some(0), 20_000).per_ip, None);
        assert_eq!(Limits::new(Some(100), Some(3), 20_000).per_ip, Some(3));
    }
}
