//! Keeps docs/learn.md (the way in for newcomers) true:
//! - the `stats:` table lists exactly the keys a live server prints, in
//!   its order, each with the words of `StatsLine::entries`;
//! - every relative link points to a file, and every anchor to a heading;
//! - every glossary term is defined once, the terms a newcomer meets are
//!   all there, and every entry points at code that exists;
//! - the picture (docs/primer.svg) is well-formed, small, on white;
//! - every command block is run here (or by the test it names), or says
//!   why not; the ones run here print what the page shows.
//!
//! Every wait is bounded: the server and clients through `common`, and
//! each program this file runs through `run_cmd_within`.

mod common;

use common::{Client, Server, run_cmd_within};
use randline::stats::Stats;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The terms the other pages use before (or without) defining them: each
/// must be a glossary heading, or one of its names in parentheses.
const TERMS: &[&str] = &[
    "accept queue",
    "accept retry",
    "again-list",
    "answer buffer",
    "backlog",
    "backpressure",
    "budget",
    "completion-based I/O",
    "deadline",
    "deferred free",
    "deregister",
    "drain",
    "drive",
    "edge",
    "edge-triggered",
    "EINTR",
    "EMFILE",
    "epoll",
    "event",
    "FIN",
    "framer",
    "half-close",
    "interest",
    "latch",
    "level-triggered",
    "lingering close",
    "mio",
    "non-blocking socket",
    "one-shot",
    "out",
    "output budget",
    "phase",
    "ping-pong",
    "pipelining",
    "PROXY protocol",
    "read batch",
    "read-closed, write-closed",
    "readiness",
    "ready list",
    "receive queue",
    "reset",
    "send queue",
    "settle",
    "short read",
    "shutdown",
    "SIGPIPE",
    "signal pipe",
    "slab",
    "slot",
    "spurious event",
    "stale event",
    "stats line",
    "TCP_NODELAY",
    "thread per client",
    "timer heap",
    "token",
    "turn",
    "urgent data",
    "wake-up",
    "WouldBlock",
];

/// Types the page names that are not this crate's (`Interest::READABLE`,
/// `ErrorKind::WouldBlock`...): their items are not looked up here.
const FOREIGN_TYPES: &[&str] = &[
    "Interest",
    "ErrorKind",
    "Token",
    "Poll",
    "Events",
    "Registry",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn page() -> String {
    read("docs/learn.md")
}

/// The page with fenced code blocks blanked out (links and headings in
/// them are not links and headings).
fn prose(doc: &str) -> String {
    let mut fenced = false;
    doc.lines()
        .map(|l| {
            if l.starts_with("```") {
                fenced = !fenced;
                ""
            } else if fenced {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text of the section `## title`, up to the next `## ` heading.
fn section<'a>(doc: &'a str, title: &str) -> &'a str {
    let head = format!("\n## {title}\n");
    let start = doc
        .find(&head)
        .unwrap_or_else(|| panic!("no section {title:?}"))
        + head.len();
    let end = doc[start..].find("\n## ").map_or(doc.len(), |i| start + i);
    &doc[start..end]
}

/// The glossary: each `### ` heading with its text.
fn glossary(doc: &str) -> Vec<(String, String)> {
    section(doc, "Glossary")
        .split("\n### ")
        .skip(1)
        .map(|entry| {
            let (head, body) = entry.split_once('\n').unwrap_or((entry, ""));
            (head.trim().to_string(), body.trim().to_string())
        })
        .collect()
}

/// The names a heading defines: `a (b, c)` defines a, b and c. A term
/// with a comma of its own (`read-closed, write-closed`) is one name.
fn names(heading: &str) -> Vec<String> {
    match heading.split_once(" (") {
        Some((term, rest)) => {
            let aliases = rest.strip_suffix(')').expect("a closing parenthesis");
            std::iter::once(term.to_string())
                .chain(aliases.split(", ").map(str::to_string))
                .collect()
        }
        None => vec![heading.to_string()],
    }
}

/// Text between backticks.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// `Type::item` spans: (type, item).
fn paths(text: &str) -> Vec<(String, String)> {
    code_spans(text)
        .into_iter()
        .filter_map(|span| {
            let (ty, item) = span.split_once("::")?;
            let ident =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (ident(ty) && ident(item) && ty.starts_with(|c: char| c.is_ascii_uppercase()))
                .then(|| (ty.to_string(), item.to_string()))
        })
        .collect()
}

/// Every `.rs` file under src/ and examples/, with its text.
fn sources() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![PathBuf::from("src"), PathBuf::from("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root().join(&dir)).expect("read a source directory") {
            let path = dir.join(entry.expect("a directory entry").file_name());
            if root().join(&path).is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.to_string_lossy().into_owned();
                files.insert(rel.clone(), read(&rel));
            }
        }
    }
    files
}

/// The server's own files (src/), not the examples'.
fn server_files(sources: &BTreeMap<String, String>) -> Vec<&str> {
    sources
        .keys()
        .filter(|p| p.starts_with("src/"))
        .map(String::as_str)
        .collect()
}

/// The files that define `ty` (a struct, enum or trait, or an impl).
fn defining<'a>(sources: &'a BTreeMap<String, String>, ty: &str) -> Vec<&'a str> {
    let forms = [
        format!("struct {ty} "),
        format!("struct {ty}<"),
        format!("struct {ty}("),
        format!("enum {ty} "),
        format!("impl {ty} "),
        format!("impl<'_> {ty}"),
    ];
    sources
        .iter()
        .filter(|(_, text)| forms.iter().any(|f| text.contains(f.as_str())))
        .map(|(path, _)| path.as_str())
        .collect()
}

