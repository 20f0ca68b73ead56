//! docs/under-the-hood.md stays true:
//! - its table of epoll modes is the live output of examples/epoll_modes.rs
//!   (every count exact, but the level-triggered wake-ups of the paused
//!   reader, which only has to be a spin);
//! - the registrations it quotes from `strace` have the flags and tokens of
//!   a live trace of the server, and the answer is sent with
//!   `MSG_NOSIGNAL` (skipped with a note if strace is not installed);
//! - what it says of regular files holds (`poll` reports them ready at
//!   once, `epoll_ctl` refuses them with `EPERM`);
//! - every relative link and every `#anchor` resolves, and the diagram is
//!   a small, well-formed SVG on a white background.

mod common;

use common::{Server, WAIT, have, run_cmd_within};
use rustix::process::{Pid, Signal, kill_process};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PAGE: &str = include_str!("../docs/under-the-hood.md");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `epoll_modes all` takes well under a second; this is for a busy machine.
const EXAMPLE_LIMIT: Duration = Duration::from_secs(60);

/// The lines after `<!-- MARKER -->` on the page, up to the first blank
/// line after the block starts (a fenced block's fences are kept).
fn block(marker: &str) -> Vec<&'static str> {
    let tag = format!("<!-- {marker} -->");
    let start = PAGE
        .find(&tag)
        .unwrap_or_else(|| panic!("docs/under-the-hood.md has no {tag}"));
    PAGE[start + tag.len()..]
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// A Markdown table row's cells, trimmed.
fn cells(row: &str) -> Vec<String> {
    row.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn the_epoll_modes_table_is_the_live_output() {
    let quoted = block("epoll_modes all");
    let mut cmd = Command::new(common::example("epoll_modes"));
    cmd.arg("all");
    let out = run_cmd_within(cmd, EXAMPLE_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "epoll_modes all failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let live: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        quoted.len(),
        live.len(),
        "the page quotes {} lines, the example prints {}:\n{stdout}",
        quoted.len(),
        live.len()
    );
    let mut spins = 0;
    for (q, l) in quoted.iter().zip(&live) {
        let (q, l) = (cells(q), cells(l));
        assert_eq!(q.len(), l.len(), "{q:?} vs {l:?}");
        for (i, (qc, lc)) in q.iter().zip(&l).enumerate() {
            // The one count that is not exact: a level-triggered loop's
            // wake-ups in 100 ms, for a socket it will not read. Both the
            // page's and the live one must be a spin.
            if q[0] == "paused" && q[1].starts_with("wake-ups") && i == 2 {
                for n in [qc, lc] {
                    let n: u64 = n.parse().unwrap_or_else(|_| panic!("not a count: {n:?}"));
                    assert!(n > 100, "LT woke only {n} times in 100 ms");
                }
                spins += 1;
                continue;
            }
            assert_eq!(qc, lc, "page row {q:?}, live row {l:?}");
        }
    }
    assert_eq!(spins, 1, "the paused reader's LT row is missing");
}

/// One `EPOLL_CTL_ADD` of a trace: (its token, the set of its flags).
fn registrations<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(u64, BTreeSet<String>)> {
    lines
        .into_iter()
        .filter(|l| l.contains("epoll_ctl(") && l.contains("EPOLL_CTL_ADD"))
        .map(|l| {
            let events = l
                .split_once("events=")
                .and_then(|(_, r)| r.split_once(", data="))
                .unwrap_or_else(|| panic!("no events in {l:?}"))
                .0;
            let token = l
                .split_once("u64=")
                .and_then(|(_, r)| r.split_once('}'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("no u64 token in {l:?}"));
            (token, events.split('|').map(str::to_string).collect())
        })
        .collect()
}

/// The parent of process `pid`, from /proc (`None` if it is gone).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name (in parentheses): the state, then the parent.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Kills a process (by id) when dropped, unless it is known gone.
struct KillOnDrop(Option<Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill_process(pid, Signal::KILL);
        }
    }
}

