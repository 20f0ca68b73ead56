//! The Debian package, built and used for real: `cargo deb` builds it,
//! lintian judges it, `dpkg -i` installs it into this system, the installed
//! binary, man page and units are used, then `dpkg -r` and `dpkg -P` take
//! it away again, and what each step leaves behind is checked.
//! docs/deploy.md ("The Debian package") describes the same.
//!
//! Needs root (it installs into the system), cargo-deb (`cargo install
//! cargo-deb --locked --version 3.8.0`), dpkg-dev, lintian, man-db, systemd
//! and netcat-openbsd. Outside CI, a run without them skips with a message;
//! under CI (`CI` set, where .ci/run runs as root and installs them) it
//! must run. Every wait is bounded.

mod common;

use common::{Server, WAIT};
use rustix::process::Signal;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `cargo deb`: a release build (fat LTO, one codegen unit) from scratch on
/// two cores takes a few minutes; nothing to build takes seconds.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);
/// lintian, and dpkg with man-db's trigger.
const TOOL_LIMIT: Duration = Duration::from_secs(5 * 60);

/// lintian warnings that are explained rather than fixed: the tag, and
/// why. Any other warning, and any error, fails the test, and so does an
/// entry here that lintian no longer reports (delete it then).
const EXPLAINED: &[(&str, &str)] = &[];

/// Where the package's files and the state its scripts keep may appear:
/// each is listed, recursively, before and after each step.
const WATCHED: &[&str] = &[
    "/usr/bin",
    "/usr/lib/systemd/system",
    "/usr/share/man/man1",
    "/usr/share/doc/randline",
    "/etc/systemd",
    "/var/lib/systemd",
    "/var/lib/dpkg/info",
];

/// Runs `program args`, which must succeed; returns its stdout.
fn ok(program: &str, args: &[&str], limit: Duration) -> String {
    let out = common::run_cmd_with_input(Command::new(program).args(args), b"", limit);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Skips the test outside CI (with `why`), fails it under CI.
fn cannot(why: &str) -> bool {
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("skipped: {why}");
    false
}

/// Root and every program the test runs.
fn ready() -> bool {
    if !rustix::process::geteuid().is_root() {
        return cannot("the package test needs root (dpkg -i)");
    }
    let cargo_deb = Command::new(env!("CARGO"))
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !cargo_deb {
        return cannot(
            "cargo-deb is missing (cargo install cargo-deb --locked --version 3.8.0; .ci/run does it)",
        );
    }
    for (program, package) in [
        ("dpkg-shlibdeps", "dpkg-dev"),
        ("lintian", "lintian"),
        ("man", "man-db"),
        ("systemd-analyze", "systemd"),
        ("systemctl", "systemd"),
        ("nc", "netcat-openbsd"),
    ] {
        if !common::have(program, package) {
            return false;
        }
    }
    true
}

/// The package's state in dpkg's database: `ii`, `rc`, `un`..., or `None`
/// when dpkg has never heard of it.
fn dpkg_status() -> Option<String> {
    let out = common::run_cmd_with_input(
        Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", "randline"]),
        b"",
        WAIT,
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !status.is_empty()).then_some(status)
}

fn installed() -> bool {
    dpkg_status().is_some_and(|s| !s.starts_with("un"))
}

/// Every path under the [`WATCHED`] directories (symbolic links are not
/// followed).
fn snapshot() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, into: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            into.insert(path.clone());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, into);
            }
        }
    }
    let mut all = BTreeSet::new();
    for dir in WATCHED {
        walk(Path::new(dir), &mut all);
    }
    all
}

/// What appeared and what went away between two snapshots.
fn changes(before: &BTreeSet<PathBuf>, after: &BTreeSet<PathBuf>) -> (Vec<String>, Vec<String>) {
    let show = |p: &PathBuf| p.display().to_string();
    (
        after.difference(before).map(show).collect(),
        before.difference(after).map(show).collect(),
    )
}

fn purge() {
    if installed() {
        let _ = common::run_cmd_with_input(
            Command::new("dpkg").args(["-P", "randline"]),
            b"",
            TOOL_LIMIT,
        );
    }
}

/// Purges the package when dropped: a failing test leaves nothing
/// installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        purge();
    }
}

/// Sends `input` with `nc -N` (half-close at the end of input) and
/// returns what came back before the server closed.
fn nc(server: &Server, input: &str) -> String {
    let port = server.addr.port().to_string();
    let out = common::run_cmd_with_input(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        input.as_bytes(),
        WAIT,
    );
    assert!(out.status.success(), "nc: {}", out.status);
    String::from_utf8(out.stdout).expect("answers are ASCII")
}

