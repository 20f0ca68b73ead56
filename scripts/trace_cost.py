#!/usr/bin/env python3
"""scripts/trace_cost.py: what the trace! calls cost when the trace is off.

    scripts/trace-cost               # ROUNDS=7 SECS=3: about 1 minute

Compares two release builds of the same code, side by side, alternating
A/B/A/B... with a fresh server each round:
  trace    the normal build, run with RUST_LOG=info (trace off at run time)
  notrace  built with `--features log/release_max_level_debug`: the log
           crate removes every trace! at compile time, and
           log_enabled!(Level::Trace) is a constant false
Load: pipelined, 50 connections x 32 lines in flight (load rate), the server
on CPU 0 and the load tool on CPU 1. Per round: answered lines/s (load
tool), server CPU time per answered line (the load tool's /proc samples of
the server, from before it connects to after its clients are gone, divided
by every line it got answered). Then, once per build, an exact figure that
no noise can blur: instructions per answered line under valgrind
--tool=callgrind (10 connections x 32 lines for CG_SECS=3 s; the whole run,
start-up included, divided by the lines answered). Prints medians, min-max
and notrace/trace ratios as a Markdown table; every record goes to
target/trace-cost/raw.jsonl.

Installs nothing. Needs: cargo, taskset (util-linux); valgrind (apt-get
install -y valgrind) for the instruction counts, skipped without it. The
driver is scripts/benchkit.py (Python 3 standard library; why, there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402
from benchkit import fmt, median, span  # noqa: E402


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    rounds, secs, cg_secs = (int(os.environ.get(k, d)) for k, d in (("ROUNDS", "7"), ("SECS", "3"), ("CG_SECS", "3")))
    out = bk.ROOT / "target/trace-cost"
    bins = bk.build(out, ("randline", "load"))
    print("building the notrace binary...", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "randline", "--features",
                    "log/release_max_level_debug"], cwd=bk.ROOT, check=True, timeout=1800,
                   env=dict(os.environ, CARGO_TARGET_DIR=str(bk.ROOT / "target/notrace")))
    variants = {"trace": dict(bins), "notrace": dict(bins, randline=bk.ROOT / "target/notrace/release/randline")}
    cmds = bk.Commands(out)
    raw = bk.Raw(out / "raw.jsonl")
    raw.write({"kind": "meta", "machine": bk.machine(), "settings": {"ROUNDS": rounds, "SECS": secs}})
    for r in range(1, rounds + 1):
        print(f"round {r} of {rounds}", file=sys.stderr)
        for v, b in variants.items():
            with bk.Server("randline", b, out / f"{v}.log", env={"RUST_LOG": "info"}) as srv:
                rec = bk.load(bins, cmds, "rate", srv, "--conns", 50, "--depth", 32, "--warmup", 1,
                              "--secs", secs, timeout=secs + 60)
            raw.write({"kind": "rate", "round": r, "build": v, "load": rec})
    callgrind = {}
    if shutil.which("valgrind"):
        for v, b in variants.items():
            callgrind[v] = instructions_per_line(v, b, bins, out, cg_secs)
    raw.f.close()

    recs = [x for x in bk.read_raw(out / "raw.jsonl") if x["kind"] == "rate"]

    def ns(x):
        t = bk.server_ticks(x, "start", "end")
        return t / x["clk_tck"] * 1e9 / x["lines_total"] if t is not None and x.get("lines_total") else None

    def col(v, f):
        return [f(x["load"]) for x in recs if x["build"] == v]
    print()
    print(f"| figure (median of {rounds}, range) | trace calls in, off at run time | trace calls compiled out | notrace / trace |")
    print("|---|---|---|---|")
    for name, f in (("answered lines/s", lambda x: x.get("lines_per_sec")), ("server CPU per line, ns", ns)):
        a, b = median(col("trace", f)), median(col("notrace", f))
        sa, sb = span(col("trace", f)), span(col("notrace", f))
        print(f"| {name} | {fmt(a)} ({fmt(sa[0])}–{fmt(sa[1])}) | {fmt(b)} ({fmt(sb[0])}–{fmt(sb[1])}) | {bk.ratio(b, a)} |")
    if callgrind:
        a, b = callgrind["trace"], callgrind["notrace"]
        print(f"| instructions per line (callgrind, exact, one run) | {fmt(a)} | {fmt(b)} | "
              f"{f'{b / a:.3f}' if a and b else ''} |")
    print()
    print(f"binaries: trace {os.path.getsize(variants['trace']['randline'])} bytes, "
          f"notrace {os.path.getsize(variants['notrace']['randline'])} bytes")


def instructions_per_line(v: str, b: dict, bins: dict, out: Path, cg_secs: int):
    """The whole server run under callgrind (start-up included) ÷ lines answered."""
    port = bk.free_port()
    cg = out / f"{v}.callgrind"
    log = open(out / f"{v}.cg.log", "w")
    p = bk.spawn(["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}", b["randline"],
                  "--listen", f"127.0.0.1:{port}"], stdout=log, stderr=log, env=dict(os.environ, RUST_LOG="info"))
    deadline = time.monotonic() + 30
    while not bk.listening(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    r = subprocess.run([str(bins["load"]), "rate", "--addr", f"127.0.0.1:{port}", "--conns", "10", "--depth", "32",
                        "--warmup", "0", "--secs", str(cg_secs), "--json"], capture_output=True, text=True,
                       timeout=cg_secs + 60)
    bk.stop(p, wait=60)
    log.close()
    lines = next((__import__("json").loads(x)["lines_total"] for x in r.stdout.splitlines() if x.startswith("{")), 0)
    for line in cg.read_text().splitlines():
        if line.startswith("summary:") and lines:
            return int(line.split()[1]) / lines
    return None


if __name__ == "__main__":
    main()
