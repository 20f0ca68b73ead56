//! The line framer: bytes in, [`Frame`]s out. No I/O, no allocation.
//!
//! A client's bytes arrive in segments cut anywhere, so a line may begin in
//! one read and end three reads later. The framer does not keep the line: the
//! server only needs to know, when `\n` comes, whether the line was `STOP`,
//! and, before that, whether it has grown past `--max-line`. So the state
//! carried from one read to the next is two small numbers: the length so far
//! and how far the content still matches `STOP`.
//!
//! The content of a line is its bytes before `\n` with ASCII whitespace
//! (`u8::is_ascii_whitespace`: space, tab, CR, LF, FF) trimmed from both ends.
//! Any other byte, invalid UTF-8 or a Unicode space included, is content.

/// What a complete (or overlong) line means to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Any line that is not `STOP`, the empty line included: one answer.
    Line,
    /// The content is exactly `STOP`: answer nothing more, close.
    Stop,
    /// The line passed `--max-line` bytes; reported as soon as it does,
    /// without waiting for its `\n`.
    TooLong,
}

/// How much of `STOP` the current line's content matches so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    /// Only whitespace so far: the content has not started.
    Blank,
    /// The content so far is the first `n` bytes of `STOP` (1..=4); after
    /// all four, only trailing whitespace may follow.
    Prefix(u8),
    /// The content cannot be `STOP`.
    No,
}

const STOP: &[u8] = b"STOP";

/// Per-connection framing state: 16 bytes, whatever the line length.
#[derive(Debug, Clone)]
pub struct LineFramer {
    /// Bytes of the current line seen so far (before its `\n`).
    len: usize,
    matched: Match,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    /// A framer at the start of a line.
    pub const fn new() -> Self {
        LineFramer {
            len: 0,
            matched: Match::Blank,
        }
    }

    /// Consumes `input` up to and including the end of the next frame.
    ///
    /// Returns how many bytes it consumed and the frame, or `None` when
    /// `input` ran out in the middle of a line (all of it was consumed and
    /// remembered). `max_line` is the longest allowed line; `None` means no
    /// limit. After [`Frame::TooLong`] the framer is not reset: the server
    /// closes the connection.
    pub fn advance(&mut self, input: &[u8], max_line: Option<usize>) -> (usize, Option<Frame>) {
        let (body, end) = match memchr::memchr(b'\n', input) {
            Some(i) => (&input[..i], Some(i + 1)),
            None => (input, None),
        };

        if let Some(max) = max_line {
            let room = max.saturating_sub(self.len);
            if body.len() > room {
                // Byte number `max + 1` of the line is here: say so now,
                // rather than after reading an unbounded amount more.
                return (room + 1, Some(Frame::TooLong));
            }
        }
        self.len += body.len();
        // Typical lines leave `Blank` on their first byte, so this loop is
        // short; it stops for good once the line cannot be `STOP`.
        for &b in body {
            self.matched = match self.matched {
                Match::No => break,
                Match::Blank if b.is_ascii_whitespace() => Match::Blank,
                Match::Blank if b == STOP[0] => Match::Prefix(1),
                Match::Prefix(4) if b.is_ascii_whitespace() => Match::Prefix(4),
                Match::Prefix(n) if n < 4 && b == STOP[n as usize] => Match::Prefix(n + 1),
                _ => Match::No,
            };
        }

        match end {
            None => (input.len(), None),
            Some(used) => {
                let frame = if self.matched == Match::Prefix(4) {
                    Frame::Stop
                } else {
                    Frame::Line
                };
                *self = LineFramer::new();
                (used, Some(frame))
            }
        }
    }

    /// True when no bytes of an unfinished line are pending.
    pub fn at_line_start(&self) -> bool {
        self.len == 0 && self.matched == Match::Blank
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `segments` in order, as reads would deliver them.
    fn frames_of(segments: &[&[u8]], max_line: Option<usize>) -> Vec<Frame> {
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        'feed: for seg in segments {
            let mut pos = 0;
            while pos < seg.len() {
                let (used, frame) = framer.advance(&seg[pos..], max_line);
                assert!(used > 0, "advance made no progress");
                pos += used;
                if let Some(f) = frame {
                    out.push(f);
                    if f == Frame::TooLong {
                        break 'feed;
                    }
                }
            }
        }
        out
    }