/// The section names of the ELF file at `path` (64-bit, little-endian):
/// a stripped binary has no `.symtab` and no `.debug_*` sections.
fn section_names(path: &str) -> Vec<String> {
    let b = std::fs::read(path).expect("read the binary");
    assert!(
        b.starts_with(b"\x7fELF") && b[4] == 2 && b[5] == 1,
        "{path}: not a 64-bit little-endian ELF file"
    );
    let n16 = |at: usize| usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let n32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
    let n64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes")) as usize;
    // e_shoff, e_shentsize, e_shnum, e_shstrndx; a header's sh_name is its
    // first field, sh_offset at 0x18.
    let (table, size, count, names) = (n64(0x28), n16(0x3a), n16(0x3c), n16(0x3e));
    let strings = n64(table + names * size + 0x18);
    (0..count)
        .map(|i| {
            let start = strings + n32(table + i * size);
            let end = start + b[start..].iter().position(|&c| c == 0).expect("NUL");
            String::from_utf8_lossy(&b[start..end]).into_owned()
        })
        .collect()
}

/// Builds the package with `cargo deb`; returns its path.
fn build(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("output directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["deb", "--locked", "--output"])
        .arg(dir)
        .current_dir(ROOT);
    let out = common::run_cmd_with_input(&mut cargo, b"", BUILD_LIMIT);
    assert!(
        out.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let arch = ok("dpkg", &["--print-architecture"], WAIT);
    let name = format!("randline_{VERSION}_{}.deb", arch.trim());
    let built: Vec<String> = std::fs::read_dir(dir)
        .expect("read the output directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        built,
        std::slice::from_ref(&name),
        "cargo deb wrote {built:?}"
    );
    dir.join(name)
}

/// Runs lintian: no error, and no warning that [`EXPLAINED`] does not
/// explain. Its whole report is printed.
fn lintian(deb: &str) {
    let out = common::run_cmd_with_input(Command::new("lintian").arg(deb), b"", TOOL_LIMIT);
    let report = String::from_utf8_lossy(&out.stdout);
    println!("lintian {deb}:\n{report}(end of lintian's report)");
    let mut wrong = Vec::new();
    for line in report.lines() {
        let tag = line.split_whitespace().nth(2).unwrap_or("");
        let explained = EXPLAINED.iter().find(|(t, _)| *t == tag);
        if line.starts_with("E: ") || (line.starts_with("W: ") && explained.is_none()) {
            wrong.push(line.to_string());
        } else if let Some((_, why)) = explained {
            println!("explained: {tag}: {why}");
        }
    }
    for (tag, _) in EXPLAINED {
        if !report.contains(&format!(" {tag}")) {
            wrong.push(format!(
                "{tag} is no longer reported: delete it from EXPLAINED in tests/package.rs"
            ));
        }
    }
    assert!(wrong.is_empty(), "lintian:\n{}", wrong.join("\n"));
    // lintian exits non-zero on an error, or when it cannot run at all.
    assert!(
        out.status.success(),
        "lintian: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files the package must hold, and nothing else: the binary, the
/// man page, the three units, and the operator's documentation.
fn expected_files() -> BTreeSet<String> {
    [
        "/usr/bin/randline",
        "/usr/share/man/man1/randline.1.gz",
        "/usr/lib/systemd/system/randline.socket",
        "/usr/lib/systemd/system/randline.service",
        "/usr/lib/systemd/system/randline@.service",
        "/usr/share/doc/randline/README.md",
        "/usr/share/doc/randline/CHANGELOG.md",
        "/usr/share/doc/randline/copyright",
        "/usr/share/doc/randline/changelog.gz",
        // What an operator reads; the learning docs stay in the source
        // tree (Cargo.toml's assets say why).
        "/usr/share/doc/randline/docs/deploy.md",
        "/usr/share/doc/randline/docs/protocol.md",
    ]
    .into_iter()
    .map(str::to_string)
    .collect()
}

/// Checks the package's control fields, files and maintainer scripts
/// before installing it.
fn check_contents(deb: &str) {
    // debian/changelog's newest entry is this version.
    let changelog = std::fs::read_to_string(Path::new(ROOT).join("debian/changelog"))
        .expect("read debian/changelog");
    let first = changelog.lines().next().unwrap_or("");
    assert!(
        first.starts_with(&format!("randline ({VERSION}) ")),
        "debian/changelog must start with an entry for {VERSION}: {first:?}"
    );

    let fields = ok(
        "dpkg-deb",
        &[
            "-f",
            deb,
            "Package",
            "Version",
            "Architecture",
            "Depends",
            "Section",
            "Priority",
            "Maintainer",
            "Description",
        ],
        WAIT,
    );
    println!("control fields:\n{fields}");
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} field:\n{fields}"))
            .to_string()
    };
    assert_eq!(field("Package"), "randline");
    assert_eq!(field("Version"), VERSION);
    assert_eq!(
        field("Architecture"),
        ok("dpkg", &["--print-architecture"], WAIT).trim()
    );
    // Computed by dpkg-shlibdeps from the binary.
    assert!(field("Depends").contains("libc6 (>= "), "{fields}");
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(field("Maintainer").contains('<'), "{fields}");
    assert!(!field("Description").is_empty());

    let listing = ok("dpkg-deb", &["-c", deb], WAIT);
    println!("dpkg-deb -c:\n{listing}");
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        // -rwxr-xr-x root/root 123 2026-12-01 14:30 ./usr/bin/randline
        let words: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (words[0], words[1], words[5]);
        assert!(owner == "0/0" || owner == "root/root", "{line}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
            continue;
        }
        let path = path.trim_start_matches('.');
        let wanted_mode = if path == "/usr/bin/randline" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, wanted_mode, "{line}");
        files.insert(path.to_string());
    }
    assert_eq!(files, expected_files(), "the package's files");

    // Nothing is enabled or started by the scripts: cargo-deb's defaults
    // would do both (these are the lines they would add).
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        let out = common::run_cmd_with_input(
            Command::new("dpkg-deb").args(["-I", deb, script]),
            b"",
            WAIT,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for forbidden in [
            "deb-systemd-invoke start",
            "_dh_action=start",
            "was-enabled defaults to true",
            "systemctl enable",
            "systemctl start",
        ] {
            assert!(
                !text.contains(forbidden),
                "{script} has {forbidden:?}:\n{text}"
            );
        }
    }
}

