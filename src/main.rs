//! The `randline` binary: parse, log, raise the fd limit, read the memory
//! it may use, bind, run.
//! Exit codes: 0 after a clean shutdown (or --help/--version), 1 when the
//! server cannot start or run, 2 for a bad command line.

#![forbid(unsafe_code)]

use randline::server::Server;
use randline::{activation, config, logging, sys};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Sockets from systemd first (while this is the only thread): with
    // them, the command line need not name anything to listen on.
    let inherited = match activation::take_listeners() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("randline: cannot use the sockets systemd passed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cfg = match config::from_args_or_exit_code("randline", !inherited.is_empty()) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    logging::init(logging::choose(cfg.log_format));
    let fd_limit = match sys::raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("randline: cannot read the open-file limit: {e}");
            return ExitCode::FAILURE;
        }
    };

    // The defaults are sized to it (src/limits.rs); unknown off Linux.
    let memory = sys::memory_limit();

    let server = match Server::bind(&cfg, fd_limit, memory, inherited) {
        Ok(s) => s,
        // On stderr whatever RUST_LOG says: an operator must see why.
        Err(e) => {
            eprintln!("randline: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