    /// The protocol as a plain reading of the spec: split at `\n`, trim,
    /// compare; the unterminated tail is not a line.
    fn model(input: &[u8], max_line: Option<usize>) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let nl = rest.iter().position(|&b| b == b'\n');
            let line_len = nl.unwrap_or(rest.len());
            if max_line.is_some_and(|max| line_len > max) {
                out.push(Frame::TooLong);
                return out;
            }
            let Some(nl) = nl else { return out };
            let content = rest[..nl].trim_ascii();
            out.push(if content == b"STOP" {
                Frame::Stop
            } else {
                Frame::Line
            });
            rest = &rest[nl + 1..];
        }
    }

    use Frame::{Line, Stop, TooLong};

    #[test]
    fn stop_is_exact_after_trimming() {
        let cases: &[(&[u8], Frame)] = &[
            (b"STOP\n", Stop),
            (b"  STOP\r\n", Stop),
            (b"\tSTOP \x0c\n", Stop),
            (b"stop\n", Line),
            (b"STOPP\n", Line),
            (b"STO P\n", Line),
            (b"STO\n", Line),
            (b"xSTOP\n", Line),
            (b"\n", Line),
            (b"   \n", Line),
            // A vertical tab is not ASCII whitespace to Rust: it is content.
            (b"STOP\x0b\n", Line),
            // A Unicode no-break space is content too.
            ("STOP\u{a0}\n".as_bytes(), Line),
            (b"\xff\xfe\n", Line),
        ];
        for (input, want) in cases {
            assert_eq!(frames_of(&[input], None), vec![*want], "{input:?}");
        }
    }

    #[test]
    fn unterminated_tail_is_not_a_line() {
        assert_eq!(frames_of(&[b"a\nb\nhalf"], None), vec![Line, Line]);
    }

    #[test]
    fn too_long_fires_at_byte_max_plus_one_without_newline() {
        assert_eq!(frames_of(&[b"12345"], Some(5)), vec![]);
        assert_eq!(frames_of(&[b"12345\n"], Some(5)), vec![Line]);
        assert_eq!(frames_of(&[b"123456"], Some(5)), vec![TooLong]);
        assert_eq!(frames_of(&[b"123", b"456"], Some(5)), vec![TooLong]);
        assert_eq!(frames_of(&[b"ok\n123456"], Some(5)), vec![Line, TooLong]);
        // The length counts the raw bytes, whitespace and CR included.
        assert_eq!(frames_of(&[b"STOP \r\n"], Some(5)), vec![TooLong]);
    }

    #[test]
    fn every_split_gives_the_same_frames_as_the_whole() {
        let input: &[u8] = b"one\r\n  STOP  \n\nSTOPX\n STOP\n12345678\nlast";
        for max_line in [None, Some(8), Some(7)] {
            let whole = frames_of(&[input], max_line);
            assert_eq!(whole, model(input, max_line));
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let parts = [&input[..i], &input[i..j], &input[j..]];
                    assert_eq!(frames_of(&parts, max_line), whole, "split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn resets_between_lines() {
        let mut f = LineFramer::new();
        assert_eq!(f.advance(b"ST", None), (2, None));
        assert!(!f.at_line_start());
        assert_eq!(f.advance(b"OP\nx", None), (3, Some(Stop)));
        assert!(f.at_line_start());
    }

    fn bytes_from(alphabet: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(alphabet), 0..64)
    }

    proptest! {
        /// Random inputs built from the bytes that matter, cut at random
        /// places, framed, and compared with the model.
        #[test]
        fn matches_the_model(
            input in bytes_from(b"STOPstop \t\r\n\x0b\x0cx\xff"),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            max_line in prop::option::of(1usize..12),
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            at.sort_unstable();
            let mut segments = Vec::new();
            let mut prev = 0;
            for &c in &at {
                segments.push(&input[prev..c]);
                prev = c;
            }
            segments.push(&input[prev..]);
            prop_assert_eq!(frames_of(&segments, max_line), model(&input, max_line));
        }
    }
}