/// Uses what was installed: the binary, the man page, the units.
fn check_installed() {
    assert_eq!(
        ok("/usr/bin/randline", &["--version"], WAIT).trim(),
        format!("randline {VERSION}")
    );
    let sections = section_names("/usr/bin/randline");
    assert!(sections.iter().any(|s| s == ".text"), "{sections:?}");
    assert!(
        !sections
            .iter()
            .any(|s| s == ".symtab" || s.starts_with(".debug")),
        "the binary is not stripped: {sections:?}"
    );

    assert_eq!(
        ok("man", &["-w", "randline"], WAIT).trim(),
        "/usr/share/man/man1/randline.1.gz"
    );
    let page = common::run_cmd_with_input(
        Command::new("man")
            .args(["-P", "cat", "randline"])
            .env("MANWIDTH", "80"),
        b"",
        WAIT,
    );
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("randline - answer every line with a random integer"),
        "man randline:\n{page}"
    );

    // The installed units, as systemd would read them; a template as one
    // of its instances.
    let dir = std::env::temp_dir().join(format!("randline-package-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let instance = dir.join("randline@0.service");
    std::fs::copy("/usr/lib/systemd/system/randline@.service", &instance).expect("copy template");
    let out = common::run_cmd_with_input(
        Command::new("systemd-analyze")
            .arg("verify")
            .args([
                "/usr/lib/systemd/system/randline.socket",
                "/usr/lib/systemd/system/randline.service",
            ])
            .arg(&instance),
        b"",
        WAIT,
    );
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
    for unit in ["randline.socket", "randline.service"] {
        let out = common::run_cmd_with_input(
            Command::new("systemctl").args(["is-enabled", unit]),
            b"",
            WAIT,
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "disabled",
            "{unit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A real exchange: the installed binary answers nc, exactly as the
    // binary under test does with the same seed and lines.
    let input = "hello\n\nhow are you?\n  STOP  \r\nnever answered\n";
    let mut installed = Command::new("/usr/bin/randline");
    installed.args(["--listen", "127.0.0.1:0", "--seed", "42"]);
    let mut server = Server::spawn(installed);
    let answers = nc(&server, input);
    let tested = Server::start(&["--seed", "42"]);
    assert_eq!(answers, nc(&tested, input), "installed vs tested binary");
    let numbers = common::numbers(answers.as_bytes());
    assert_eq!(numbers.len(), 3, "{answers:?}");
    assert!(numbers.iter().all(|n| (1..=99).contains(n)), "{answers:?}");
    server.log.wait_for("serving 127.0.0.1:");
    server.signal(Signal::TERM);
    assert!(server.wait_exit().success(), "{}", server.log.text());
}

#[test]
fn the_package_builds_installs_serves_and_removes_cleanly() {
    if !ready() {
        return;
    }
    if installed() || Path::new("/usr/bin/randline").exists() {
        // A developer's own installation is not ours to replace. Under CI,
        // only an interrupted earlier run can have left one: purge it.
        if std::env::var_os("CI").is_none() {
            eprintln!(
                "skipped: randline is installed here already (dpkg -P randline, or remove /usr/bin/randline)"
            );
            return;
        }
        assert!(installed(), "/usr/bin/randline exists and is no package's");
        eprintln!("purging a randline package left by an earlier run");
        purge();
    }
    let started = Instant::now();
    let mut lap = Instant::now();
    let mut time = |what: &str| {
        println!("{what}: {:.1} s", lap.elapsed().as_secs_f64());
        lap = Instant::now();
    };

    let dir = std::env::temp_dir().join(format!("randline-deb-{}", std::process::id()));
    let deb = build(&dir);
    let deb = deb.to_str().expect("UTF-8 path").to_string();
    println!(
        "{deb}: {} bytes",
        std::fs::metadata(&deb).expect("the package").len()
    );
    time("cargo deb");
    lintian(&deb);
    time("lintian");
    check_contents(&deb);

    let before = snapshot();
    let _purge = Purge;
    ok("dpkg", &["-i", &deb], TOOL_LIMIT);
    time("dpkg -i");
    assert_eq!(dpkg_status().as_deref(), Some("ii"));
    // Installing enabled nothing: no link in /etc/systemd; what appeared
    // is the package's files and deb-systemd-helper's record of the units.
    let (added, removed) = changes(&before, &snapshot());
    assert!(removed.is_empty(), "dpkg -i removed {removed:?}");
    let unexpected: Vec<&String> = added
        .iter()
        .filter(|p| {
            !expected_files().contains(*p)
                && !p.starts_with("/usr/share/doc/randline")
                && !p.starts_with("/var/lib/dpkg/info/randline.")
                && !p.starts_with("/var/lib/systemd/deb-systemd-helper-enabled")
        })
        .collect();
    assert!(unexpected.is_empty(), "dpkg -i also made {unexpected:?}");
    check_installed();
    time("using the installed package");

    // dpkg -r: every file of the package goes; policy keeps, until purge,
    // the maintainer scripts' state: dpkg's own record (the package stays
    // in "config-files" state while it has a postrm) and
    // deb-systemd-helper's masks of the units (links to /dev/null, so that
    // a unit that was enabled is not started while the package is gone)
    // with its state.
    ok("dpkg", &["-r", "randline"], TOOL_LIMIT);
    time("dpkg -r");
    let after_remove = snapshot();
    let (added, removed) = changes(&before, &after_remove);
    assert!(removed.is_empty(), "dpkg -r removed {removed:?}");
    println!("kept by dpkg -r: {added:#?}");
    for path in &added {
        let kept = path.starts_with("/var/lib/dpkg/info/randline.")
            || path.starts_with("/var/lib/systemd/deb-systemd-helper-")
            || ((path == "/etc/systemd/system/randline.socket"
                || path == "/etc/systemd/system/randline.service")
                && std::fs::read_link(path).is_ok_and(|t| t == Path::new("/dev/null")));
        assert!(kept, "dpkg -r left {path}");
    }
    for file in expected_files() {
        assert!(!Path::new(&file).exists(), "dpkg -r left {file}");
    }

    // dpkg -P: nothing at all is left.
    ok("dpkg", &["-P", "randline"], TOOL_LIMIT);
    time("dpkg -P");
    let (added, removed) = changes(&before, &snapshot());
    assert!(
        added.is_empty() && removed.is_empty(),
        "after dpkg -P: new {added:?}, gone {removed:?}"
    );
    assert!(
        !installed(),
        "dpkg still knows randline: {:?}",
        dpkg_status()
    );
    std::fs::remove_dir_all(&dir).ok();
    println!("total: {:.1} s", started.elapsed().as_secs_f64());
}

/// The highest `GLIBC_x.y` version in the ELF file's version-needs section
/// (`readelf -V`, which reads any architecture): the oldest glibc the
/// binary runs on. `None` for a binary that needs no glibc version.
fn glibc_needed(binary: &Path) -> Option<String> {
    let path = binary.to_str().expect("UTF-8 path");
    let report = ok("readelf", &["--version-info", "--wide", path], WAIT);
    // "Version needs section '.gnu.version_r' ...", then one
    // "0x0010:   Name: GLIBC_2.34  Flags: none  Version: 5" per version.
    let needs = report.split_once("Version needs section")?.1;
    let number = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap_or(0)).collect() };
    needs
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .max_by_key(|v| number(v))
        .map(str::to_string)
}

/// The Debian architecture of an ELF binary, from its class and machine
/// (all three are little-endian).
fn elf_arch(binary: &Path) -> &'static str {
    let b = std::fs::read(binary).expect("read the binary");
    assert!(b.starts_with(b"\x7fELF"), "{}: not ELF", binary.display());
    match (b[4], u16::from_le_bytes([b[18], b[19]])) {
        (2, 62) => "amd64",
        (2, 183) => "arm64",
        (1, 40) => "armhf",
        (class, machine) => panic!("{}: ELF class {class}, machine {machine}", binary.display()),
    }
}

