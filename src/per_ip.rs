//! `--max-connections-per-ip`: how many connections each client address
//! holds, so that one host cannot take every slot.
//!
//! An address is counted while one of its clients is served: from the
//! moment the loop admits it (at accept, or, with `--proxy-protocol`, when
//! its header names it) until it starts closing (STOP, its EOF, a line too
//! long, a timeout, shutdown, an error). That is the moment its
//! `--max-connections` seat is given back too, so a client that ends its
//! session and reconnects at once is never refused for its own closing or
//! lingering connection. IPv6 clients are counted per /64, the smallest
//! block one host is usually given (counting single addresses would let it
//! use 2^64 of them); an IPv4-mapped IPv6 address counts as the IPv4
//! address it is. Unix-socket clients are not counted.
//!
//! What is not here: deciding whom to admit, and holding a count
//! (`server.rs`: `Counts::classify` decides, a client's `Seat` holds the
//! count, `Slot::release` gives it back, in one place).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// An address as the limit counts it: an IPv6 client's first 64 bits
/// (below 2^64), or an IPv4 address, mapped IPv6 ones included (2^64 and
/// up, so the two never meet). One integer, not an enum of the two: each
/// of the three inlined hashes is then one write, 1.1 KiB less of binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddrKey(u128);

impl AddrKey {
    /// The key of `ip`.
    // Three callers: kept out of line, it costs 350 bytes less of binary.
    #[inline(never)]
    fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::v4(v4),
                None => AddrKey(v6.to_bits() >> 64),
            },
        }
    }

    fn v4(v4: Ipv4Addr) -> AddrKey {
        AddrKey(1 << 64 | u128::from(v4.to_bits()))
    }
}

/// Open connections per address. An entry exists only while its count is
/// above zero, so the table never holds more entries than connections.
#[derive(Debug, Default)]
pub struct PerAddress {
    /// `None`: no limit (nothing is counted).
    limit: Option<usize>,
    counts: HashMap<AddrKey, usize>,
}

impl PerAddress {
    /// A table allowing `limit` connections per address (`None`: no limit).
    pub fn new(limit: Option<usize>) -> Self {
        PerAddress {
            limit,
            counts: HashMap::new(),
        }
    }

    /// True if one more connection from `ip` is within the limit. Asks
    /// only: admitting is [`PerAddress::count`].
    pub fn has_room(&self, ip: IpAddr) -> bool {
        self.limit
            .is_none_or(|limit| self.counts.get(&AddrKey::of(ip)).is_none_or(|&n| n < limit))
    }

    /// Counts one more connection from `ip`, which [`PerAddress::has_room`]
    /// allowed.
    pub fn count(&mut self, ip: IpAddr) {
        debug_assert!(self.has_room(ip), "counted {ip} past its limit");
        if self.limit.is_some() {
            *self.counts.entry(AddrKey::of(ip)).or_insert(0) += 1;
        }
    }

    /// One connection from `ip`, counted earlier, is given back. Giving
    /// back one that was not counted (twice, say) is a bug in the caller:
    /// asserted in debug builds.
    pub fn release(&mut self, ip: IpAddr) {
        if self.limit.is_none() {
            return;
        }
        let key = AddrKey::of(ip);
        match self.counts.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.counts.remove(&key);
            }
            None => debug_assert!(false, "released {ip}, which was not counted"),
        }
    }

    /// Connections counted under `ip` now (tests check the count returns
    /// to zero).
    #[cfg(test)]
    pub(crate) fn held(&self, ip: IpAddr) -> usize {
        self.counts.get(&AddrKey::of(ip)).copied().unwrap_or(0)
    }

    /// Addresses with at least one connection now.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    /// Asks, then counts, as the loop does.
    fn admit(t: &mut PerAddress, ip: IpAddr) -> bool {
        let room = t.has_room(ip);
        if room {
            t.count(ip);
        }
        room
    }

    #[test]
    fn each_address_gets_the_limit_and_a_slot_comes_back_on_release() {
        let mut t = PerAddress::new(Some(2));
        assert!(admit(&mut t, ip("192.0.2.1")));
        assert!(admit(&mut t, ip("192.0.2.1")));
        assert!(!admit(&mut t, ip("192.0.2.1")));
        assert!(admit(&mut t, ip("192.0.2.2")));
        t.release(ip("192.0.2.1"));
        assert!(admit(&mut t, ip("192.0.2.1")));
        for _ in 0..2 {
            t.release(ip("192.0.2.1"));
        }
        t.release(ip("192.0.2.2"));
        assert_eq!(t.addresses(), 0, "no entry outlives its connections");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = PerAddress::new(Some(1));
        assert!(admit(&mut t, ip("2001:db8:1:2::1")));
        assert!(!admit(&mut t, ip("2001:db8:1:2:ffff::9")), "same /64");
        assert!(admit(&mut t, ip("2001:db8:1:3::1")), "another /64");
        assert!(admit(&mut t, ip("192.0.2.7")));
        assert!(
            !admit(&mut t, ip("::ffff:192.0.2.7")),
            "the same IPv4 client"
        );
        // A /64 whose 64 bits are those of 192.0.2.7 is another client.
        assert!(admit(&mut t, ip("0:0:c000:207::1")), "not an IPv4 key");
    }

    #[test]
    fn no_limit_counts_nothing() {
        let mut t = PerAddress::new(None);
        for _ in 0..1000 {
            assert!(admit(&mut t, ip("192.0.2.1")));
        }
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "which was not counted")]
    fn releasing_twice_is_caught() {
        let mut t = PerAddress::new(Some(2));
        assert!(admit(&mut t, ip("192.0.2.1")));
        t.release(ip("192.0.2.1"));
        t.release(ip("192.0.2.1"));
    }
}