/// True when `text` declares `item`: a function, a field, a variant or a
/// constant.
fn declares(text: &str, item: &str) -> bool {
    let word = |i: usize| {
        let before = text[..i].chars().next_back();
        let after = text[i + item.len()..].chars().next();
        let boundary = |c: Option<char>| !c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        boundary(before) && boundary(after)
    };
    if item.starts_with(|c: char| c.is_ascii_lowercase()) {
        [
            format!("fn {item}("),
            format!("fn {item}<"),
            format!(" {item}: "),
        ]
        .iter()
        .any(|f| text.contains(f.as_str()))
    } else {
        text.match_indices(item).any(|(i, _)| word(i))
    }
}

/// Every `Type::item` in `text` names something that exists, in one of
/// `files` if any are given.
fn check_paths(text: &str, files: &[&str], sources: &BTreeMap<String, String>, what: &str) {
    for (ty, item) in paths(text) {
        if FOREIGN_TYPES.contains(&ty.as_str()) {
            continue;
        }
        let mut homes = defining(sources, &ty);
        assert!(
            !homes.is_empty(),
            "{what}: `{ty}::{item}`: no {ty} in src/ or examples/"
        );
        if !files.is_empty() {
            let all = homes.clone();
            homes.retain(|h| files.contains(h));
            assert!(
                !homes.is_empty(),
                "{what}: `{ty}::{item}`: {ty} is in {all:?}, not in the files named ({files:?})"
            );
        }
        assert!(
            homes.iter().any(|h| declares(&sources[*h], &item)),
            "{what}: `{ty}::{item}`: {homes:?} declare no {item}"
        );
    }
}

/// The `stats:` table: (key, what it counts, counted in).
fn stats_table(doc: &str) -> Vec<(String, String, String)> {
    section(doc, "The `stats:` keys")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let [key, help, counted] = <[&str; 3]>::try_from(cells)
                .unwrap_or_else(|c| panic!("not a row of three cells: {c:?}"));
            (
                key.trim_matches('`').to_string(),
                help.to_string(),
                counted.to_string(),
            )
        })
        .collect()
}

/// The keys of a `stats:` line, in order.
fn line_keys(line: &str) -> Vec<String> {
    let (_, pairs) = line.split_once("stats: ").expect("a stats line");
    pairs
        .split(' ')
        .map(|kv| kv.split_once('=').expect("key=value").0.to_string())
        .collect()
}

fn anchors(doc: &str) -> BTreeSet<String> {
    prose(doc)
        .lines()
        .filter_map(|l| {
            l.trim_start_matches('#')
                .strip_prefix(' ')
                .filter(|_| l.starts_with('#'))
        })
        .map(common::slug)
        .collect()
}