/// The release packages that scripts/release writes (into target/dist, or
/// `RANDLINE_DIST`, which it sets when it runs this test before writing
/// SHA256SUMS): amd64, arm64 and armhf, each with the binary of its
/// architecture, `Depends: libc6 (>= V)` where V is the highest glibc
/// symbol version that binary needs (cargo-deb's own Depends is wrong for
/// a cross build: `libc6:armhf (>= 2.36)` for a binary needing 2.34), the
/// armhf one saying it needs ARMv7, and lintian content with each. Without
/// release packages of this version (the README's `cargo test`, or CI's
/// before its release stage) it skips, saying so; with `RANDLINE_DIST` set
/// it must find them.
#[test]
fn release_debs_depend_on_the_glibc_their_binary_needs() {
    let explicit = std::env::var_os("RANDLINE_DIST");
    let dir = explicit
        .clone()
        .map_or_else(|| Path::new(ROOT).join("target/dist"), PathBuf::from);
    // In target/dist, only this version's: packages of another version
    // are left from an older release, not this tree's. RANDLINE_DIST must
    // hold this version's alone (the file name is checked below).
    let prefix = if explicit.is_some() {
        "randline_".to_string()
    } else {
        format!("randline_{VERSION}_")
    };
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    debs.sort();
    if debs.is_empty() {
        assert!(
            explicit.is_none(),
            "RANDLINE_DIST={}: no randline_*.deb in it",
            dir.display()
        );
        eprintln!(
            "skipped: no release packages of {VERSION} in {} (scripts/release writes them)",
            dir.display()
        );
        return;
    }
    for (program, package) in [
        ("dpkg-deb", "dpkg"),
        ("readelf", "binutils"),
        ("lintian", "lintian"),
    ] {
        if !common::have(program, package) {
            return;
        }
    }
    let mut arches = BTreeSet::new();
    for deb in &debs {
        let deb_str = deb.to_str().expect("UTF-8 path");
        let field = |name: &str| {
            ok("dpkg-deb", &["-f", deb_str, name], WAIT)
                .trim()
                .to_string()
        };
        let arch = field("Architecture");
        assert_eq!(
            deb.file_name().and_then(|n| n.to_str()),
            Some(format!("randline_{VERSION}_{arch}.deb").as_str()),
            "the file name of a package for {arch}"
        );
        assert_eq!(field("Package"), "randline", "{deb_str}");
        assert_eq!(field("Version"), VERSION, "{deb_str}");

        let root =
            std::env::temp_dir().join(format!("randline-release-{arch}-{}", std::process::id()));
        ok(
            "dpkg-deb",
            &["-x", deb_str, root.to_str().expect("UTF-8")],
            WAIT,
        );
        let binary = root.join("usr/bin/randline");
        assert_eq!(elf_arch(&binary), arch, "{deb_str}: the binary's machine");
        let glibc = glibc_needed(&binary)
            .unwrap_or_else(|| panic!("{deb_str}: its binary needs no GLIBC_ version"));
        std::fs::remove_dir_all(&root).ok();
        let depends = field("Depends");
        println!("{deb_str}: Depends: {depends} (binary needs GLIBC_{glibc})");
        assert_eq!(
            depends,
            format!("libc6 (>= {glibc})"),
            "{deb_str}: Depends must be libc6 (>= the highest GLIBC_ version its binary needs)"
        );

        let description = field("Description");
        assert_eq!(
            arch == "armhf",
            description.contains("Built for ARMv7 and later"),
            "{deb_str}: only the armhf package says it needs ARMv7:\n{description}"
        );
        lintian(deb_str);
        arches.insert(arch);
    }
    let wanted: BTreeSet<String> = ["amd64", "arm64", "armhf"].map(String::from).into();
    assert_eq!(arches, wanted, "release packages in {}", dir.display());
}
