//! Fuzz target `scrape_head`: `Head::push` and `respond` (src/metrics.rs),
//! which read and answer the request head of every connection to
//! `--metrics`, before anything about the client is known: they must never
//! panic, must decide the same however the bytes are cut, and must answer
//! well-formed HTTP.
//!
//! Input: `[seed, stream...]`. The stream is pushed as the server pushes
//! its reads (until `Complete` or `TooLong`), whole, one byte per read, and
//! cut at random points chosen by `seed`. Checked:
//!
//! - every feeding gives the same outcome and the same head;
//! - that equals a plain model: split the first `MAX_HEAD` bytes at `\n`;
//!   the head ends before the first empty line (empty, or a lone `\r`)
//!   after the first line, if that line's `\n` is among those bytes; no
//!   such line in `MAX_HEAD` bytes is `TooLong`; fewer bytes, `Partial`;
//! - a complete head is answered with a status line, `Content-Length`
//!   equal to the body's length, and a status the model of its request
//!   line gives: `200` (with the metrics as the body) only for
//!   `GET /metrics` (any query) over `HTTP/1.x`, `404` for another path,
//!   `405` (with `Allow: GET`) for another method, `400` otherwise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use randline::metrics::{Head, MAX_HEAD, Parsed, respond};
use randline_fuzz::cuttings;

/// Pushes `reads` in order until the head is decided.
fn feed(reads: &[&[u8]]) -> (Parsed, Vec<u8>) {
    let mut head = Head::default();
    for read in reads {
        match head.push(read) {
            Parsed::Partial => {}
            decided => return (decided, head.bytes().to_vec()),
        }
    }
    (Parsed::Partial, head.bytes().to_vec())
}

/// The model: where the head ends, from the lines of the kept bytes.
fn model(stream: &[u8]) -> (Parsed, Vec<u8>) {
    let kept = &stream[..stream.len().min(MAX_HEAD)];
    let mut start = 0;
    let mut first = true;
    // Each line with its `\n`; an unterminated tail is not a line.
    while let Some(n) = kept[start..].iter().position(|&b| b == b'\n') {
        let line = &kept[start..start + n];
        if !first && (line.is_empty() || line == b"\r") {
            // The head is everything before the `\n` that ended the line
            // before this one.
            return (Parsed::Complete, kept[..start - 1].to_vec());
        }
        first = false;
        start += n + 1;
    }
    if kept.len() == MAX_HEAD {
        (Parsed::TooLong, kept.to_vec())
    } else {
        (Parsed::Partial, kept.to_vec())
    }
}

/// The status the request line (the head's first line) must get.
fn status(head: &[u8]) -> &'static str {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let [method, target, version] = fields.as_slice() else {
        return "400";
    };
    if !version.starts_with(b"HTTP/1.") {
        return "400";
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (*method, path) {
        (b"GET", b"/metrics") => "200",
        (b"GET", _) => "404",
        _ => "405",
    }
}

fn check_answer(head: &[u8]) {
    let answer = respond(head, || "metric 1\n".to_string());
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an empty line after the answer's head");
    let (lines, body) = (&answer[..split], &answer[split + 4..]);
    let lines = std::str::from_utf8(lines).expect("an ASCII head");
    let want = status(head);
    assert!(
        lines.starts_with(&format!("HTTP/1.1 {want} ")),
        "{lines:?} for {:?}",
        String::from_utf8_lossy(head)
    );
    assert!(
        lines.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{lines:?}"
    );
    assert_eq!(lines.contains("\r\nAllow: GET"), want == "405", "{lines:?}");
    if want == "200" {
        assert_eq!(body, b"metric 1\n");
    }
}

fuzz_target!(|data: &[u8]| {
    let [seed, stream @ ..] = data else {
        return;
    };
    let outcomes: Vec<(Parsed, Vec<u8>)> =
        cuttings(stream, *seed).iter().map(|r| feed(r)).collect();
    assert!(
        outcomes.iter().all(|o| *o == outcomes[0]),
        "whole, byte by byte and cut: {outcomes:?}"
    );
    let (parsed, head) = &outcomes[0];
    let (want, want_head) = model(stream);
    assert_eq!((*parsed, head), (want, &want_head));
    if *parsed == Parsed::Complete {
        check_answer(head);
    }
});
