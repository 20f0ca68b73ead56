//! One client's behaviour, drawn from a seed: what it sends, in which
//! pieces, how it reads, how it ends. A plan is data: the same seed gives
//! the same plans on every run, whatever the timing (replay a failure with
//! `--seed`).
//!
//! What is not here: running a plan (client.rs) and what the server owes
//! for it (model.rs).

use crate::rng::Rng;

/// How the transport is reached; decides which behaviours make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
}

/// The first bytes of a connection under `--proxy-protocol`.
#[derive(Debug, Clone)]
pub enum Header {
    /// No PROXY protocol in this mode.
    None,
    /// A valid v1 or v2 header: lines follow.
    Valid(Vec<u8>),
    /// Bytes that are proven not to be a header once all are read: no
    /// answer, ever; the server closes.
    Garbage(Vec<u8>),
    /// The start of a valid header, never finished: the client ends with
    /// EOF and gets nothing.
    Truncated(Vec<u8>),
}

impl Header {
    /// The bytes sent before the body.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Header::None => &[],
            Header::Valid(b) | Header::Garbage(b) | Header::Truncated(b) => b,
        }
    }
}

/// One write of the plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// Bytes, written as one `write` (TCP_NODELAY: usually one segment).
    Send(Vec<u8>),
    /// TCP urgent data: the last byte is the urgent byte, which leaves the
    /// stream (no SO_OOBINLINE on the server): the model drops it.
    Urgent(Vec<u8>),
    /// Wait before the next step, milliseconds.
    Pause(u64),
}

/// How the client reads its answers.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    /// As fast as they come.
    Eager,
    /// A few bytes at a time with a pause between reads (a slow reader).
    Slow { chunk: usize, pause_ms: u64 },
    /// Never reads: its answers pile up in the server and the kernel.
    Never,
}

/// How the client ends its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Keeps its side open: the stream itself must end the session.
    Open,
    /// Half-close (shutdown write): owed every complete line, then EOF.
    HalfClose,
    /// Reset (SO_LINGER 0, close): owed nothing; must hurt nobody.
    Reset,
    /// Close both directions right away (connect-and-vanish).
    Vanish,
}

/// Everything one client does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A word for the report.
    pub kind: &'static str,
    pub header: Header,
    /// The header's bytes, then the body's, as written.
    pub steps: Vec<Step>,
    pub reader: Reader,
    pub end: End,
}

impl Plan {
    /// The bytes the server's line framer sees: every step's bytes in
    /// order, urgent bytes removed, the header not included.
    pub fn stream(&self) -> Vec<u8> {
        let mut s = Vec::new();
        for step in &self.steps {
            match step {
                Step::Send(b) => s.extend_from_slice(b),
                Step::Urgent(b) => s.extend_from_slice(&b[..b.len() - 1]),
                Step::Pause(_) => {}
            }
        }
        s.split_off(self.header.bytes().len().min(s.len()))
    }

    /// True when the outcome is checked: a client that resets or vanishes
    /// is owed nothing it could read, and one that never reads is there to
    /// load the server; what they get is not looked at.
    pub fn is_checked(&self) -> bool {
        matches!(self.end, End::Open | End::HalfClose) && !matches!(self.reader, Reader::Never)
    }
}

/// Settings every plan of a run shares.
pub struct Limits {
    pub transport: Transport,
    pub proxy: bool,
    pub max_line: usize,
}

