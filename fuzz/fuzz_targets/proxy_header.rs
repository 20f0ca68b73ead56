//! Fuzz target `proxy_header`: `HeaderParser::advance` (src/proxy.rs), which
//! reads the first bytes of every connection under `--proxy-protocol`,
//! before anything else has been checked: it must never panic, must decide
//! the same however the bytes are cut, and must never take a byte past the
//! header, because those bytes are the client's first lines.
//!
//! Input: `[mode, seed, rest...]`. With `mode` even, `rest` is the stream.
//! With `mode` odd, `rest` drives [`Unstructured`] to build a valid header
//! (v1 TCP4, TCP6, UNKNOWN with any bytes; v2 PROXY over TCP4, TCP6, UDP,
//! Unix, or an UNSPEC family or transport, with TLVs; v2 LOCAL with any
//! family), and its leftover bytes follow the header as lines;
//! the header must parse to the address it was built from, using exactly its
//! own length, whatever follows it. Then, for every stream:
//!
//! - whole, one byte per read, and cut at random points chosen by `seed`,
//!   the parser gives the same outcome after the same number of bytes;
//! - an undecided parser has used all it was given; a decided one stops at
//!   the first byte that proves the header bad, or at the header's last
//!   byte: v1 at its `\n` (at most 107 bytes), v2 at 16 + its length field
//!   (at most 536); this is modelled independently in [`extent`];
//! - the same header followed by other bytes gives the same outcome, after
//!   the same number of bytes;
//! - a header that the PROXY protocol specification (v1 section 2.1, v2
//!   section 2.2) calls valid is accepted with the address it names, and
//!   one it calls invalid is refused, with a reason naming PROXY
//!   ([`by_spec`]): no leniency.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::arbitrary::{self, Unstructured};
use libfuzzer_sys::fuzz_target;
use randline::proxy::{Header, HeaderParser, MAX_HEADER};
use randline_fuzz::cuttings;

const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The largest v2 address block (with TLVs) within [`MAX_HEADER`].
const V2_BLOCK_MAX: usize = MAX_HEADER - 16;

