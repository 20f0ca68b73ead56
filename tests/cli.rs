//! The command line: exit codes, one-line errors, help, bind failures.

mod common;

use common::{Server, bin, run_cmd};
use std::process::{Command, Output};

/// Runs randline with `args`, expecting it to exit by itself quickly.
fn run(args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    run_cmd(cmd)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_usage_error(args: &[&str], names: &str) {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line, got {err:?}"
    );
    assert!(
        err.contains(names),
        "{args:?}: {err:?} does not name {names:?}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_values_get_one_line_naming_them_and_exit_2() {
    assert_usage_error(&["12a"], "12a");
    assert_usage_error(&["-10"], "-10");
    assert_usage_error(&["70000"], "70000");
    assert_usage_error(&["--min", "5", "--max", "1"], "--min 5 --max 1");
    assert_usage_error(&["--no-such-flag", "8001"], "--no-such-flag");
    assert_usage_error(&["--seed", "-1", "8001"], "-1");
    assert_usage_error(
        &["--max", "99999999999999999999", "8001"],
        "99999999999999999999",
    );
    assert_usage_error(&["--max-line", "lots", "8001"], "lots");
    assert_usage_error(&["--idle-timeout", "1.5", "8001"], "1.5");
    assert_usage_error(&["--max-connections", "0", "8001"], "--max-connections");
    assert_usage_error(&["--listen", "127.0.0.1", "8001"], "127.0.0.1");
    assert_usage_error(&["--listen"], "--listen");
    assert_usage_error(&["8001", "8002"], "8002");
}

#[test]
fn a_value_holding_line_breaks_is_escaped_on_the_one_line() {
    // Unescaped, each of these would print a second, forged stderr line.
    for (args, shown) in [
        (
            &["--seed", "1\nrandline: injected", "8001"][..],
            r"'1\nrandline: injected'",
        ),
        (&["80\n81"], r"'80\n81'"),
        (&["--max-line", "1\r\nx", "8001"], r"'1\r\nx'"),
        (&["--log-format", "text\n", "8001"], r"'text\n'"),
        (&["--no-such\nflag", "8001"], r"'--no-such\nflag'"),
    ] {
        let out = run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.matches('\n').count(),
            1,
            "{args:?}: one line, got {err:?}"
        );
        assert!(
            err.ends_with('\n') && !err.contains('\r'),
            "{args:?}: {err:?}"
        );
        assert!(err.starts_with("randline: "), "{args:?}: {err:?}");
        assert!(err.contains(shown), "{args:?}: {err:?} lacks {shown}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn nothing_to_listen_on_prints_usage_and_exits_2() {
    for args in [&[][..], &["--seed", "1"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).starts_with("usage: randline"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn help_and_version_go_to_stdout_and_exit_0() {
    for flag in ["-h", "--help"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        for option in [
            "--listen",
            "--unix",
            "--seed",
            "--min",
            "--max-connections",
            "--max-line",
            "--idle-timeout",
            "--shutdown-timeout",
        ] {
            assert!(text.contains(option), "help lacks {option}");
        }
    }
    for flag in ["-V", "--version"] {
        let out = run(&[flag]);
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("randline "));
    }
}

#[test]
fn address_in_use_is_one_clear_line_and_exit_1() {
    let server = Server::start(&[]);
    let taken = server.addr.to_string();
    let out = run(&["--listen", &taken]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("cannot listen"))
        .collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&taken) && errors[0].contains("in use"),
        "{err}"
    );
}

#[test]
fn startup_errors_are_shown_even_with_logging_off() {
    let server = Server::start(&[]);
    let mut cmd = Command::new(bin());
    cmd.args(["--listen", &server.addr.to_string()])
        .env("RUST_LOG", "off");
    let out = run_cmd(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
}

#[test]
fn permission_denied_is_exit_1() {
    // A privileged port, unless the tests run as root (then bind works).
    let out = run(&[
        "--listen",
        "127.0.0.1:1",
        "--unix",
        "/proc/randline-cannot-be-here.sock",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot listen on"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn listening_line_shows_the_bound_port_and_the_limits() {
    let server = Server::start(&["--max-line", "100"]);
    assert_ne!(server.addr.port(), 0);
    let limits = server.log.wait_for("limits:");
    assert!(
        limits.contains("open files") && limits.contains("max line 100"),
        "{limits}"
    );
}