/// Draws one client's plan.
pub fn draw(rng: &mut Rng, limits: &Limits) -> Plan {
    let header = if limits.proxy {
        draw_header(rng)
    } else {
        Header::None
    };
    let (kind, mut body) = draw_body(rng, limits);
    // The end: every checked plan must end the session somehow.
    let mut end = match rng.below(10) {
        0..=4 => End::HalfClose,
        5..=6 => End::Open,
        7..=8 => End::Reset,
        _ => End::Vanish,
    };
    let mut reader = match rng.below(10) {
        0..=7 => Reader::Eager,
        8 => Reader::Slow {
            chunk: 1 + rng.below(64) as usize,
            pause_ms: 1 + rng.below(4),
        },
        _ => Reader::Never,
    };
    let mut kind = kind;
    match kind {
        "connect-and-vanish" => {
            body.clear();
            end = End::Vanish;
        }
        "never-reader" => {
            reader = Reader::Never;
            end = End::Reset;
        }
        _ => {}
    }
    if let Header::Truncated(_) = header {
        // Lines after it would be read as the rest of the header, and
        // might even complete a v2 one: send nothing more.
        body.clear();
    }
    if matches!(header, Header::Truncated(_) | Header::Garbage(_)) && end == End::Open {
        // No line will be read, so none can end the session: we do.
        end = End::HalfClose;
    }
    if end == End::Open {
        let owed = crate::model::owed(&body, Some(limits.max_line));
        if !owed.ended {
            if body.last().is_some_and(|&b| b != b'\n') {
                body.push(b'\n'); // STOP must start a line of its own
            }
            body.extend_from_slice(stop_variant(rng));
            if rng.below(3) == 0 {
                // STOP with trailing bytes: never answered, never a reset.
                let n = 1 + rng.below(3000) as usize;
                body.extend(rng.bytes(n, b"ab\n \r"));
                kind = "stop-trailing";
            }
        }
    }
    if matches!(reader, Reader::Slow { .. }) && body.len() > 4000 {
        // A slow reader of many answers would take minutes.
        reader = Reader::Eager;
    }
    let mut wire = header.bytes().to_vec();
    wire.extend_from_slice(&body);
    let steps = split(rng, &wire, limits.transport);
    Plan {
        kind,
        header,
        steps,
        reader,
        end,
    }
}

/// The lines (and other bytes) a client sends, by kind.
fn draw_body(rng: &mut Rng, limits: &Limits) -> (&'static str, Vec<u8>) {
    let max = limits.max_line;
    let mut body = Vec::new();
    let kind = match rng.below(12) {
        0 => {
            for _ in 0..1 + rng.below(20_000) {
                body.extend_from_slice(b"x\n");
            }
            "deep-pipeline"
        }
        1 => {
            for _ in 0..rng.below(30) {
                body.extend_from_slice(line_variant(rng));
                body.extend_from_slice(b"\r\n");
            }
            "crlf"
        }
        2 => {
            for _ in 0..rng.below(30) {
                body.extend_from_slice(stop_lookalike(rng));
                body.push(b'\n');
            }
            "stop-lookalikes"
        }
        3 => {
            for _ in 0..rng.below(30) {
                let n = rng.below(40) as usize;
                body.extend(rng.bytes(n, b"\0\xff\xfe\xc2\xa0\x0b\x0cz"));
                body.push(b'\n');
            }
            "binary"
        }
        4 => {
            // Around --max-line: under, at, over (over ends the session).
            for _ in 0..rng.below(8) {
                let len = (max - 2 + rng.below(3) as usize).min(max);
                body.extend(std::iter::repeat_n(b'L', len));
                body.push(b'\n');
            }
            if rng.below(2) == 0 {
                let over = max + 1 + rng.below(2 * max as u64) as usize;
                body.extend(std::iter::repeat_n(b'L', over));
                if rng.below(2) == 0 {
                    body.push(b'\n');
                }
            }
            "max-line"
        }
        5 => {
            // Half-close after a fragment: the fragment is not a line.
            for _ in 0..rng.below(10) {
                body.extend_from_slice(b"line\n");
            }
            body.extend_from_slice(b"frag");
            "fragment"
        }
        6 => "connect-and-vanish",
        7 => {
            let n = 50_000 + rng.below(200_000) as usize;
            body.extend(std::iter::repeat_n(b'\n', n));
            "never-reader"
        }
        8 if limits.transport == Transport::Tcp => {
            // Lines with one urgent byte among them (added by `split`).
            for _ in 0..1 + rng.below(20) {
                body.extend_from_slice(b"urgent test\n");
            }
            "urgent"
        }
        _ => {
            for _ in 0..rng.below(200) {
                body.extend_from_slice(line_variant(rng));
                body.push(b'\n');
            }
            "lines"
        }
    };
    (kind, body)
}

