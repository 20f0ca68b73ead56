//! What a correct server owes one client, computed from the bytes it sent.
//!
//! This is a second, independent statement of the protocol (docs/protocol.md),
//! written from the spec and not from `src/line.rs`, so that a bug in the
//! framer is a disagreement here, not the same bug twice:
//! - a line is the bytes before `\n`; its content is the line with ASCII
//!   whitespace (space, tab, CR, LF, FF: Rust's `is_ascii_whitespace`; not
//!   VT) trimmed from both ends;
//! - every line is answered with one integer in `[min, max]`, except a line
//!   whose content is exactly `STOP`, which ends the session;
//! - a line of more than `--max-line` bytes (before its `\n`) gets
//!   `ERR line too long` and ends the session, even before its `\n` comes;
//! - after the end, or after the client's EOF, the answers owed are sent,
//!   then the server closes: the client reads EOF, never a reset.
//!
//! What is not here: the PROXY header (the plan knows whether it sent a
//! valid one) and the bytes' timing (the plan's business).

/// The answers a client is owed, and whether the server must close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    /// Complete lines before the end, each owed one number.
    pub answers: usize,
    /// `ERR line too long` follows the answers.
    pub too_long: bool,
    /// The stream itself ends the session (STOP or a line too long): the
    /// server closes whether or not the client ever sends EOF.
    pub ended: bool,
}

/// What the server must answer to `stream` (the bytes it receives after
/// any PROXY header, urgent bytes already removed).
pub fn owed(stream: &[u8], max_line: Option<usize>) -> Owed {
    let mut answers = 0;
    let mut rest = stream;
    loop {
        let (line, complete) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        if max_line.is_some_and(|max| line.len() > max) {
            return Owed {
                answers,
                too_long: true,
                ended: true,
            };
        }
        if !complete {
            return Owed {
                answers,
                too_long: false,
                ended: false,
            };
        }
        if line.trim_ascii() == b"STOP" {
            return Owed {
                answers,
                too_long: false,
                ended: true,
            };
        }
        answers += 1;
        rest = &rest[line.len() + 1..];
    }
}

/// Checks what a client received against what it was owed: exactly
/// `answers` integers in range, one per line, then the error line if owed,
/// and nothing else. Returns what is wrong, if anything.
pub fn check_answers(got: &[u8], owed: &Owed, range: (i64, i64)) -> Result<(), String> {
    let mut lines = got.split_inclusive(|&b| b == b'\n');
    for i in 0..owed.answers {
        let Some(line) = lines.next() else {
            return Err(format!("{} answers owed, got {i}", owed.answers));
        };
        let number = line
            .strip_suffix(b"\n")
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.parse::<i64>().ok());
        match number {
            Some(n) if (range.0..=range.1).contains(&n) => {}
            Some(n) => return Err(format!("answer {i} is {n}, outside {range:?}")),
            None => {
                return Err(format!(
                    "answer {i} is not a number line: {}",
                    crate::show(line)
                ));
            }
        }
    }
    if owed.too_long {
        match lines.next() {
            Some(b"ERR line too long\n") => {}
            other => {
                return Err(format!(
                    "ERR line too long owed after {} answers, got {}",
                    owed.answers,
                    other.map_or("nothing".into(), crate::show)
                ));
            }
        }
    }
    let extra: Vec<u8> = lines.flatten().copied().collect();
    if !extra.is_empty() {
        return Err(format!(
            "{} bytes more than owed: {}",
            extra.len(),
            crate::show(&extra)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_follows_the_protocol() {
        let o = |s: &[u8], max| owed(s, max);
        assert_eq!(o(b"a\nb\n", None).answers, 2);
        assert_eq!(o(b"a\nb", None).answers, 1);
        assert!(o(b"a\n \tSTOP\r\nb\n", None).ended);
        assert_eq!(o(b"a\n \tSTOP\r\nb\n", None).answers, 1);
        assert_eq!(o(b"\x0bSTOP\nSTOPS\nstop\n", None).answers, 3);
        let long = o(b"12345\n123456", Some(5));
        assert_eq!((long.answers, long.too_long), (1, true));
        assert!(!o(b"12345\n12345", Some(5)).too_long);
    }
}
