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
    /// `LOCAL` (v2: the proxy's own connection, e.g. a health check),
    /// `UNKNOWN` (v1), or a v2 PROXY header for an unspecified family or
    /// transport, UDP or a Unix socket: no TCP client address; keep the
    /// socket's.
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

/// `PROXY TCP4 SRC DST SPORT DPORT\r\n`, or `PROXY UNKNOWN ...\r\n`, read as
/// strictly as the specification (section 2.1) writes it: six fields split
/// by single spaces, both addresses of the named family, both ports plain
/// decimal.
fn parse_v1(line: &[u8]) -> Result<Header, &'static str> {
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or("PROXY v1 header not ended by CRLF")?;
    // "The receiver must ignore anything presented before the CRLF": any
    // bytes at all, within the 107-byte limit already enforced.
    if line == b"PROXY UNKNOWN" || line.starts_with(b"PROXY UNKNOWN ") {
        return Ok(Header::Local);
    }
    let text = std::str::from_utf8(line)
        .ok()
        .filter(|t| t.is_ascii())
        .ok_or("PROXY v1 header is not ASCII")?;
    // `check` saw "PROXY " first, so there are at least two fields.
    let fields: Vec<&str> = text.split(' ').collect();
    let v4 = match fields[1] {
        "TCP4" => true,
        "TCP6" => false,
        _ => return Err("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    let [_, _, src, dst, sport, dport] = fields[..] else {
        return Err("PROXY v1 header is not six fields split by single spaces");
    };
    let src = v1_address(src, v4, "bad source address in PROXY v1")?;
    v1_address(dst, v4, "bad destination address in PROXY v1")?;
    let sport = v1_port(sport).ok_or("bad source port in PROXY v1")?;
    v1_port(dport).ok_or("bad destination port in PROXY v1")?;
    Ok(Header::Client(SocketAddr::new(src, sport)))
}