type Outcome = (usize, Option<Result<Header, &'static str>>);

/// Feeds `reads` to a fresh parser, as src/conn.rs does, until it decides.
fn feed(reads: &[&[u8]]) -> Outcome {
    let mut parser = HeaderParser::new();
    let mut total = 0;
    for read in reads {
        let (used, outcome) = parser.advance(read);
        assert!(
            used <= read.len(),
            "used {used} of a {}-byte read",
            read.len()
        );
        total += used;
        if outcome.is_some() {
            return (total, outcome);
        }
        assert_eq!(used, read.len(), "undecided, yet bytes were left");
    }
    (total, None)
}

/// Where a header ends, read from the byte layout alone.
#[derive(Debug, PartialEq, Eq)]
enum Extent {
    /// Every byte so far fits a header that is not complete yet.
    More,
    /// Byte `n` (1-based) proves this is no header: stop there.
    Bad(usize),
    /// The header is the first `n` bytes (its content may still be bad).
    Done(usize),
}

fn extent(s: &[u8]) -> Extent {
    let mismatch = |want: &[u8]| {
        s.iter()
            .zip(want)
            .position(|(got, want)| got != want)
            .map(|i| Extent::Bad(i + 1))
    };
    match s.first() {
        None => Extent::More,
        Some(b'P') => {
            if let Some(bad) = mismatch(b"PROXY ") {
                return bad;
            }
            match s.iter().position(|&b| b == b'\n') {
                Some(i) if i < V1_MAX => Extent::Done(i + 1),
                _ if s.len() >= V1_MAX => Extent::Bad(V1_MAX),
                _ => Extent::More,
            }
        }
        Some(b'\r') => {
            if let Some(bad) = mismatch(V2_SIGNATURE) {
                return bad;
            }
            if s.len() < 16 {
                return Extent::More;
            }
            let total = 16 + usize::from(s[14]) * 256 + usize::from(s[15]);
            if total > MAX_HEADER {
                Extent::Bad(16)
            } else if s.len() < total {
                Extent::More
            } else {
                Extent::Done(total)
            }
        }
        Some(_) => Extent::Bad(1),
    }
}

/// A v1 port as the specification writes it: decimal, 0 to 65535, no
/// sign, no leading zero.
fn spec_port(field: &[u8]) -> Option<u16> {
    let ok = matches!(field, [b'0'] | [b'1'..=b'9', ..])
        && field.len() <= 5
        && field.iter().all(u8::is_ascii_digit);
    if !ok {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn ip_field(field: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

/// What the specification says a complete header (as delimited by
/// [`extent`]) means; `None`: it must be refused.
fn by_spec(h: &[u8]) -> Option<Header> {
    if h[0] == b'P' {
        let line = h.strip_suffix(b"\r\n")?;
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        return match fields.as_slice() {
            // "the receiver must ignore anything presented before the CRLF",
            // whatever the bytes.
            [b"PROXY", b"UNKNOWN", ..] => Some(Header::Local),
            [b"PROXY", proto, src, dst, sport, dport] => {
                let (src, dst) = (ip_field(src)?, ip_field(dst)?);
                let v4 = match *proto {
                    b"TCP4" => true,
                    b"TCP6" => false,
                    _ => return None,
                };
                if src.is_ipv4() != v4 || dst.is_ipv4() != v4 {
                    return None;
                }
                let (sport, _) = (spec_port(sport)?, spec_port(dport)?);
                Some(Header::Client(SocketAddr::new(src, sport)))
            }
            _ => None,
        };
    }
    let (version, command, family, block) = (h[12] >> 4, h[12] & 15, h[13], &h[16..]);
    if version != 2 {
        return None;
    }
    match command {
        // LOCAL: "discard the protocol block including the family which is
        // ignored".
        0 => return Some(Header::Local),
        1 => {}
        // "Receivers must drop connections presenting unexpected values".
        _ => return None,
    }
    // Families AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX; transports UNSPEC,
    // STREAM, DGRAM: "other values ... must be rejected as invalid".
    let (af, transport) = (family >> 4, family & 15);
    if af > 3 || transport > 2 {
        return None;
    }
    // UNSPEC: "the receiver should ignore address information".
    if af == 0 || transport == 0 {
        return Some(Header::Local);
    }
    // "Address length is 2*4 + 2*2 = 12 bytes", 2*16 + 2*2 = 36, 2*108 = 216.
    match (family, block.len()) {
        (0x11, 12..) => Some(Header::Client(v4_client(block))),
        (0x21, 36..) => Some(Header::Client(v6_client(block))),
        (0x12, 12..) | (0x22, 36..) | (0x31 | 0x32, 216..) => Some(Header::Local),
        _ => None,
    }
}

fn v4_client(block: &[u8]) -> SocketAddr {
    let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
    SocketAddr::new(ip.into(), u16::from_be_bytes([block[8], block[9]]))
}

fn v6_client(block: &[u8]) -> SocketAddr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&block[..16]);
    let port = u16::from_be_bytes([block[32], block[33]]);
    SocketAddr::new(Ipv6Addr::from(octets).into(), port)
}

/// Every check that holds for any stream.
fn check_stream(input: &[u8], seed: u8) {
    let outcomes: Vec<Outcome> = cuttings(input, seed).iter().map(|r| feed(r)).collect();
    let (used, outcome) = outcomes[0];
    assert!(
        outcomes.iter().all(|o| *o == outcomes[0]),
        "whole, byte by byte and cut: {outcomes:?}"
    );

    match (extent(input), outcome) {
        (Extent::More, None) => assert_eq!(used, input.len()),
        (Extent::Bad(n), Some(Err(why))) => {
            assert_eq!(used, n, "refused at the wrong byte: {why}");
            assert!(why.contains("PROXY"), "reason {why:?}");
        }
        (Extent::Done(n), Some(result)) => {
            assert_eq!(used, n, "header of {n} bytes, {used} used");
            match (by_spec(&input[..n]), result) {
                (Some(want), Ok(got)) => assert_eq!(got, want),
                (Some(want), Err(why)) => panic!("valid header ({want:?}) refused: {why}"),
                (None, Ok(got)) => panic!("invalid header accepted as {got:?}"),
                (None, Err(why)) => assert!(why.contains("PROXY"), "reason {why:?}"),
            }
        }
        (want, got) => panic!("expected {want:?}, got {got:?} after {used} bytes"),
    }

    // The header alone, or followed by other bytes, gives the same.
    if outcome.is_some() {
        let header = &input[..used];
        let mut tails: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"hello\r\nSTOP\n".to_vec(),
            [b"\nPROXY TCP4 \r\n".as_slice(), V2_SIGNATURE].concat(),
            vec![0xff; MAX_HEADER + 1],
        ];
        tails.push(input[used..].iter().rev().copied().collect());
        for tail in tails {
            let stream = [header, &tail].concat();
            assert_eq!(
                feed(&[&stream]),
                (used, outcome),
                "with {} bytes after",
                tail.len()
            );
        }
    }
}

fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let len = u16::try_from(block.len()).expect("block within MAX_HEADER");
    [
        V2_SIGNATURE,
        &[command, family][..],
        &len.to_be_bytes(),
        block,
    ]
    .concat()
}

fn filled(u: &mut Unstructured, n: usize) -> arbitrary::Result<Vec<u8>> {
    let mut v = vec![0; n];
    u.fill_buffer(&mut v)?;
    Ok(v)
}

