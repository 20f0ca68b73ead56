//! The PROXY protocol header (HAProxy's, versions 1 and 2): the first bytes
//! a load balancer sends on each connection, naming the real client.
//!
//! [`HeaderParser`] is fed the same read buffers as the line framer, so the
//! header may arrive split anywhere; it keeps only the header's own bytes
//! (at most [`MAX_HEADER`]) and says how much of each buffer it used: the
//! rest are lines. It is pure: no sockets, no logging. What to do with the
//! result is [`crate::conn`]'s business.
//!
//! ```text
//! v1: "PROXY TCP4 203.0.113.7 192.0.2.1 56324 7000\r\n"      (text, ≤ 107 bytes)
//! v2: 0D 0A 0D 0A 00 0D 0A 51 55 49 54 0A   signature          (binary)
//!     21 = version 2, command PROXY (20 = LOCAL: a health check)
//!     11 = TCP over IPv4 (21 = IPv6)    00 0C = 12 bytes follow
//!     src addr, dst addr, src port, dst port, then optional TLVs (skipped)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The most header bytes kept: the v2 specification's suggested buffer
/// size (v1 needs at most 107). A longer v2 header is refused.
pub const MAX_HEADER: usize = 536;
const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A proxied connection from this client.
    Client(SocketAddr),
    /// `LOCAL` (v2: the proxy's own connection, e.g. a health check) or
    /// `UNKNOWN`/unspecified: no client address; keep the socket's.
    Local,
}

/// Reads one PROXY header, incrementally.
#[derive(Debug, Default)]
pub struct HeaderParser {
    buf: Vec<u8>,
}

impl HeaderParser {
    /// A parser that has seen nothing yet.
    pub fn new() -> Self {
        HeaderParser::default()
    }

    /// Consumes header bytes from `input`. Returns how many bytes it used
    /// and, once the header is complete or proven bad, the outcome. Bytes
    /// past the header are never used.
    pub fn advance(&mut self, input: &[u8]) -> (usize, Option<Result<Header, &'static str>>) {
        let mut used = 0;
        while used < input.len() {
            // Take one byte at a time up to what the header still needs:
            // simple, and headers are short.
            self.buf.push(input[used]);
            used += 1;
            match self.check() {
                Ok(None) => {}
                Ok(Some(header)) => return (used, Some(Ok(header))),
                Err(why) => return (used, Some(Err(why))),
            }
        }
        (used, None)
    }

    /// Looks at the bytes so far: incomplete (`Ok(None)`), complete, or bad.
    fn check(&self) -> Result<Option<Header>, &'static str> {
        let b = &self.buf;
        match b[0] {
            b'P' => {
                if !b"PROXY ".starts_with(&b[..b.len().min(6)]) {
                    return Err("not a PROXY header");
                }
                if b.ends_with(b"\n") {
                    return parse_v1(b).map(Some);
                }
                if b.len() >= V1_MAX {
                    return Err("PROXY v1 header longer than 107 bytes");
                }
                Ok(None)
            }
            b'\r' => {
                let n = b.len().min(V2_SIGNATURE.len());
                if b[..n] != V2_SIGNATURE[..n] {
                    return Err("not a PROXY header");
                }
                if b.len() < 16 {
                    return Ok(None);
                }
                let total = 16 + usize::from(u16::from_be_bytes([b[14], b[15]]));
                if total > MAX_HEADER {
                    return Err("PROXY v2 header longer than 536 bytes");
                }
                if b.len() < total {
                    return Ok(None);
                }
                parse_v2(b).map(Some)
            }
            _ => Err("not a PROXY header"),
        }
    }
}

/// `PROXY TCP4 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(line: &[u8]) -> Result<Header, &'static str> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or("PROXY v1 header not ended by CRLF")?;
    let text = std::str::from_utf8(line).map_err(|_| "PROXY v1 header is not ASCII")?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Header::Local),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src.parse().map_err(|_| "bad source address in PROXY v1")?;
            if ip.is_ipv4() != (*proto == "TCP4") {
                return Err("PROXY v1 address does not match its protocol");
            }
            let port: u16 = sport.parse().map_err(|_| "bad source port in PROXY v1")?;
            Ok(Header::Client(SocketAddr::new(ip, port)))
        }
        _ => Err("malformed PROXY v1 header"),
    }
}