/// An address of the family its protocol names (`TCP4`: `v4`).
fn v1_address(field: &str, v4: bool, bad: &'static str) -> Result<IpAddr, &'static str> {
    let ip: IpAddr = field.parse().map_err(|_| bad)?;
    if ip.is_ipv4() != v4 {
        return Err("PROXY v1 address does not match its protocol");
    }
    Ok(ip)
}

/// "A decimal integer in the range [0..65535]", with no sign and no
/// leading zero ("heading zeroes are not permitted").
fn v1_port(field: &str) -> Option<u16> {
    let digits = field.as_bytes();
    let plain = matches!(digits, [b'0'] | [b'1'..=b'9', ..])
        && digits.len() <= 5
        && digits.iter().all(u8::is_ascii_digit);
    if !plain {
        return None;
    }
    field.parse().ok()
}

/// A complete v2 header (signature checked, length complete), read as the
/// specification (section 2.2) says.
fn parse_v2(b: &[u8]) -> Result<Header, &'static str> {
    if b[12] >> 4 != 2 {
        return Err("PROXY v2 header with an unknown version");
    }
    match b[12] & 0x0F {
        // LOCAL: the proxy speaking for itself (health checks). The
        // receiver "must discard the protocol block including the family
        // which is ignored": any family byte, any block.
        0 => return Ok(Header::Local),
        1 => {}
        _ => return Err("PROXY v2 header with an unknown command"),
    }
    let (family, transport) = (b[13] >> 4, b[13] & 0x0F);
    // Values other than these "must be rejected as invalid by receivers".
    if family > 3 {
        return Err("PROXY v2 header with an unknown address family");
    }
    if transport > 2 {
        return Err("PROXY v2 header with an unknown transport protocol");
    }
    // UNSPEC family or transport: the receiver may accept the connection
    // and "should ignore address information": keep the socket's address.
    if family == 0 || transport == 0 {
        return Ok(Header::Local);
    }
    // Two addresses and, for IP, two ports: 2*4+2*2, 2*16+2*2, 2*108.
    let addr = &b[16..];
    let needed = match family {
        1 => 12,
        2 => 36,
        _ => 216,
    };
    if addr.len() < needed {
        return Err("PROXY v2 address block too short");
    }
    match (family, transport) {
        (1, 1) => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            let port = u16::from_be_bytes([addr[8], addr[9]]);
            Ok(Header::Client(SocketAddr::new(ip.into(), port)))
        }
        (2, 1) => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&addr[..16]);
            let port = u16::from_be_bytes([addr[32], addr[33]]);
            Ok(Header::Client(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                port,
            )))
        }
        // UDP, or a Unix socket (stream or datagram): no TCP client
        // address to use; keep the socket's own.
        _ => Ok(Header::Local),
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

    /// A complete header's outcome: the same at every split and with a line
    /// after it, decided at its last byte, never past it.
    fn whole(header: &[u8]) -> Result<Header, &'static str> {
        let (used, r) = parse_split(header);
        assert_eq!(
            used,
            header.len(),
            "{:?}",
            header.escape_ascii().to_string()
        );
        let input = [header, b"STOP\n"].concat();
        assert_eq!(HeaderParser::new().advance(&input), (header.len(), Some(r)));
        r
    }

    fn v1(line: &str) -> Result<Header, &'static str> {
        whole(format!("{line}\r\n").as_bytes())
    }

    #[test]
    fn v1_ports_are_plain_decimal_without_sign_or_leading_zero() {
        for port in ["0", "7", "80", "65535"] {
            let want = Ok(Header::Client(format!("1.2.3.4:{port}").parse().unwrap()));
            assert_eq!(v1(&format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 80")), want);
            assert!(v1(&format!("PROXY TCP4 1.2.3.4 5.6.7.8 80 {port}")).is_ok());
        }
        for port in [
            "+80", "-1", "080", "00", "0080", "65536", "99999", "123456", "0x50", "8O", "",
        ] {
            assert_eq!(
                v1(&format!("PROXY TCP4 1.2.3.4 5.6.7.8 {port} 80")),
                Err("bad source port in PROXY v1"),
                "{port:?}"
            );
            assert_eq!(
                v1(&format!("PROXY TCP4 1.2.3.4 5.6.7.8 80 {port}")),
                Err("bad destination port in PROXY v1"),
                "{port:?}"
            );
        }
    }

    #[test]
    fn v1_destination_is_checked_like_the_source() {
        assert_eq!(
            v1("PROXY TCP4 1.2.3.4 garbage +80 x"),
            Err("bad destination address in PROXY v1")
        );
        assert_eq!(
            v1("PROXY TCP4 garbage 1.2.3.4 80 80"),
            Err("bad source address in PROXY v1")
        );
        // Heading zeroes in an IPv4 address: refused (octal confusion).
        assert_eq!(
            v1("PROXY TCP4 1.2.3.4 5.6.7.08 80 80"),
            Err("bad destination address in PROXY v1")
        );
        for mismatch in [
            "PROXY TCP4 1.2.3.4 ::1 80 80",
            "PROXY TCP4 ::1 1.2.3.4 80 80",
            "PROXY TCP6 ::1 1.2.3.4 80 80",
            "PROXY TCP6 1.2.3.4 ::1 80 80",
        ] {
            assert_eq!(
                v1(mismatch),
                Err("PROXY v1 address does not match its protocol"),
                "{mismatch}"
            );
        }
        assert_eq!(
            v1("PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 80 443"),
            Ok(Header::Client("[2001:db8::1]:80".parse().unwrap()))
        );
    }

    #[test]
    fn v1_is_six_fields_split_by_single_spaces() {
        let six = "PROXY TCP4 1.2.3.4 5.6.7.8 80 443";
        assert!(v1(six).is_ok());
        for bad in [
            "PROXY TCP4 1.2.3.4 5.6.7.8 80",
            "PROXY TCP4 1.2.3.4 5.6.7.8 80 443 extra",
            "PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ",
            "PROXY TCP4  1.2.3.4 5.6.7.8 80 443",
            "PROXY TCP4 1.2.3.4 5.6.7.8 80  443",
            "PROXY TCP4",
        ] {
            assert_eq!(
                v1(bad),
                Err("PROXY v1 header is not six fields split by single spaces"),
                "{bad:?}"
            );
        }
        for bad in [
            "PROXY TCP5 1.2.3.4 5.6.7.8 80 443",
            "PROXY tcp4 1.2.3.4 5.6.7.8 80 443",
            "PROXY  TCP4 1.2.3.4 5.6.7.8 80 443",
            "PROXY UNKNOWNX",
            "PROXY ",
        ] {
            assert_eq!(
                v1(bad),
                Err("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
                "{bad:?}"
            );
        }
        // A tab is not a space; bytes past ASCII are not an address.
        assert_eq!(
            v1("PROXY TCP4 1.2.3.4\t5.6.7.8 80 443"),
            Err("PROXY v1 header is not six fields split by single spaces")
        );
        assert_eq!(
            whole(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 44\xd9\xa3\r\n"),
            Err("PROXY v1 header is not ASCII")
        );
        // A lone CR or LF does not end the line.
        assert_eq!(
            whole(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n"),
            Err("PROXY v1 header not ended by CRLF")
        );
    }

    #[test]
    fn v1_unknown_ignores_any_bytes_before_the_crlf() {
        for h in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN \r\n",
            b"PROXY UNKNOWN \xff\r\n",
            b"PROXY UNKNOWN \0\r\x80 \xc3( 1.2.3.4\r\n",
            b"PROXY UNKNOWN ffff::1 ffff::2 65535 65535\r\n",
        ] {
            assert_eq!(whole(h), Ok(Header::Local), "{h:?}");
        }
        // The longest, 107 bytes, with no byte of it ASCII after UNKNOWN.
        let longest = [b"PROXY UNKNOWN ".as_slice(), &[0xfe; 91], b"\r\n"].concat();
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(whole(&longest), Ok(Header::Local));
        let too_long = [b"PROXY UNKNOWN ".as_slice(), &[0xfe; 92], b"\r\n"].concat();
        assert_eq!(
            HeaderParser::new().advance(&too_long),
            (V1_MAX, Some(Err("PROXY v1 header longer than 107 bytes")))
        );
    }

    #[test]
    fn v2_families_and_transports_are_those_the_specification_defines() {
        // LOCAL ignores the family byte and the block, whatever they are.
        for fam in [0x00, 0x11, 0x41, 0x13, 0xff] {
            assert_eq!(whole(&v2(0x20, fam, &[9; 40])), Ok(Header::Local));
            assert_eq!(whole(&v2(0x20, fam, &[])), Ok(Header::Local));
        }
        // PROXY with an undefined family or transport nibble: refused.
        for fam in [0x41, 0x40, 0x51, 0xf1, 0xff] {
            assert_eq!(
                whole(&v2(0x21, fam, &[0; 216])),
                Err("PROXY v2 header with an unknown address family"),
                "{fam:#x}"
            );
        }
        for fam in [0x13, 0x03, 0x1f, 0x23, 0x33] {
            assert_eq!(
                whole(&v2(0x21, fam, &[0; 216])),
                Err("PROXY v2 header with an unknown transport protocol"),
                "{fam:#x}"
            );
        }
        // UNSPEC family or transport: the address is ignored, however short.
        for fam in [0x00, 0x01, 0x02, 0x10, 0x20, 0x30] {
            assert_eq!(whole(&v2(0x21, fam, &[])), Ok(Header::Local), "{fam:#x}");
            assert_eq!(
                whole(&v2(0x21, fam, &[1; 7])),
                Ok(Header::Local),
                "{fam:#x}"
            );
        }
        // Commands other than LOCAL and PROXY.
        for cmd in [0x22, 0x2f] {
            assert_eq!(
                whole(&v2(cmd, 0x11, &[0; 12])),
                Err("PROXY v2 header with an unknown command")
            );
        }
    }

    #[test]
    fn v2_address_blocks_must_hold_both_addresses() {
        // TCP and UDP over IPv4 and IPv6, Unix stream and datagram: the
        // shortest block allowed, and one byte less.
        for (fam, len) in [
            (0x11, 12),
            (0x12, 12),
            (0x21, 36),
            (0x22, 36),
            (0x31, 216),
            (0x32, 216),
        ] {
            assert_eq!(
                whole(&v2(0x21, fam, &vec![0; len - 1])),
                Err("PROXY v2 address block too short"),
                "{fam:#x}"
            );
            assert!(whole(&v2(0x21, fam, &vec![0; len])).is_ok(), "{fam:#x}");
        }
        // UDP and Unix clients are not TCP peers: no client address.
        let mut unix = vec![0; 216];
        unix[..9].copy_from_slice(b"/run/sock");
        assert_eq!(whole(&v2(0x21, 0x31, &unix)), Ok(Header::Local));
        assert_eq!(whole(&v2(0x21, 0x32, &unix)), Ok(Header::Local));
        assert_eq!(whole(&v2(0x21, 0x12, &[1; 12])), Ok(Header::Local));
        assert_eq!(whole(&v2(0x21, 0x22, &[1; 36])), Ok(Header::Local));
        // TCP with TLVs after the addresses.
        let mut block = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0, 80];
        block.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        assert_eq!(
            whole(&v2(0x21, 0x11, &block)),
            Ok(Header::Client("10.0.0.1:8080".parse().unwrap()))
        );
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
            // UNKNOWN, then any bytes but LF up to the 107-byte limit.
            prop::collection::vec(any::<u8>().prop_filter("LF", |b| *b != b'\n'), 0..=91).prop_map(
                |rest| {
                    let mut h = b"PROXY UNKNOWN".to_vec();
                    if !rest.is_empty() {
                        h.push(b' ');
                        h.extend_from_slice(&rest);
                    }
                    h.extend_from_slice(b"\r\n");
                    (h, Header::Local)
                }
            ),
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
            // PROXY over UDP or a Unix socket: no TCP client.
            (
                prop::sample::select(
                    &[(0x12u8, 12usize), (0x22, 36), (0x31, 216), (0x32, 216)][..]
                ),
                tlvs()
            )
                .prop_map(|((fam, len), tlvs)| {
                    let block = [vec![7; len], tlvs].concat();
                    (v2(0x21, fam, &block), Header::Local)
                }),
            // PROXY with an UNSPEC family or transport: any block, ignored.
            (
                prop::sample::select(&[0x00u8, 0x01, 0x02, 0x10, 0x20, 0x30][..]),
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(fam, block)| (v2(0x21, fam, &block), Header::Local)),
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

        /// A v1 port is accepted only as the specification writes it: no
        /// sign, no leading zero, at most 65535; in either position.
        #[test]
        fn v1_ports_are_strict(
            sign in prop::sample::select(&["", "+", "-"][..]),
            zeros in 0usize..3,
            n in 0u32..200_000,
            dest: bool,
        ) {
            let port = format!("{sign}{}{n}", "0".repeat(zeros));
            let (sport, dport) = if dest { ("80", port.as_str()) } else { (port.as_str(), "80") };
            let line = format!("PROXY TCP4 192.0.2.1 192.0.2.2 {sport} {dport}\r\n");
            let (used, outcome) = HeaderParser::new().advance(line.as_bytes());
            prop_assert_eq!(used, line.len());
            let valid = sign.is_empty() && zeros == 0 && n <= 65535;
            prop_assert_eq!(outcome.unwrap().is_ok(), valid, "{}", line);
        }

        /// A v2 PROXY header naming a family or transport the specification
        /// does not define is refused, whatever its block; LOCAL is not.
        #[test]
        fn v2_undefined_families_are_refused(
            fam in any::<u8>().prop_filter("undefined", |f| f >> 4 > 3 || f & 15 > 2),
            block in prop::collection::vec(any::<u8>(), 0..=MAX_HEADER - 16),
        ) {
            let h = v2(0x21, fam, &block);
            prop_assert_eq!(HeaderParser::new().advance(&h).0, h.len());
            prop_assert!(matches!(HeaderParser::new().advance(&h).1, Some(Err(_))));
            prop_assert_eq!(
                HeaderParser::new().advance(&v2(0x20, fam, &block)),
                (h.len(), Some(Ok(Header::Local)))
            );
        }
    }
}
