//! randline: a TCP (and Unix socket) server that answers every line with a
//! random integer, on one thread, with one `mio::Poll`.
//!
//! # How to read this crate
//!
//! Start with [`server`]: its `run` is the whole event loop on one screen:
//! poll, accept, drive each ready client, fire deadlines, free closed slots.
//! Then [`conn`], where one client's bytes are read, framed, answered and
//! written, and where the rules of edge-triggered I/O are stated next to
//! the code that obeys them. The rest are leaves with no I/O of their own:
//!
//! | file | holds | does not hold |
//! |---|---|---|
//! | [`config`] | the command line, checked and typed | anything that binds or logs |
//! | [`server`] | the loop, accepting, deadlines, shutdown | per-byte work |
//! | [`conn`] | one client: read, answer, write, close phases | polling, timers |
//! | [`answers`] | the shared answer buffer, lent per drive and always returned empty | what goes in it |
//! | [`line`] | the line framer (pure, tested on every split) | sockets |
//! | [`numbers`] | the random number source and its text form | framing |
//! | [`net`] | TCP/Unix listeners and streams behind one type | policy |
//! | [`metrics`] | `--metrics`: the Prometheus text format, over a minimal HTTP/1.x | accepting, polling |
//! | [`per_ip`] | connections per client address (`--max-connections-per-ip`) | what to do past the limit |
//! | [`timers`] | the deadline heap (idle, closing) | what a deadline means |
//! | [`proxy`] | the PROXY protocol header parser (pure, tested on every split) | sockets |
//! | [`activation`] | sockets passed by systemd (`LISTEN_FDS`) | binding |
//! | [`stats`] | the loop's counters and their `stats:` line | when they are logged |
//! | [`sys`] | the open-file limit | |
//! | [`logging`] | the log line format | |
//!
//! `src/main.rs` only wires them: parse, log, raise the fd limit, bind, run,
//! and map the outcome to an exit code (0 ok, 1 runtime failure, 2 usage).
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
