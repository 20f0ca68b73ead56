//! What the loop has done so far, counted: plain integers, bumped in place.
//!
//! One thread owns them, so there are no atomics and no locks: a counter
//! costs one add on a cache line the loop touches anyway. The loop prints
//! them as one `stats:` line at shutdown, every `--stats-interval`, and on
//! SIGUSR1 (see [`crate::server`]); `--metrics` serves them to Prometheus
//! (see [`crate::metrics`]).
//!
//! The format is `stats: key=value key=value ...`, so a script can split it
//! on spaces and `=`; keys are only ever added at the end. The keys, in
//! the line's order, and what each one counts, exactly, are listed once:
//! in [`StatsLine::entries`]. The line is written from that list,
//! `--metrics` takes its counters and their help from it, and the tests
//! check against it. (A list in code, not a table here: the line and the
//! metrics can be made from code, never from a doc comment.)

use std::fmt;

/// The counters, bumped in place by the loop. Each field is the key of the
/// same name, described in [`StatsLine::entries`] (one description, where
/// the line and the metrics read it). `active` and `pending_out` are not
/// here: they are states, not counts; the loop knows them and passes them
/// in.
#[allow(
    missing_docs,
    reason = "each field is described once, in StatsLine::entries"
)]
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub rejected_busy: u64,
    pub accept_emfile: u64,
    pub peak: u64,
    pub lines: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub wakeups: u64,
    pub events: u64,
    pub reads: u64,
    pub writes: u64,
    pub wouldblock: u64,
    pub paused: u64,
    pub yields: u64,
    pub idle_closed: u64,
    pub rejected_per_ip: u64,
    pub failed: u64,
    pub output_closed: u64,
    pub rejected_untrusted: u64,
}

impl Stats {
    /// The `stats:` log line's text, with the number of clients served now
    /// and the bytes of answers waiting in the server now.
    pub fn line(&self, active: usize, pending_out: usize) -> StatsLine<'_> {
        StatsLine {
            stats: self,
            active,
            pending_out,
        }
    }

    /// The entries of kind [`Kind::Count`], in the line's order: what
    /// `--metrics` exports as `randline_KEY_total`.
    pub fn counts(&self) -> impl Iterator<Item = Entry> {
        self.line(0, 0)
            .entries()
            .into_iter()
            .filter(|e| e.kind == Kind::Count)
    }
}

/// [`Stats`] with `active` and `pending_out`, ready to print.
pub struct StatsLine<'a> {
    stats: &'a Stats,
    active: usize,
    pending_out: usize,
}

/// One `key=value` of the `stats:` line, with what it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The key, as printed.
    pub key: &'static str,
    /// What it counts, exactly: one line of plain text (`--metrics`
    /// serves it as the HELP line).
    pub help: &'static str,
    /// A count or a level.
    pub kind: Kind,
    /// The value now.
    pub value: u64,
}

/// What sort of number an [`Entry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Events (or bytes) counted since start; it only grows. `--metrics`
    /// exports it as `randline_KEY_total`.
    Count,
    /// How things stand now, or the most they ever stood at. `--metrics`
    /// exports it among its gauges, under a name of its own.
    Level,
}

const fn count(key: &'static str, value: u64, help: &'static str) -> Entry {
    Entry {
        key,
        help,
        kind: Kind::Count,
        value,
    }
}

const fn level(key: &'static str, value: u64, help: &'static str) -> Entry {
    Entry {
        key,
        help,
        kind: Kind::Level,
        value,
    }
}

