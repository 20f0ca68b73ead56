//! randline: a TCP (and Unix socket) server that answers every line with a
//! random integer, on one thread, with one `mio::Poll`.
//!
//! # How to read this crate
//!
//! Start with [`server`]: its `run` is the whole event loop on one screen:
//! poll, accept, drive each ready client, fire deadlines, free closed slots.
//! After anything happens to a connection (an event, its turn on the
//! "again" list, a deadline, shutdown, accept), the loop takes one path:
//! `Server::drive` runs it, `Server::settle` acts on what it reports.
//! Then [`conn`], where one client's bytes are read, framed, answered and
//! written, and where the rules of edge-triggered I/O are stated next to
//! the code that obeys them: every read and write on a client socket is
//! made there.
//!
//! | file | holds | does not hold |
//! |---|---|---|
//! | [`server`] | the loop: polling, what each event's token stands for (decoded once), accepting on every listener (one helper, out-of-descriptor retry included), admitting (a pure decision, then the registration), the limits counted across clients (each count held by a slot's seat, given back in one place), when each connection runs, its timer entry, shutdown | per-byte work, client reads and writes, the metrics endpoint's connections |
//! | [`conn`] | one client: every read and write on its socket, framing and answering, its phases and the deadline each one holds | polling, the timer heap, the slab, counting or admitting clients (after a PROXY header it asks; the loop admits) |
//!
//! These do no I/O (but for the seed `numbers` asks the system for once);
//! each is tested on its own:
//!
//! | file | holds | does not hold |
//! |---|---|---|
//! | [`config`] | the command line, checked and typed | anything that binds or logs |
//! | [`limits`] | how many clients, lingering rejections and clients per address, and the output budget, from the command line, the open-file limit and the memory the process may use (the stated worst case, with each cost measured) | reading those limits, counting clients against them |
//! | [`timers`] | the deadline heap: one current entry per connection, rebuilt when mostly stale | what a deadline means |
//! | [`answers`] | the shared answer buffer, lent per drive and always returned empty | what goes in it |
//! | [`line`](mod@line) | the line framer (tested on every split) | sockets |
//! | [`proxy`] | the PROXY protocol header parser (tested on every split) | sockets |
//! | [`numbers`] | the random number source and its text form (ChaCha12, or `--seed`) | framing |
//! | [`per_ip`] | connections per client address (`--max-connections-per-ip`) | whom to admit, which connection holds a count |
//! | [`stats`] | the loop's counters, their keys listed once, and the `stats:` line | when they are logged |
//!
//! These do I/O of their own, each of one kind:
//!
//! | file | does | does not |
//! |---|---|---|
//! | [`net`] | TCP/Unix listeners and client streams behind one type each; every system call on a listener, the metrics one included (bind, listen, accept, socket options, the Unix socket's file) | decide when a client is read or written |
//! | [`metrics`] | `--metrics`: the endpoint behind a few calls the loop makes (`Endpoint`: bind, admit, ready, deadline, expire, close_all); reads and answers its scrapes (a minimal HTTP/1.x, the Prometheus text format), the oldest yielding to a newcomer when all are taken; reads `/proc/self/status` per answered scrape (resident memory), and `/proc/self/fd` once at start | accept, or poll |
//! | [`activation`] | takes the sockets systemd passed (`LISTEN_FDS`) and checks that each is a listening stream socket | bind |
//! | [`sys`] | raises the open-file limit (`setrlimit`); reads the memory the process may use (its cgroup's limit, v1 or v2, else the host's `MemTotal`; Linux only), its parsers tested on fixtures | decide what the memory allows |
//! | [`logging`] | writes each log line to stderr, as text or for journald | decide what is logged |
//!
//! `src/main.rs` only wires them: parse, log, raise the fd limit, read the
//! memory limit, bind, run, and map the outcome to an exit code (0 ok,
//! 1 runtime failure, 2 usage).
//! docs/architecture.md draws the loop and a connection's life; docs/tour.md
//! reads real traces (`RUST_LOG=randline=trace`) against this code, one
//! function at a time; docs/experiments.md has labs to run.

#![forbid(unsafe_code)]

pub mod activation;
pub mod answers;
pub mod config;
pub mod conn;
pub mod limits;
pub mod line;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod numbers;
pub mod per_ip;
pub mod proxy;
pub mod server;
pub mod stats;
pub mod sys;
pub mod timers;
