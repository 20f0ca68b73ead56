//! What the loop has done so far, counted: plain integers, bumped in place.
//!
//! One thread owns them, so there are no atomics and no locks: a counter
//! costs one add on a cache line the loop touches anyway. The loop prints
//! them as one `stats:` line at shutdown, every `--stats-interval`, and on
//! SIGUSR1 (see [`crate::server`]). What each one counts, exactly:
//!
//! | key | counts |
//! |---|---|
//! | `accepted` | connections `accept` returned (served or turned away) |
//! | `rejected_busy` | of those, turned away with `ERR server busy` |
//! | `accept_emfile` | `accept` calls refused for want of a descriptor (the client waits in the backlog) |
//! | `active` | clients being served now (not closing, not rejected) |
//! | `peak` | the most `active` ever was |
//! | `lines` | lines answered with a number |
//! | `bytes_in` / `bytes_out` | bytes read from / written to clients, errors and discarded input included |
//! | `wakeups` | returns from `epoll_wait` |
//! | `events` | readiness events those returns carried |
//! | `reads` / `writes` | `read`/`write` calls on client sockets |
//! | `wouldblock` | of those, the ones that said `WouldBlock` |
//! | `paused` | times a client was not read because its answers backed up |
//! | `yields` | times a client used up its read budget and waited for the next turn |
//! | `idle_closed` | clients closed by `--idle-timeout` |
//! | `rejected_per_ip` | connections turned away by `--max-connections-per-ip` |
//! | `failed` | connections ended by a socket error: a reset, a broken pipe, a dead peer (keepalive, `TCP_USER_TIMEOUT`) |
//! | `output_closed` | clients closed by `--output-timeout` (answers backed up, none taken) |
//! | `rejected_untrusted` | connections closed unanswered: not from a `--proxy-from` network |
//! | `pending_out` | bytes of answers waiting in the server for slow clients now (the `--output-budget` total) |
//!
//! The format is `stats: key=value key=value ...`, in the order above, so a
//! script can split it on spaces and `=`; keys are only ever added at the end.

use std::fmt;

/// The counters. `active` and `pending_out` are not here: they are states,
/// not counts; the loop knows them and passes them in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    /// See the table in the module docs.
    pub accepted: u64,
    /// See the module docs.
    pub rejected_busy: u64,
    /// See the module docs.
    pub accept_emfile: u64,
    /// See the module docs.
    pub peak: u64,
    /// See the module docs.
    pub lines: u64,
    /// See the module docs.
    pub bytes_in: u64,
    /// See the module docs.
    pub bytes_out: u64,
    /// See the module docs.
    pub wakeups: u64,
    /// See the module docs.
    pub events: u64,
    /// See the module docs.
    pub reads: u64,
    /// See the module docs.
    pub writes: u64,
    /// See the module docs.
    pub wouldblock: u64,
    /// See the module docs.
    pub paused: u64,
    /// See the module docs.
    pub yields: u64,
    /// See the module docs.
    pub idle_closed: u64,
    /// See the module docs.
    pub rejected_per_ip: u64,
    /// See the module docs.
    pub failed: u64,
    /// See the module docs.
    pub output_closed: u64,
    /// See the module docs.
    pub rejected_untrusted: u64,
}

impl Stats {
    /// The `stats:` log line's text, with the number of clients served now.
    pub fn line(&self, active: usize, pending_out: usize) -> StatsLine<'_> {
        StatsLine {
            stats: self,
            active,
            pending_out,
        }
    }
}

/// [`Stats`] with `active` and `pending_out`, ready to print.
pub struct StatsLine<'a> {
    stats: &'a Stats,
    active: usize,
    pending_out: usize,
}

impl fmt::Display for StatsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        write!(
            f,
            "stats: accepted={} rejected_busy={} accept_emfile={} active={} peak={} \
             lines={} bytes_in={} bytes_out={} wakeups={} events={} reads={} writes={} \
             wouldblock={} paused={} yields={} idle_closed={} rejected_per_ip={} failed={} \
             output_closed={} rejected_untrusted={} pending_out={}",
            s.accepted,
            s.rejected_busy,
            s.accept_emfile,
            self.active,
            s.peak,
            s.lines,
            s.bytes_in,
            s.bytes_out,
            s.wakeups,
            s.events,
            s.reads,
            s.writes,
            s.wouldblock,
            s.paused,
            s.yields,
            s.idle_closed,
            s.rejected_per_ip,
            s.failed,
            s.output_closed,
            s.rejected_untrusted,
            self.pending_out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_key_value_pairs_in_the_documented_order() {
        let s = Stats {
            accepted: 3,
            lines: 7,
            ..Stats::default()
        };
        let text = s.line(2, 0).to_string();
        assert!(text.starts_with("stats: accepted=3 rejected_busy=0 accept_emfile=0 active=2 "));
        let keys: Vec<&str> = text["stats: ".len()..]
            .split(' ')
            .map(|kv| kv.split_once('=').map_or("", |(k, _)| k))
            .collect();
        // The same keys, in the same order, as the table in the module docs.
        let doc_order = "accepted rejected_busy accept_emfile active peak lines bytes_in \
                         bytes_out wakeups events reads writes wouldblock paused yields idle_closed \
                         rejected_per_ip failed output_closed rejected_untrusted pending_out";
        assert_eq!(keys.join(" "), doc_order);
    }
}