/// A complete v2 header (signature checked, length complete).
fn parse_v2(b: &[u8]) -> Result<Header, &'static str> {
    if b[12] >> 4 != 2 {
        return Err("PROXY v2 header with an unknown version");
    }
    let addr = &b[16..];
    match (b[12] & 0x0F, b[13]) {
        // LOCAL: the proxy speaking for itself (health checks).
        (0, _) => Ok(Header::Local),
        (1, 0x11) if addr.len() >= 12 => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            let port = u16::from_be_bytes([addr[8], addr[9]]);
            Ok(Header::Client(SocketAddr::new(ip.into(), port)))
        }
        (1, 0x21) if addr.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addr[..16]);
            let port = u16::from_be_bytes([addr[32], addr[33]]);
            Ok(Header::Client(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                port,
            )))
        }
        (1, 0x11 | 0x21) => Err("PROXY v2 address block too short"),
        // Unspecified, UDP or Unix-socket clients: nothing to log as a
        // TCP peer; keep the socket's own address.
        (1, _) => Ok(Header::Local),
        _ => Err("PROXY v2 header with an unknown command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(cmd: u8, fam: u8, addr: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(cmd);
        h.push(fam);
        h.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h
    }

    fn tcp4_v2() -> Vec<u8> {
        // 203.0.113.7:56324 -> 192.0.2.1:7000, then a 4-byte TLV (skipped).
        let mut a = vec![203, 0, 113, 7, 192, 0, 2, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&7000u16.to_be_bytes());
        a.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        v2(0x21, 0x11, &a)
    }

    /// Feeds `bytes` split at every position; all splits must agree.
    fn parse_split(bytes: &[u8]) -> (usize, Result<Header, &'static str>) {
        let mut results = Vec::new();
        for cut in 0..=bytes.len() {
            let mut p = HeaderParser::new();
            let (a, r) = p.advance(&bytes[..cut]);
            let outcome = match r {
                Some(r) => (a, r),
                None => {
                    let (b, r) = p.advance(&bytes[cut..]);
                    (a + b, r.unwrap_or(Err("incomplete")))
                }
            };
            results.push(outcome);
        }
        assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
        results[0]
    }

    #[test]
    fn v1_tcp4_and_tcp6_give_the_client_and_leave_the_lines() {
        let mut input = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7000\r\n".to_vec();
        let header_len = input.len();
        input.extend_from_slice(b"hello\n");
        let (used, r) = HeaderParser::new().advance(&input);
        assert_eq!(used, header_len);
        assert_eq!(
            r,
            Some(Ok(Header::Client("203.0.113.7:56324".parse().unwrap())))
        );

        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 7000\r\n";
        assert_eq!(
            parse_split(v6),
            (
                v6.len(),
                Ok(Header::Client("[2001:db8::1]:4000".parse().unwrap()))
            )
        );
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(parse_split(unknown), (unknown.len(), Ok(Header::Local)));
    }

    #[test]
    fn v2_proxy_and_local_at_every_split() {
        let h = tcp4_v2();
        assert_eq!(
            parse_split(&h),
            (
                h.len(),
                Ok(Header::Client("203.0.113.7:56324".parse().unwrap()))
            )
        );
        let local = v2(0x20, 0x00, &[]);
        assert_eq!(parse_split(&local), (16, Ok(Header::Local)));
        let mut a6 = vec![0u8; 36];
        a6[15] = 1; // ::1
        a6[32..34].copy_from_slice(&4242u16.to_be_bytes());
        let h6 = v2(0x21, 0x21, &a6);
        assert_eq!(
            parse_split(&h6).1,
            Ok(Header::Client("[::1]:4242".parse().unwrap()))
        );
    }

    #[test]
    fn bad_headers_are_refused_early_and_never_read_past() {
        for bad in [
            &b"hello\n"[..],
            b"PROXZ TCP4",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"\r\n\r\n\0\r\nQUIX\n",
        ] {
            let (used, r) = HeaderParser::new().advance(bad);
            assert!(matches!(r, Some(Err(_))), "{bad:?} gave {r:?}");
            assert!(used <= bad.len());
        }
        // The first byte that cannot be a header ends it.
        assert_eq!(HeaderParser::new().advance(b"GET / HTTP/1.1\r\n").0, 1);
        // A v1 header without its end, past 107 bytes.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let (used, r) = HeaderParser::new().advance(&long);
        assert_eq!(
            (used, r),
            (V1_MAX, Some(Err("PROXY v1 header longer than 107 bytes")))
        );
        // A v2 header announcing more than MAX_HEADER bytes.
        let mut huge = v2(0x21, 0x11, &[]);
        huge[14..16].copy_from_slice(&1000u16.to_be_bytes());
        assert!(matches!(HeaderParser::new().advance(&huge).1, Some(Err(_))));
        // Version 1 in a v2 frame, and a short address block.
        assert!(matches!(
            HeaderParser::new().advance(&v2(0x11, 0x11, &[0; 12])).1,
            Some(Err(_))
        ));
        assert!(matches!(
            HeaderParser::new().advance(&v2(0x21, 0x11, &[0; 4])).1,
            Some(Err(_))
        ));
    }

    fn ports() -> impl Strategy<Value = (u16, u16)> {
        (any::<u16>(), any::<u16>())
    }

    /// v2 TLVs (type, 16-bit length, value): present, and skipped.
    fn tlvs() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            (any::<u8>(), prop::collection::vec(any::<u8>(), 0..32)),
            0..4,
        )
        .prop_map(|tlvs| {
            let mut out = Vec::new();
            for (kind, value) in tlvs {
                out.push(kind);
                out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                out.extend_from_slice(&value);
            }
            out
        })
    }

    /// A header the PROXY protocol specification calls valid, and the
    /// outcome it must give.
    fn valid_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
        prop_oneof![
            (any::<Ipv4Addr>(), any::<Ipv4Addr>(), ports()).prop_map(|(s, d, (sp, dp))| (
                format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n").into_bytes(),
                Header::Client(SocketAddr::new(s.into(), sp)),
            )),
            (any::<Ipv6Addr>(), any::<Ipv6Addr>(), ports()).prop_map(|(s, d, (sp, dp))| (
                format!("PROXY TCP6 {s} {d} {sp} {dp}\r\n").into_bytes(),
                Header::Client(SocketAddr::new(s.into(), sp)),
            )),
            // UNKNOWN, then anything (printable) up to the 107-byte limit.
            prop::collection::vec(0x20u8..0x7f, 0..=91).prop_map(|rest| {
                let mut h = b"PROXY UNKNOWN".to_vec();
                if !rest.is_empty() {
                    h.push(b' ');
                    h.extend_from_slice(&rest);
                }
                h.extend_from_slice(b"\r\n");
                (h, Header::Local)
            }),
            (any::<[u8; 4]>(), any::<[u8; 4]>(), ports(), tlvs()).prop_map(
                |(s, d, (sp, dp), tlvs)| {
                    let block = [&s[..], &d, &sp.to_be_bytes(), &dp.to_be_bytes(), &tlvs].concat();
                    let client = SocketAddr::new(Ipv4Addr::from(s).into(), sp);
                    (v2(0x21, 0x11, &block), Header::Client(client))
                }
            ),
            (any::<[u8; 16]>(), any::<[u8; 16]>(), ports(), tlvs()).prop_map(
                |(s, d, (sp, dp), tlvs)| {
                    let block = [&s[..], &d, &sp.to_be_bytes(), &dp.to_be_bytes(), &tlvs].concat();
                    let client = SocketAddr::new(Ipv6Addr::from(s).into(), sp);
                    (v2(0x21, 0x21, &block), Header::Client(client))
                }
            ),
            // PROXY over UNSPEC (no address), or UDP: no TCP client.
            (
                prop::sample::select(&[(0x00u8, 0usize), (0x12, 12), (0x22, 36)][..]),
                tlvs()
            )
                .prop_map(|((fam, len), tlvs)| {
                    let block = [vec![7; len], tlvs].concat();
                    (v2(0x21, fam, &block), Header::Local)
                }),
            // LOCAL: family and block ignored, up to the largest header.
            (
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 0..=MAX_HEADER - 16)
            )
                .prop_map(|(fam, block)| (v2(0x20, fam, &block), Header::Local)),
        ]
    }

    /// Bytes that are mostly not a header: anything, or a v1 or v2 start
    /// followed by bytes that often look like the rest of one.
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        let v1_bytes: &[u8] = b"PROXY TCP46UNKOWN0123456789abcdef.:[] \r\n\xff";
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..700),
            prop::collection::vec(prop::sample::select(v1_bytes), 0..150).prop_map(|rest| [
                b"PROXY ".to_vec(),
                rest
            ]
            .concat()),
            (
                0..=V2_SIGNATURE.len(),
                prop::collection::vec(any::<u8>(), 0..700)
            )
                .prop_map(|(n, rest)| [&V2_SIGNATURE[..n], &rest].concat()),
            (
                any::<u8>(),
                any::<u8>(),
                0u16..600,
                prop::collection::vec(any::<u8>(), 0..700)
            )
                .prop_map(|(cmd, fam, len, rest)| {
                    let mut h = V2_SIGNATURE.to_vec();
                    h.extend_from_slice(&[cmd, fam]);
                    h.extend_from_slice(&len.to_be_bytes());
                    h.extend_from_slice(&rest);
                    h
                }),
        ]
    }

    /// Feeds `input` to one parser in reads cut at `cuts`, until it decides.
    /// Returns the outcome and the bytes it left for the line framer.
    fn feed_cut(
        input: &[u8],
        cuts: &[prop::sample::Index],
    ) -> (Option<Result<Header, &'static str>>, Vec<u8>) {
        let mut ends: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
        ends.push(input.len());
        ends.sort_unstable();
        let mut parser = HeaderParser::new();
        let mut start = 0;
        for end in ends {
            let (used, outcome) = parser.advance(&input[start..end]);
            assert!(used <= end - start, "used {used} of {}", end - start);
            if outcome.is_some() {
                return (outcome, input[start + used..].to_vec());
            }
            assert_eq!(used, end - start, "undecided, yet bytes were left");
            start = end;
        }
        (None, Vec::new())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A valid header, then any bytes, cut anywhere: the header's
        /// outcome, and every byte after it left for the lines.
        #[test]
        fn valid_headers_leave_what_follows(
            (header, want) in valid_header(),
            after in prop::collection::vec(any::<u8>(), 0..64),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let input = [header.as_slice(), &after].concat();
            let (outcome, left) = feed_cut(&input, &cuts);
            prop_assert_eq!(outcome, Some(Ok(want)));
            prop_assert_eq!(left, after);
        }

        /// Garbage never panics; cut anywhere it gives what it gives whole;
        /// it is refused, or asks for more, within the header's bounds: 107
        /// bytes for v1, 16 + its length field (at most 536) for v2.
        #[test]
        fn garbage_is_decided_within_bounds(
            input in garbage(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let (outcome, left) = feed_cut(&input, &cuts);
            let whole = feed_cut(&input, &[]);
            prop_assert_eq!((&outcome, &left), (&whole.0, &whole.1));
            let used = input.len() - left.len();
            // The byte by which it must have decided.
            let bound = match input.first() {
                None => 1,
                Some(b'P') => V1_MAX,
                Some(b'\r') if !input.starts_with(V2_SIGNATURE) => V2_SIGNATURE.len(),
                Some(b'\r') if input.len() < 16 => 16,
                Some(b'\r') => {
                    let total = 16 + usize::from(u16::from_be_bytes([input[14], input[15]]));
                    if total > MAX_HEADER { 16 } else { total }
                }
                Some(_) => 1,
            };
            match outcome {
                None => prop_assert!(input.len() < bound, "undecided after {}", input.len()),
                Some(_) => prop_assert!((1..=bound).contains(&used), "decided after {used}"),
            }
        }
    }
}