impl StatsLine<'_> {
    /// The line's keys, in the line's order, each with what it counts and
    /// its value: the one list of them. A new key goes at the end.
    pub fn entries(&self) -> [Entry; 21] {
        let s = self.stats;
        [
            count(
                "accepted",
                s.accepted,
                "Connections accept returned (served or turned away).",
            ),
            count(
                "rejected_busy",
                s.rejected_busy,
                "Connections turned away with ERR server busy (over --max-connections).",
            ),
            count(
                "accept_emfile",
                s.accept_emfile,
                "accept calls refused for want of a descriptor (the client waits in the backlog).",
            ),
            level(
                "active",
                self.active as u64,
                "Clients being served now (not closing, not rejected).",
            ),
            level(
                "peak",
                s.peak,
                "The most clients ever served at once (active at its highest).",
            ),
            count("lines", s.lines, "Lines answered with a number."),
            count(
                "bytes_in",
                s.bytes_in,
                "Bytes read from clients, discarded input included.",
            ),
            count(
                "bytes_out",
                s.bytes_out,
                "Bytes written to clients, ERR lines included.",
            ),
            count("wakeups", s.wakeups, "Returns from epoll_wait."),
            count(
                "events",
                s.events,
                "Readiness events those returns carried.",
            ),
            count("reads", s.reads, "read calls on client sockets."),
            count("writes", s.writes, "write calls on client sockets."),
            count(
                "wouldblock",
                s.wouldblock,
                "Client reads and writes that said WouldBlock.",
            ),
            count(
                "paused",
                s.paused,
                "Times a client was not read because its answers backed up.",
            ),
            count(
                "yields",
                s.yields,
                "Times a client used up its read budget and waited for the next turn.",
            ),
            count(
                "idle_closed",
                s.idle_closed,
                "Clients closed by --idle-timeout.",
            ),
            count(
                "rejected_per_ip",
                s.rejected_per_ip,
                "Connections turned away by --max-connections-per-ip.",
            ),
            count(
                "failed",
                s.failed,
                "Connections ended by a socket error: a reset, a broken pipe, a dead peer \
                 (keepalive, TCP_USER_TIMEOUT).",
            ),
            count(
                "output_closed",
                s.output_closed,
                "Clients closed by --output-timeout (answers backed up, none taken).",
            ),
            count(
                "rejected_untrusted",
                s.rejected_untrusted,
                "Connections closed unanswered: not from a --proxy-from network.",
            ),
            level(
                "pending_out",
                self.pending_out as u64,
                "Bytes of answers waiting in the server for slow clients now \
                 (the --output-budget total).",
            ),
        ]
    }
}

impl fmt::Display for StatsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stats:")?;
        for e in self.entries() {
            write!(f, " {}={}", e.key, e.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_the_entries_as_key_value_pairs_in_order() {
        let s = Stats {
            accepted: 3,
            lines: 7,
            ..Stats::default()
        };
        let line = s.line(2, 5);
        let text = line.to_string();
        let pairs: Vec<String> = line
            .entries()
            .iter()
            .map(|e| format!("{}={}", e.key, e.value))
            .collect();
        assert_eq!(text, format!("stats: {}", pairs.join(" ")));
        assert!(text.starts_with("stats: accepted=3 rejected_busy=0 accept_emfile=0 active=2 "));
        assert!(text.ends_with(" pending_out=5"));
    }

    /// Not a second list of the keys: the order scripts already parse,
    /// frozen. Keys may be added after it, never moved within it.
    #[test]
    fn the_released_keys_keep_their_order() {
        let released = "stats: accepted=0 rejected_busy=0 accept_emfile=0 active=0 peak=0 \
                        lines=0 bytes_in=0 bytes_out=0 wakeups=0 events=0 reads=0 writes=0 \
                        wouldblock=0 paused=0 yields=0 idle_closed=0 rejected_per_ip=0 \
                        failed=0 output_closed=0 rejected_untrusted=0 pending_out=0";
        let text = Stats::default().line(0, 0).to_string();
        assert!(
            text == released || text.starts_with(&format!("{released} ")),
            "{text}"
        );
    }

    #[test]
    fn every_entry_can_be_printed_and_served_as_it_is() {
        let entries = Stats::default().line(0, 0).entries();
        for (i, e) in entries.iter().enumerate() {
            // A key splits on spaces and `=`, and is a Prometheus name.
            assert!(
                !e.key.is_empty() && e.key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{e:?}"
            );
            assert!(entries[..i].iter().all(|o| o.key != e.key), "{e:?} twice");
            // A HELP line: one line, nothing to escape.
            assert!(
                !e.help.is_empty() && !e.help.contains(['\n', '\\']),
                "{e:?}"
            );
        }
    }

    #[test]
    fn every_field_is_in_the_line() {
        // Each field set to a value of its own: all must appear.
        let s = Stats {
            accepted: 1,
            rejected_busy: 2,
            accept_emfile: 3,
            peak: 4,
            lines: 5,
            bytes_in: 6,
            bytes_out: 7,
            wakeups: 8,
            events: 9,
            reads: 10,
            writes: 11,
            wouldblock: 12,
            paused: 13,
            yields: 14,
            idle_closed: 15,
            rejected_per_ip: 16,
            failed: 17,
            output_closed: 18,
            rejected_untrusted: 19,
        };
        let mut values: Vec<u64> = s.line(100, 200).entries().iter().map(|e| e.value).collect();
        values.sort_unstable();
        let expected: Vec<u64> = (1..=19).chain([100, 200]).collect();
        assert_eq!(values, expected);
    }
}
