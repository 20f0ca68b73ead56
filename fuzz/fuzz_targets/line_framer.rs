//! Fuzz target `line_framer`: `LineFramer::advance` (src/line.rs), which
//! frames every byte a client sends, so it must never panic and must give
//! the same frames however the kernel cuts the stream.
//!
//! Input: `[limits, seed, stream...]`. The stream is framed as the server
//! frames it (src/conn.rs `read_lines`: advance until the read is used up,
//! stop for good at `Stop` or `TooLong`) with `max_line` = `None`,
//! `Some(usize::MAX)`, and two small limits taken from the `limits` byte
//! (`limits & 15` and `16 + (limits >> 4)`). Each limit is fed whole, one
//! byte per read, and cut at random points chosen by `seed`. Checked:
//!
//! - every `advance` on a non-empty read uses at least one byte and at most
//!   the read; `(0, None)` on an empty one; a `None` frame uses all of it;
//! - every feeding gives the same frames, each at the same stream offset,
//!   the same number of bytes consumed, and the same "a line is pending";
//! - all of that equals a plain model of docs/protocol.md: split at `\n`,
//!   trim ASCII whitespace (space, tab, CR, LF, FF; not VT), `STOP` exactly
//!   ends the session, a line of more than `max` bytes (whitespace and CR
//!   counted) is `TooLong` as soon as its byte `max + 1` arrives;
//! - so no limit and a limit of `usize::MAX` frame alike (no overflow in
//!   the framer's length arithmetic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use randline::line::{Frame, LineFramer};
use randline_fuzz::cuttings;

/// What one feeding of a stream produced.
#[derive(Debug, PartialEq, Eq)]
struct Framing {
    /// Each frame, with the stream offset just past its last byte.
    frames: Vec<(Frame, usize)>,
    /// Bytes consumed in all: up to the `Stop`/`TooLong`, or everything.
    consumed: usize,
    /// An unterminated line is pending at the end (false after a stop).
    pending: bool,
}

/// Feeds `reads` in order as the server does.
fn feed(reads: &[&[u8]], max_line: Option<usize>) -> Framing {
    let mut framer = LineFramer::new();
    let mut frames = Vec::new();
    let mut consumed = 0;
    for read in reads {
        if read.is_empty() {
            let was_at_start = framer.at_line_start();
            assert_eq!(framer.advance(read, max_line), (0, None));
            assert_eq!(framer.at_line_start(), was_at_start);
            continue;
        }
        let mut rest: &[u8] = read;
        while !rest.is_empty() {
            let (used, frame) = framer.advance(rest, max_line);
            assert!(
                (1..=rest.len()).contains(&used),
                "used {used} of {}",
                rest.len()
            );
            consumed += used;
            rest = &rest[used..];
            match frame {
                None => {
                    assert!(rest.is_empty(), "no frame, yet {} bytes left", rest.len());
                    assert!(!framer.at_line_start(), "bytes taken but nothing pending");
                }
                Some(f) => {
                    frames.push((f, consumed));
                    match f {
                        Frame::Line => assert!(framer.at_line_start()),
                        Frame::Stop | Frame::TooLong => {
                            return Framing {
                                frames,
                                consumed,
                                pending: false,
                            };
                        }
                    }
                }
            }
        }
    }
    Framing {
        frames,
        consumed,
        pending: !framer.at_line_start(),
    }
}

/// The protocol read plainly, on the whole stream at once.
fn model(stream: &[u8], max_line: Option<usize>) -> Framing {
    // ASCII whitespace as docs/protocol.md lists it; a vertical tab (0x0B)
    // is content.
    let blank = |b: &u8| b" \t\r\n\x0c".contains(b);
    let mut frames = Vec::new();
    let mut start = 0;
    loop {
        let rest = &stream[start..];
        let newline = rest.iter().position(|&b| b == b'\n');
        let len = newline.unwrap_or(rest.len());
        if let Some(max) = max_line
            && len > max
        {
            let end = start + max + 1;
            frames.push((Frame::TooLong, end));
            return Framing {
                frames,
                consumed: end,
                pending: false,
            };
        }
        let Some(newline) = newline else {
            return Framing {
                frames,
                consumed: stream.len(),
                pending: !rest.is_empty(),
            };
        };
        let mut content = &rest[..newline];
        while let [first, tail @ ..] = content
            && blank(first)
        {
            content = tail;
        }
        while let [head @ .., last] = content
            && blank(last)
        {
            content = head;
        }
        let end = start + newline + 1;
        if content == b"STOP" {
            frames.push((Frame::Stop, end));
            return Framing {
                frames,
                consumed: end,
                pending: false,
            };
        }
        frames.push((Frame::Line, end));
        start = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let [limits, seed, stream @ ..] = data else {
        return;
    };
    let cuts = cuttings(stream, *seed);
    for max_line in [
        None,
        Some(usize::MAX),
        Some(usize::from(limits & 15)),
        Some(16 + usize::from(limits >> 4)),
    ] {
        let want = model(stream, max_line);
        for reads in &cuts {
            let got = feed(reads, max_line);
            assert_eq!(
                got,
                want,
                "max_line {max_line:?}, reads of {:?} bytes",
                reads.iter().map(|r| r.len()).collect::<Vec<_>>()
            );
        }
    }
});