/// Cuts `body` into writes of every size from 1 byte up, with pauses, and
/// for TCP sometimes one urgent byte (inserted: it is not part of `body`).
fn split(rng: &mut Rng, body: &[u8], transport: Transport) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut urgent = transport == Transport::Tcp && rng.below(6) == 0;
    let max_piece = match rng.below(4) {
        0 => 1,
        1 => 8,
        2 => 512,
        _ => 64 * 1024,
    };
    let mut at = 0;
    while at < body.len() {
        let n = (1 + rng.below(max_piece) as usize).min(body.len() - at);
        let piece = body[at..at + n].to_vec();
        at += n;
        if urgent && rng.below(4) == 0 {
            // The urgent byte: a letter, a newline or a STOP letter, any
            // of which would change what the server counts if it stayed.
            let mut with = piece;
            with.push(rng.pick(b"xS\n"));
            steps.push(Step::Urgent(with));
            urgent = false;
        } else {
            steps.push(Step::Send(piece));
        }
        // Pauses only between small pieces: a deep pipeline stays deep.
        if max_piece <= 8 && rng.below(20) == 0 {
            steps.push(Step::Pause(rng.below(5)));
        }
        if steps.len() > 4000 {
            // Byte-by-byte sends of a big body: the rest in one write.
            steps.push(Step::Send(body[at..].to_vec()));
            break;
        }
    }
    steps
}

fn line_variant(rng: &mut Rng) -> &'static [u8] {
    rng.pick(&[
        b"hello" as &[u8],
        b"",
        b"   ",
        b"\t42\t",
        b"a b c",
        b"\r",
        b"\x0c",
        b"caf\xc3\xa9",
    ])
}

fn stop_variant(rng: &mut Rng) -> &'static [u8] {
    rng.pick(&[
        b"STOP\n" as &[u8],
        b"STOP\r\n",
        b"  STOP \t\r\n",
        b"\x0cSTOP\x0c\n",
    ])
}

fn stop_lookalike(rng: &mut Rng) -> &'static [u8] {
    rng.pick(&[
        b"stop" as &[u8],
        b"Stop",
        b"STOPS",
        b"STO P",
        b"STOP\x0b",
        b"\xc2\xa0STOP",
        b"STOP.",
        b"STO",
        b"SSTOP",
        b"STOP\0",
    ])
}

/// PROXY headers: valid (v1 TCP4/TCP6/UNKNOWN, v2 PROXY/LOCAL with TLVs),
/// garbage, truncated.
fn draw_header(rng: &mut Rng) -> Header {
    let valid = valid_header(rng);
    match rng.below(10) {
        0 => Header::Garbage(
            rng.pick(&[
                b"GET / HTTP/1.1\r\n" as &[u8],
                b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
                b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",
                b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
                b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c000000000000",
                b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff",
                b"\r\n\r\n\0\r\nQUIX\n",
                b"hello\n",
            ])
            .to_vec(),
        ),
        1 => {
            let cut = rng.below(valid.len() as u64 - 1) as usize + 1;
            Header::Truncated(valid[..cut].to_vec())
        }
        _ => Header::Valid(valid),
    }
}

fn valid_header(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 7000\r\n".to_vec(),
        1 => b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 7000\r\n".to_vec(),
        2 => b"PROXY UNKNOWN\r\n".to_vec(),
        command => {
            let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            let tlv_len = rng.below(40) as usize;
            h.push(if command == 3 { 0x21 } else { 0x20 }); // PROXY, LOCAL
            h.push(0x11); // TCP over IPv4
            h.extend_from_slice(&(12 + tlv_len as u16).to_be_bytes());
            h.extend_from_slice(&[203, 0, 113, 7, 192, 0, 2, 1]);
            h.extend_from_slice(&56324u16.to_be_bytes());
            h.extend_from_slice(&7000u16.to_be_bytes());
            h.extend(rng.bytes(tlv_len, b"\x04\0\x01\n\r"));
            h
        }
    }
}