#[test]
fn the_quoted_registrations_match_a_live_trace() {
    if !have("strace", "strace") {
        return;
    }
    let quoted = block("strace randline");
    let page = registrations(quoted.iter().copied());
    assert!(page.len() >= 3, "the page quotes too few registrations");

    let trace = std::env::temp_dir().join(format!("randline-uth-{}.strace", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    let mut cmd = Command::new("strace");
    cmd.arg("-f")
        .arg("-o")
        .arg(&trace)
        .args(["-e", "trace=epoll_ctl,epoll_wait,accept4,recvfrom,sendto"])
        .arg(common::bin())
        .args(["--listen", "127.0.0.1:0"]);
    // strace's stderr is the server's: this waits for `listening on`.
    let mut strace = Server::spawn(cmd);
    let strace_pid = strace.pid();
    // The server is strace's child.
    let server_pid = common::eventually("the server under strace", WAIT, || {
        std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .find(|&pid| parent(pid) == Some(strace_pid))
    });
    let mut guard = KillOnDrop(Pid::from_raw(server_pid as i32));

    let mut client = strace.connect();
    client.ask("hello");
    client.send(b"STOP\n");
    client.expect_eof();
    drop(client);
    // A graceful end: the server exits, and strace with it, having
    // written every line.
    kill_process(guard.0.expect("pid"), Signal::TERM).expect("SIGTERM the server");
    let status = strace.wait_exit();
    guard.0 = None;
    assert!(
        status.success(),
        "strace (or the server) failed: {status:?}"
    );
    let text = std::fs::read_to_string(&trace).expect("read the trace");
    let _ = std::fs::remove_file(&trace);

    let live = registrations(text.lines());
    for (token, flags) in &page {
        let found = live
            .iter()
            .find(|(t, _)| t == token)
            .unwrap_or_else(|| panic!("no live registration of token {token}:\n{text}"));
        assert_eq!(&found.1, flags, "token {token}'s flags:\n{text}");
    }
    // The client, token 0: once, for everything, edge-triggered.
    let client: BTreeSet<String> = ["EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLRDHUP", "EPOLLET"]
        .map(String::from)
        .into();
    assert!(
        page.iter().any(|(t, f)| *t == 0 && *f == client),
        "the page's client registration is not {client:?}"
    );
    // Reads and writes as the page shows them.
    for (call, needle) in [("recvfrom(", "\"hello\\n\""), ("sendto(", "MSG_NOSIGNAL")] {
        for (what, lines) in [("page", quoted.join("\n")), ("live trace", text.clone())] {
            assert!(
                lines
                    .lines()
                    .any(|l| l.contains(call) && l.contains(needle)),
                "no {call}...{needle}... in the {what}:\n{lines}"
            );
        }
    }
}

#[test]
fn regular_files_are_always_ready_and_epoll_refuses_them() {
    use rustix::event::{PollFd, PollFlags, Timespec, epoll, poll};
    let file = std::fs::File::open(Path::new(ROOT).join("Cargo.toml")).expect("open a file");
    let mut fds = [PollFd::new(&file, PollFlags::IN | PollFlags::OUT)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(poll(&mut fds, Some(&zero)).expect("poll"), 1);
    assert!(
        fds[0].revents().contains(PollFlags::IN | PollFlags::OUT),
        "{:?}",
        fds[0].revents()
    );
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create");
    let err = epoll::add(
        &ep,
        &file,
        epoll::EventData::new_u64(0),
        epoll::EventFlags::IN | epoll::EventFlags::ET,
    )
    .expect_err("epoll_ctl accepted a regular file");
    assert_eq!(err, rustix::io::Errno::PERM);
}

#[test]
fn every_relative_link_resolves() {
    let docs = Path::new(ROOT).join("docs");
    let mut in_fence = false;
    let anchors: BTreeSet<String> = PAGE
        .lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_fence = !in_fence;
            }
            !in_fence
        })
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("### ")))
        .map(common::slug)
        .collect();
    let mut checked = 0;
    for (i, _) in PAGE.match_indices("](") {
        let rest = &PAGE[i + 2..];
        let target = &rest[..rest.find(')').expect("a closed link")];
        if target.starts_with("http://") || target.starts_with("https://") {
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
        if path.is_empty() {
            assert!(
                anchors.contains(anchor),
                "no heading for #{anchor}: {anchors:?}"
            );
        } else {
            assert!(docs.join(path).exists(), "broken link: {target}");
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} links found: is the parser wrong?"
    );
}

#[test]
fn the_diagram_is_a_small_well_formed_svg() {
    let path = Path::new(ROOT).join("docs/kernel-path.svg");
    let svg = std::fs::read_to_string(&path).expect("read docs/kernel-path.svg");
    assert!(svg.len() < 15_000, "{} bytes", svg.len());
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("fill=\"white\""), "no white background");
    assert!(
        PAGE.contains("](kernel-path.svg)"),
        "the page does not show it"
    );
    // Every tag closed, in order (no comments with tags in them, no CDATA).
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg.as_str();
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").expect("an unclosed comment");
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>').expect("an unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        let name = |t: &str| {
            t.split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        if let Some(closing) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(closing),
                "mismatched </{closing}>"
            );
        } else if !tag.ends_with('/') {
            open.push(name(tag));
        }
    }
    assert!(open.is_empty(), "unclosed: {open:?}");
    // Every `&` starts an entity.
    for (i, _) in svg.match_indices('&') {
        let entity = &svg[i..svg[i..].find(';').map_or(svg.len(), |e| i + e + 1)];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
            "a bare & at {i}"
        );
    }
}
