//! Fuzz target `cli_args`: `Config::parse_with` (src/config.rs), the
//! command line, whose every error is printed to the operator as one line
//! naming the bad value (`randline: <error>`, exit 2). Arguments are
//! whatever a shell, a unit file or a script passes: any bytes, not only
//! UTF-8.
//!
//! Input: `[flags, arg, 0, arg, 0, ...]`: the arguments (after the program
//! name) as `OsString`s split at NUL bytes, which no real argument holds;
//! `flags & 1` is `sockets_passed` (systemd socket activation). Checked:
//!
//! - it never panics, and parsing the same arguments twice gives the same;
//! - an `Invalid` error's message is non-empty and exactly one line, whatever
//!   the arguments hold: no `\n`, no `\r`, no other control character and
//!   no Unicode line or paragraph separator (src/config.rs escapes the
//!   values it quotes); `NoListener` prints exactly [`USAGE`], and only
//!   without `sockets_passed`;
//! - a config it serves is one the server can run: something to listen on
//!   (or passed sockets), `min <= max`, no zero limit left as `Some(0)`,
//!   timeouts within a century, a keepalive the kernel takes.
//!
//! `--listen HOST:PORT` with a host name is resolved (getaddrinfo, so DNS):
//! slow, and not this parser's business. Inputs that could reach it are
//! skipped; see [`may_resolve`].
#![no_main]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use randline::config::{CliError, Command, Config, USAGE};

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// True if some value given to `--listen` could get past `SocketAddr`
/// parsing to name resolution. lexopt hands `--listen`/`-l` a value that is
/// a whole argument (`-l V`, `--listen V`), or an argument less `--listen=`,
/// `-l` or `-l=` (`-l` cannot follow another short option: `-h` and `-V`
/// return at once, and any other letter is an error first). Over-reports:
/// any all-digit port and any non-empty host count.
fn may_resolve(arg: &OsString) -> bool {
    let bytes = arg.as_bytes();
    let candidates = [
        Some(bytes),
        bytes.strip_prefix(b"--listen="),
        bytes.strip_prefix(b"-l"),
        bytes.strip_prefix(b"-l="),
    ];
    candidates.into_iter().flatten().any(|v| {
        let Ok(v) = std::str::from_utf8(v) else {
            return false; // refused as not UTF-8 first
        };
        let Some((host, port)) = v.rsplit_once(':') else {
            return false;
        };
        v.parse::<SocketAddr>().is_err()
            && !host.is_empty()
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
    })
}

fn check_served(cfg: &Config, sockets_passed: bool) {
    assert!(
        !cfg.listen.is_empty() || !cfg.unix.is_empty() || sockets_passed,
        "nothing to listen on: {cfg:?}"
    );
    assert!(cfg.min <= cfg.max, "{cfg:?}");
    assert!(
        cfg.unix.iter().all(|p| !p.as_os_str().is_empty()),
        "{cfg:?}"
    );
    assert_ne!(cfg.max_connections, Some(0));
    assert_ne!(cfg.max_line, Some(0));
    // The kernel's TCP_KEEPIDLE takes at most 32767 s.
    assert!(
        cfg.tcp_keepalive
            .is_none_or(|d| !d.is_zero() && d <= Duration::from_secs(32767)),
        "{cfg:?}"
    );
    for d in [cfg.idle_timeout, cfg.stats_interval, cfg.output_timeout] {
        assert!(d.is_none_or(|d| !d.is_zero() && d <= CENTURY), "{cfg:?}");
    }
    assert!(cfg.shutdown_timeout <= CENTURY, "{cfg:?}");
}

fuzz_target!(|data: &[u8]| {
    let [flags, rest @ ..] = data else {
        return;
    };
    let sockets_passed = flags & 1 == 1;
    let args: Vec<OsString> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split(|&b| b == 0)
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect()
    };
    if args.iter().any(may_resolve) {
        return;
    }

    let result = Config::parse_with(args.clone(), sockets_passed);
    let again = Config::parse_with(args.clone(), sockets_passed);
    assert_eq!(format!("{result:?}"), format!("{again:?}"));

    match result {
        Ok(Command::Serve(cfg)) => check_served(&cfg, sockets_passed),
        Ok(Command::Help | Command::Version) => {}
        Err(e @ CliError::NoListener) => {
            assert!(!sockets_passed, "no listener, yet sockets were passed");
            assert_eq!(e.to_string(), USAGE);
        }
        Err(e @ CliError::Invalid(_)) => {
            let msg = e.to_string();
            assert!(!msg.is_empty(), "empty message for {args:?}");
            assert!(
                !msg.contains(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')),
                "message not on one line for {args:?}: {msg:?}"
            );
        }
    }
});
