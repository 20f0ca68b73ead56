//! `--max-connections-per-ip`: how many connections each client address
//! holds, so that one host cannot take every slot.
//!
//! An address is counted while one of its connections is open: from accept
//! (or, with `--proxy-protocol`, from the header that names it) until the
//! connection's slot is freed. IPv6 clients are counted per /64, the
//! smallest block one host is usually given (counting single addresses
//! would let it use 2^64 of them); an IPv4-mapped IPv6 address counts as
//! the IPv4 address it is. Unix-socket clients are not counted.
//!
//! What is not here: deciding what to do with a client over the limit
//! (`server.rs` at accept, `conn.rs` after a PROXY header).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

/// An address as the limit counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrKey {
    /// An IPv4 address (mapped IPv6 ones included).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Net(u64),
}

impl AddrKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> AddrKey {
        match ip {
            IpAddr::V4(v4) => AddrKey::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrKey::V4(v4),
                None => AddrKey::V6Net((v6.to_bits() >> 64) as u64),
            },
        }
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

    /// Counts one more connection from `ip`, or refuses it: `false` means
    /// the address is at its limit and nothing was counted.
    pub fn admit(&mut self, ip: IpAddr) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let n = self.counts.entry(AddrKey::of(ip)).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// One connection from `ip`, admitted earlier, is gone.
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

    /// Addresses with at least one connection now.
    pub fn addresses(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn each_address_gets_the_limit_and_a_slot_comes_back_on_release() {
        let mut t = PerAddress::new(Some(2));
        assert!(t.admit(ip("192.0.2.1")));
        assert!(t.admit(ip("192.0.2.1")));
        assert!(!t.admit(ip("192.0.2.1")));
        assert!(t.admit(ip("192.0.2.2")));
        t.release(ip("192.0.2.1"));
        assert!(t.admit(ip("192.0.2.1")));
        for _ in 0..2 {
            t.release(ip("192.0.2.1"));
        }
        t.release(ip("192.0.2.2"));
        assert_eq!(t.addresses(), 0, "no entry outlives its connections");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let mut t = PerAddress::new(Some(1));
        assert!(t.admit(ip("2001:db8:1:2::1")));
        assert!(!t.admit(ip("2001:db8:1:2:ffff::9")), "same /64");
        assert!(t.admit(ip("2001:db8:1:3::1")), "another /64");
        assert!(t.admit(ip("192.0.2.7")));
        assert!(!t.admit(ip("::ffff:192.0.2.7")), "the same IPv4 client");
    }

    #[test]
    fn no_limit_counts_nothing() {
        let mut t = PerAddress::new(None);
        for _ in 0..1000 {
            assert!(t.admit(ip("192.0.2.1")));
        }
        assert_eq!(t.addresses(), 0);
    }
}