/// Fenced blocks: (info string, the line before the fence, lines).
fn blocks(doc: &str) -> Vec<(String, String, Vec<String>)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if let Some(info) = lines[i].strip_prefix("```") {
            let before = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map_or(String::new(), |l| l.to_string());
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with("```"))
                .map(|n| i + 1 + n)
                .expect("a closed code block");
            let body = lines[i + 1..end].iter().map(|l| l.to_string()).collect();
            out.push((info.to_string(), before, body));
            i = end + 1;
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_stats_table_is_the_live_line_with_its_own_words() {
    let server = Server::start(&[]);
    // The page's example: two lines, the client's FIN, both answers, EOF.
    let mut client = Client::connect(server.addr);
    client.send(b"one\ntwo\n");
    client.half_close();
    client.number();
    client.number();
    client.expect_eof();
    let live = server.stats();
    let line = server
        .log
        .text()
        .lines()
        .rev()
        .find(|l| l.contains("stats: "))
        .expect("the stats line just logged")
        .to_string();

    let doc = page();
    let table = stats_table(&doc);
    let keys: Vec<String> = table.iter().map(|(k, _, _)| k.clone()).collect();
    assert_eq!(
        keys,
        line_keys(&line),
        "docs/learn.md's stats table must list the live line's keys, in its order"
    );

    // Each meaning word for word from src/stats.rs.
    let words: BTreeMap<&str, &str> = Stats::default()
        .line(0, 0)
        .entries()
        .iter()
        .map(|e| (e.key, e.help))
        .collect();
    let sources = sources();
    for (key, help, counted) in &table {
        assert_eq!(
            Some(&help.as_str()),
            words.get(key.as_str()),
            "the meaning of `{key}` must be src/stats.rs's"
        );
        assert!(!paths(counted).is_empty(), "`{key}`: where is it counted?");
        check_paths(
            counted,
            &server_files(&sources),
            &sources,
            &format!("stats key {key}"),
        );
    }

    // The line the page shows: the same keys, and the values that do not
    // depend on timing are this run's.
    let shown = blocks(&doc)
        .into_iter()
        .flat_map(|(_, _, body)| body)
        .find(|l| l.starts_with("stats: "))
        .expect("a stats line shown on the page");
    assert_eq!(line_keys(&shown), keys, "the line shown: {shown}");
    let shown = common::parse_stats(&shown);
    for key in [
        "accepted",
        "active",
        "peak",
        "lines",
        "bytes_in",
        "reads",
        "writes",
        "wouldblock",
        "pending_out",
    ] {
        assert_eq!(
            shown[key], live[key],
            "`{key}`: the page shows {shown:?}, live {live:?}"
        );
    }
    assert!((4..=6).contains(&live["bytes_out"]), "{live:?}");
    for key in ["wakeups", "events"] {
        assert!(
            (3..=5).contains(&shown[key]),
            "the page says 3 to 5: {shown:?}"
        );
        // Live: at least the accept, the lines and the signal; the rest
        // (a lone first `writable`, a lone FIN) depends on timing.
        assert!(live[key] >= 3, "{live:?}");
    }
}