/// Appends TLVs (type, 16-bit length, value) while the data says so and
/// the block stays within [`V2_BLOCK_MAX`].
fn push_tlvs(u: &mut Unstructured, block: &mut Vec<u8>) -> arbitrary::Result<()> {
    while block.len() + 3 <= V2_BLOCK_MAX && u.arbitrary::<bool>()? {
        let room = V2_BLOCK_MAX - 3 - block.len();
        let kind: u8 = u.arbitrary()?;
        let n = u.int_in_range(0..=room.min(64))?;
        block.push(kind);
        block.extend_from_slice(&(n as u16).to_be_bytes());
        block.extend(filled(u, n)?);
    }
    Ok(())
}

/// A header the specification calls valid, and what it says.
fn valid_header(u: &mut Unstructured) -> arbitrary::Result<(Vec<u8>, Header)> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => {
            let src = Ipv4Addr::from(u.arbitrary::<u32>()?);
            let dst = Ipv4Addr::from(u.arbitrary::<u32>()?);
            let (sport, dport): (u16, u16) = (u.arbitrary()?, u.arbitrary()?);
            let line = format!("PROXY TCP4 {src} {dst} {sport} {dport}\r\n");
            (line.into_bytes(), Header::Client((src, sport).into()))
        }
        1 => {
            let src = Ipv6Addr::from(u.arbitrary::<u128>()?);
            let dst = Ipv6Addr::from(u.arbitrary::<u128>()?);
            let (sport, dport): (u16, u16) = (u.arbitrary()?, u.arbitrary()?);
            let line = format!("PROXY TCP6 {src} {dst} {sport} {dport}\r\n");
            (line.into_bytes(), Header::Client((src, sport).into()))
        }
        2 => {
            let mut line = b"PROXY UNKNOWN".to_vec();
            if u.arbitrary()? {
                line.push(b' ');
                for _ in 0..u.int_in_range(0..=V1_MAX - line.len() - 2)? {
                    // Any byte but LF, which would end the line early.
                    let b: u8 = u.arbitrary()?;
                    line.push(if b == b'\n' { b' ' } else { b });
                }
            }
            line.extend_from_slice(b"\r\n");
            (line, Header::Local)
        }
        3 => {
            let v6: bool = u.arbitrary()?;
            let (sport, dport): (u16, u16) = (u.arbitrary()?, u.arbitrary()?);
            let mut block;
            let client: SocketAddr;
            if v6 {
                let (src, dst): (u128, u128) = (u.arbitrary()?, u.arbitrary()?);
                block = [src.to_be_bytes(), dst.to_be_bytes()].concat();
                client = (Ipv6Addr::from(src), sport).into();
            } else {
                let (src, dst): (u32, u32) = (u.arbitrary()?, u.arbitrary()?);
                block = [src.to_be_bytes(), dst.to_be_bytes()].concat();
                client = (Ipv4Addr::from(src), sport).into();
            }
            block.extend_from_slice(&sport.to_be_bytes());
            block.extend_from_slice(&dport.to_be_bytes());
            push_tlvs(u, &mut block)?;
            let family = if v6 { 0x21 } else { 0x11 };
            (v2(0x21, family, &block), Header::Client(client))
        }
        4 => {
            // PROXY, but no TCP client to report: UDP, Unix, or an UNSPEC
            // family or transport (with any block, even a short one).
            let (family, len) = *u.choose(&[
                (0x00, 0),
                (0x01, 0),
                (0x02, 0),
                (0x10, 0),
                (0x20, 0),
                (0x30, 0),
                (0x12, 12),
                (0x22, 36),
                (0x31, 216),
                (0x32, 216),
            ])?;
            let len = if len == 0 {
                u.int_in_range(0..=40)?
            } else {
                len
            };
            let mut block = filled(u, len)?;
            push_tlvs(u, &mut block)?;
            (v2(0x21, family, &block), Header::Local)
        }
        _ => {
            // LOCAL: the family and the block are ignored.
            let family: u8 = u.arbitrary()?;
            let len = u.int_in_range(0..=V2_BLOCK_MAX)?;
            (v2(0x20, family, &filled(u, len)?), Header::Local)
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        check_stream(rest, *seed);
        return;
    }
    let mut u = Unstructured::new(rest);
    let Ok((header, want)) = valid_header(&mut u) else {
        return;
    };
    assert_eq!(
        by_spec(&header),
        Some(want),
        "the generator and the model disagree"
    );
    let input = [header.as_slice(), u.take_rest()].concat();
    for reads in cuttings(&input, *seed) {
        assert_eq!(
            feed(&reads),
            (header.len(), Some(Ok(want))),
            "{:?}",
            String::from_utf8_lossy(&header)
        );
    }
    check_stream(&input, *seed);
});
