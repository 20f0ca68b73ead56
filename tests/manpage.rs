//! The manual page, `docs/randline.1`, against the real binary: its OPTIONS
//! section describes exactly the options `randline --help` prints (names
//! and value names, in both directions), every randline option it names
//! anywhere exists, it has every section a reader looks for and the
//! crate's version, and `groff` renders it without a single warning.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

/// Options the man page may describe before the binary has them, while
/// another change adds them to `--help`: delete each name here once
/// `--help` prints it (the test then says so). Nothing else is tolerated.
/// Empty: `--metrics`, `--proxy-from` and `--unix-mode` were pending until
/// they landed (1f4dd07), before this test did.
const PENDING: &[&str] = &[];

const MAN_PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/randline.1");

/// Option name (`-l`, `--listen`) to its value name (`ADDR`), if any.
type Options = BTreeMap<String, Option<String>>;

fn man_page() -> String {
    std::fs::read_to_string(MAN_PAGE).expect("read docs/randline.1")
}

fn help() -> String {
    let mut cmd = Command::new(common::bin());
    cmd.arg("--help");
    let out = common::run_cmd(cmd);
    assert!(out.status.success(), "randline --help failed");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

/// A value name: `ADDR`, `N`, `SECS`, `CIDR`.
fn is_value_name(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// The options an option line defines: `-l, --listen ADDR  listen on ...`
/// gives `-l` and `--listen ADDR`. Reading stops at the first word that is
/// neither an option nor a value name (the description).
fn defined(spec: &str, into: &mut Options) {
    let mut last: Option<String> = None;
    for word in spec.split_whitespace() {
        let word = word.trim_end_matches(',');
        if word.is_empty() {
            continue; // a lone ", " between two names
        }
        if word.starts_with('-') {
            into.insert(word.to_string(), None);
            last = Some(word.to_string());
        } else if let Some(name) = last.take().filter(|_| is_value_name(word)) {
            into.insert(name, Some(word.to_string()));
        } else {
            break;
        }
    }
}

/// What `randline --help` defines: its lines that start (indented by a
/// few spaces, not the description's column) with a `-`.
fn help_options(help: &str) -> Options {
    let mut options = Options::new();
    for line in help.lines() {
        let text = line.trim_start();
        if text.starts_with('-') && line.len() - text.len() < 10 {
            defined(text, &mut options);
        }
    }
    options
}

/// A line of roff as a reader sees it: no request name, no quotes, no font
/// changes; `\-` is `-`.
fn plain(line: &str) -> String {
    let line = match line.strip_prefix('.') {
        Some(request) => request.split_once(' ').map_or("", |(_, args)| args),
        None => line,
    };
    let mut out = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            continue;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('-') => out.push('-'),
            Some('e') => out.push('\\'),
            // \fB, \fI, \fR, \fP, \f(XX, \f[XX]: a font change.
            Some('f') => match chars.next() {
                Some('(') => {
                    chars.next();
                    chars.next();
                }
                Some('[') => while chars.next().is_some_and(|c| c != ']') {},
                _ => {}
            },
            // \(xx: a special character, shown as a space here.
            Some('(') => {
                chars.next();
                chars.next();
                out.push(' ');
            }
            // \%, \&, \:: no output.
            Some('%' | '&' | ':') => {}
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// The man page's lines, comments left out.
fn roff_lines(page: &str) -> impl Iterator<Item = &str> {
    page.lines()
        .filter(|l| !l.starts_with(".\\\"") && !l.starts_with("'\\\""))
}

/// What the OPTIONS section defines: the tag after each `.TP`.
fn man_options(page: &str) -> Options {
    let mut options = Options::new();
    let mut in_options = false;
    let mut tag_next = false;
    for line in roff_lines(page) {
        if let Some(title) = line.strip_prefix(".SH ") {
            in_options = title.trim() == "OPTIONS";
            continue;
        }
        if !in_options {
            continue;
        }
        if line.starts_with(".TP") {
            tag_next = true;
        } else if tag_next {
            tag_next = false;
            defined(plain(line).trim_start(), &mut options);
        }
    }
    options
}

/// Every randline option the page names: anywhere in its text, and on the
/// `randline` command lines of its examples (the other commands there,
/// `nc -N` or `systemctl enable --now`, have options of their own).
fn named_options(page: &str) -> Vec<(usize, String)> {
    let mut named = Vec::new();
    let mut in_example = false;
    for (n, line) in page.lines().enumerate() {
        if line.starts_with(".\\\"") {
            continue;
        }
        match line {
            ".EX" => in_example = true,
            ".EE" => in_example = false,
            _ => {}
        }
        let text = plain(line);
        let command = text.trim_start_matches(['$', '#', ' ']);
        if in_example && !command.starts_with("randline ") {
            continue;
        }
        for word in text.split(|c: char| c.is_whitespace() || "(),;:[]=".contains(c)) {
            let word = word.trim_end_matches('.');
            let long = word.len() > 2
                && word.starts_with("--")
                && word[2..]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            let short = word.len() == 2
                && word.starts_with('-')
                && word.as_bytes()[1].is_ascii_alphabetic();
            if long || short {
                named.push((n + 1, word.to_string()));
            }
        }
    }
    named
}

#[test]
fn the_man_page_describes_exactly_the_options_of_help() {
    let help = help_options(&help());
    let man = man_options(&man_page());
    assert!(
        help.len() >= 20,
        "read too few options from --help: {help:?}"
    );
    let mut wrong = Vec::new();
    for (name, value) in &help {
        match man.get(name) {
            None => wrong.push(format!(
                "{name} is in --help but not in the man page's OPTIONS"
            )),
            Some(v) if v != value => wrong.push(format!(
                "{name}: --help says {}, the man page {}",
                value.as_deref().unwrap_or("no value"),
                v.as_deref().unwrap_or("no value")
            )),
            Some(_) => {}
        }
    }
    for name in man.keys() {
        if !help.contains_key(name) && !PENDING.contains(&name.as_str()) {
            wrong.push(format!(
                "the man page describes {name}, which `randline --help` does not have"
            ));
        }
    }
    for name in PENDING {
        if help.contains_key(*name) {
            wrong.push(format!(
                "{name} is in --help now: delete it from PENDING in tests/manpage.rs"
            ));
        }
        if !man.contains_key(*name) {
            wrong.push(format!(
                "PENDING lists {name}, but the man page does not describe it"
            ));
        }
    }
    assert!(wrong.is_empty(), "docs/randline.1:\n{}", wrong.join("\n"));
}

#[test]
fn every_option_the_man_page_names_exists() {
    let help = help_options(&help());
    let page = man_page();
    let named = named_options(&page);
    assert!(named.len() > 40, "found too few options named: {named:?}");
    let unknown: Vec<String> = named
        .iter()
        .filter(|(_, name)| !help.contains_key(name) && !PENDING.contains(&name.as_str()))
        .map(|(line, name)| format!("line {line}: {name}"))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/randline.1 names options randline does not have:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn the_man_page_has_its_sections_and_the_version() {
    let page = man_page();
    let sections: Vec<String> = roff_lines(&page)
        .filter_map(|l| l.strip_prefix(".SH "))
        .map(|t| t.trim().trim_matches('"').to_string())
        .collect();
    let wanted = [
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "OPTIONS",
        "PROTOCOL",
        "SIGNALS",
        "ENVIRONMENT",
        "FILES",
        "EXIT STATUS",
        "EXAMPLES",
        "SEE ALSO",
    ];
    assert_eq!(sections, wanted, "the sections of docs/randline.1");
    let th = roff_lines(&page)
        .find(|l| l.starts_with(".TH "))
        .expect("a .TH line");
    let version = concat!("\"randline ", env!("CARGO_PKG_VERSION"), "\"");
    assert!(
        th.starts_with(".TH RANDLINE 1 ") && th.contains(version),
        "{th:?} must name section 1 and {version}"
    );
}

#[test]
fn groff_renders_the_man_page_without_warnings() {
    if !common::have("groff", "groff") {
        return;
    }
    // The default device (PostScript, as `groff -ww -z` alone uses) and
    // the terminal's, which `man` uses.
    for device in [None, Some("-Tutf8")] {
        let mut groff = Command::new("groff");
        groff.args(["-man", "-ww", "-z"]).args(device).arg(MAN_PAGE);
        let out = common::run_cmd(groff);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && warnings.trim().is_empty(),
            "groff -man -ww -z {}: {}\n{warnings}",
            device.unwrap_or(""),
            out.status
        );
    }
}

#[test]
fn the_parsers_read_what_they_should() {
    // The readers above, on the shapes they meet.
    let mut o = Options::new();
    defined("-l, --listen ADDR         listen on HOST:PORT", &mut o);
    defined("--output-budget BYTES answers waiting", &mut o);
    defined("--reuse-port          set SO_REUSEPORT: several", &mut o);
    defined(&plain(".BI \\-\\-max\\-line \" BYTES\""), &mut o);
    defined(
        &plain("\\fB\\-h\\fR, \\fB\\-\\-help\\fR print this help"),
        &mut o,
    );
    let expected: Options = [
        ("-l", None),
        ("--listen", Some("ADDR")),
        ("--output-budget", Some("BYTES")),
        ("--reuse-port", None),
        ("--max-line", Some("BYTES")),
        ("-h", None),
        ("--help", None),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    assert_eq!(o, expected);
    let named = named_options(
        ".B \\-\\-seed\nsee \\fB\\-\\-max\\fR.\n.EX\n$ randline \\-\\-min 3 \\-l x\n# systemctl enable \\-\\-now x\n.EE\n",
    );
    let names: Vec<&str> = named.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["--seed", "--max", "--min", "-l"]);
}
