//! What every mode reports: latency percentiles, errors by kind, the
//! progress line.

use crate::record::Json;
use crate::{ERROR_KINDS, HIST_MAX_NS};
use hdrhistogram::Histogram;
use std::io::{self, Write};

pub(crate) fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).map_err(|e| format!("histogram: {e}"))
}

/// Percentiles in microseconds, 0 when nothing was recorded.
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| {
            if h.is_empty() {
                0.0
            } else {
                ns as f64 / 1000.0
            }
        };
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// Errors counted, with the first few distinct messages kept for the end.
#[derive(Default)]
pub(crate) struct Errors {
    pub(crate) count: u64,
    pub(crate) kinds: Vec<(String, u64)>,
}

impl Errors {
    pub(crate) fn add(&mut self, why: String) {
        self.add_n(why, 1);
    }

    pub(crate) fn add_n(&mut self, why: String, n: u64) {
        self.count += n;
        if let Some(kind) = self.kinds.iter_mut().find(|(w, _)| *w == why) {
            kind.1 += n;
        } else if self.kinds.len() < ERROR_KINDS {
            self.kinds.push((why, n));
        }
    }

    pub(crate) fn merge(&mut self, other: &Errors) {
        let listed: u64 = other.kinds.iter().map(|(_, n)| n).sum();
        for (why, n) in &other.kinds {
            self.add_n(why.clone(), *n);
        }
        // Errors whose message did not fit in `other`'s list.
        self.count += other.count - listed;
    }

    /// The distinct messages and their counts, for the JSON record.
    pub(crate) fn to_json(&self) -> Json {
        let listed: u64 = self.kinds.iter().map(|(_, n)| n).sum();
        let mut kinds: Vec<Json> = self
            .kinds
            .iter()
            .map(|(why, n)| {
                Json::Obj(vec![
                    ("message".into(), why.clone().into()),
                    ("count".into(), (*n).into()),
                ])
            })
            .collect();
        if self.count > listed {
            kinds.push(Json::Obj(vec![
                ("message".into(), "other kinds".into()),
                ("count".into(), (self.count - listed).into()),
            ]));
        }
        Json::Arr(kinds)
    }

    /// One line per distinct message, on stderr.
    pub(crate) fn print(&self) {
        let listed: u64 = self.kinds.iter().map(|(_, n)| n).sum();
        for (why, n) in &self.kinds {
            eprintln!("load: error: {why} (x{n})");
        }
        if self.count > listed {
            eprintln!("load: error: {} more of other kinds", self.count - listed);
        }
    }
}

/// The progress line on stderr, rewritten in place with `\r`. Always
/// printed (a log file gets every state, separated by `\r`) and ended
/// with a newline by [`Progress::finish`].
#[derive(Default)]
pub(crate) struct Progress {
    /// Length of the line on screen, to blank out what a shorter one leaves.
    width: usize,
}

impl Progress {
    pub(crate) fn show(&mut self, text: &str) {
        let pad = self.width.saturating_sub(text.len());
        self.width = text.len();
        // One write per line; a closed stderr is no reason to stop.
        let line = format!("\r{text}{:pad$}", "");
        let _ = io::stderr().write_all(line.as_bytes());
    }

    pub(crate) fn finish(&mut self) {
        self.width = 0;
        let _ = io::stderr().write_all(b"\n");
    }
}