#[test]
fn every_relative_link_points_to_a_file_and_every_anchor_to_a_heading() {
    let doc = page();
    let text = prose(&doc);
    let mut checked = 0;
    for part in text.split("](").skip(1) {
        let target = &part[..part.find(')').expect("a link's closing parenthesis")];
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        // Relative to docs/; `#anchor` alone is this page.
        let path = root()
            .join("docs")
            .join(if file.is_empty() { "learn.md" } else { file });
        assert!(
            path.exists(),
            "docs/learn.md links to {target}: no such file"
        );
        if !anchor.is_empty() {
            assert!(
                file.is_empty() || file.ends_with(".md"),
                "{target}: an anchor into a file that is not Markdown"
            );
            let text = std::fs::read_to_string(&path).expect("read the linked page");
            assert!(
                anchors(&text).contains(anchor),
                "docs/learn.md links to {target}: no heading with that anchor"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} links found: is the parser right?"
    );
}

#[test]
fn every_term_is_defined_once_and_points_at_code_that_exists() {
    let doc = page();
    let entries = glossary(&doc);
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for (heading, _) in &entries {
        for name in names(heading) {
            if let Some(other) = defined.insert(name.to_lowercase(), heading.clone()) {
                panic!("{name:?} is defined twice: under {other:?} and {heading:?}");
            }
        }
    }
    for term in TERMS {
        assert!(
            defined.contains_key(&term.to_lowercase()),
            "the glossary does not define {term:?}"
        );
    }
    let headings: Vec<&str> = entries.iter().map(|(h, _)| h.as_str()).collect();
    let mut sorted = headings.clone();
    sorted.sort_by_key(|h| names(h)[0].to_lowercase());
    assert_eq!(headings, sorted, "the glossary is in alphabetical order");

    let sources = sources();
    for (heading, body) in &entries {
        // Definitions are short; the code pointer comes last.
        let (definition, code) = body
            .rsplit_once("Code:")
            .unwrap_or_else(|| panic!("{heading:?}: no \"Code:\" pointer"));
        let definition = definition.trim().replace('\n', " ");
        let sentences = definition.matches(". ").count() + 1;
        assert!(
            sentences <= 3,
            "{heading:?}: {sentences} sentences, keep it to 1 to 3"
        );
        let files: Vec<&str> = code_spans(code)
            .into_iter()
            .filter(|s| s.starts_with("src/") || s.starts_with("examples/"))
            .collect();
        assert!(
            !files.is_empty(),
            "{heading:?}: the code pointer names no file"
        );
        for file in &files {
            assert!(root().join(file).exists(), "{heading:?}: no file {file}");
        }
        check_paths(code, &files, &sources, heading);
    }
    // The rest of the page names the server's real code too (the
    // picture's steps).
    check_paths(
        &prose(&doc),
        &server_files(&sources),
        &sources,
        "docs/learn.md",
    );
}

#[test]
fn the_picture_is_well_formed_small_and_on_white() {
    let svg = read("docs/primer.svg");
    assert!(
        svg.len() < 15 * 1024,
        "docs/primer.svg is {} bytes",
        svg.len()
    );
    let svg = svg.trim();
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"));
    // Every tag closed, in order (comments skipped; attribute values hold
    // no `<` or `>`, which the XML they are also checked as forbids).
    let mut open: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").expect("a closed comment") + 3..];
            continue;
        }
        let end = rest.find('>').expect("a closed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop(),
                Some(name.trim()),
                "</{name}> closes the wrong tag"
            );
        } else if !tag.ends_with('/') {
            open.push(tag.split_whitespace().next().expect("a tag name"));
        }
    }
    assert!(open.is_empty(), "left open: {open:?}");
    // An explicit white background the size of the picture: readable in
    // dark themes too.
    let size = svg
        .split_once("viewBox=\"0 0 ")
        .and_then(|(_, r)| r.split_once('"'))
        .map(|(v, _)| v.replace(' ', "\" height=\""))
        .expect("a viewBox");
    let background = format!("<rect x=\"0\" y=\"0\" width=\"{size}\" fill=\"#ffffff\"/>");
    let first_rect = &svg[svg.find("<rect").expect("a rect")..];
    assert!(
        first_rect.starts_with(&background),
        "the first rect is not {background}"
    );
    // And the page shows it.
    assert!(page().contains("](primer.svg)"));
}

#[test]
fn every_command_is_run_by_a_test_or_says_why_not() {
    let doc = page();
    let mut shells = 0;
    for (info, before, body) in blocks(&doc) {
        if !matches!(info.as_str(), "sh" | "console" | "bash" | "shell") {
            continue;
        }
        shells += 1;
        let note = before
            .strip_prefix("<!-- ")
            .and_then(|n| n.strip_suffix(" -->"))
            .unwrap_or_else(|| panic!("no note on who runs this block:\n{}", body.join("\n")));
        if let Some(by) = note.strip_prefix("checked by ") {
            let file = by.split(':').next().expect("a test file");
            assert!(
                file.starts_with("tests/") && root().join(file).exists(),
                "{note}"
            );
        } else {
            assert!(
                note.starts_with("not run by a test: ") && note.len() > 30,
                "say which test runs it, or why none does: {note}"
            );
        }
    }
    assert!(shells > 0);
}

#[test]
fn the_epoll_modes_block_is_what_the_example_prints() {
    let doc = page();
    let (_, _, body) = blocks(&doc)
        .into_iter()
        .find(|(info, _, body)| info == "console" && body[0].contains("--example epoll_modes"))
        .expect("the epoll_modes block");
    let args: Vec<&str> = body[0]
        .split(" -- ")
        .nth(1)
        .expect("arguments after --")
        .split_whitespace()
        .collect();

    // `cargo run --example epoll_modes` without cargo's own output: build,
    // then run the binary (a filtered `cargo test` builds no examples).
    let bin = common::example("epoll_modes");
    let mut run = Command::new(bin);
    run.args(&args);
    let out = run_cmd_within(run, common::WAIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        printed,
        body[1..],
        "docs/learn.md shows other rows than the example prints"
    );
}
