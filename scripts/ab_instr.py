#!/usr/bin/env python3
"""scripts/ab_instr.py: the server's own instructions per line (callgrind's
Ir: user space, the loop and libc; not the kernel), for several builds side
by side, in scripts/ab's scenarios, the order of the variants rotated every
round.

    BIN=/tmp/ab VARIANTS="old new" SCEN="b d" ROUNDS=5 SECS=4 scripts/ab-instr

BIN holds randline-VARIANT and load (examples/load/). Scenarios as in
scripts/ab: a = ping-pong 1 conn, b = ping-pong 50 conns, c = depth 32 on
50 conns, d = depth 16384 on 1 conn, e = depth 1024 on 50 conns. Each run:
a fresh server (default options, as scripts/ab runs it) under
`valgrind --tool=callgrind` on CPU 0; with it idle, `callgrind_control -z`
and SIGUSR1 (a stats: line); then `load rate` on CPU 1 for WARMUP + SECS s,
to its end (its connections closed); when the server holds no client
socket, SIGUSR1 again and `callgrind_control -d`. Instructions per line =
the dump's Ir, less what two stats: lines cost (measured first in the same
run, the same sequence with no load), over the lines the two stats: lines
differ by. It covers the whole load: connecting, the warm-up, the lines,
the closes. Every wait is bounded. One JSON line per run in
$OUT/runs.jsonl (default target/ab-instr); a Markdown table on stdout.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402
import timer_scale as ts  # noqa: E402

SCEN = {"a": (1, 1), "b": (50, 1), "c": (50, 32), "d": (1, 16384), "e": (50, 1024)}


def run_one(bindir: Path, v: str, sc: str, out: Path, tag: str, secs: float, warmup: float) -> dict:
    c, d = SCEN[sc]
    rec: dict = {"scenario": sc, "variant": v, "conns": c, "depth": d}
    srv = ts.Server(bindir / f"randline-{v}", out, tag, args=())
    try:
        base = srv.sockets()
        srv.zero()
        s0 = srv.stats()
        s1 = srv.stats()
        zero = srv.dump()
        srv.zero()
        s2 = srv.stats()
        cmd = ["taskset", "-c", "1", bindir / "load", "rate", "--addr", f"127.0.0.1:{srv.port}",
               "--conns", c, "--depth", d, "--secs", secs, "--warmup", warmup, "--json"]
        r = subprocess.run([str(x) for x in cmd], capture_output=True, text=True, timeout=secs + warmup + 60)
        load = next((json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")), {})
        ts.wait_quiet(srv, base, time.monotonic() + 60)
        s3 = srv.stats()
        ir = srv.dump()
        d0, d1 = ts.delta(s0, s1), ts.delta(s2, s3)
        lines = d1["lines"] - d0["lines"]
        rec.update({"ir": ir, "ir_stats": zero, "lines": lines, "events": d1["events"] - d0["events"],
                    "wakeups": d1["wakeups"] - d0["wakeups"], "reads": d1["reads"], "writes": d1["writes"],
                    "ir_per_line": (ir - zero) / lines if lines else None,
                    "load_exit": r.returncode, "load_errors": load.get("errors"),
                    "load_unanswered": load.get("unanswered"), "load_lps": load.get("lines_per_sec")})
        rec["ok"] = bool(lines) and s3["active"] == 0
    except Exception as e:
        rec["ok"] = False
        rec["error"] = f"{type(e).__name__}: {e}"
        print(f"ab-instr: {tag}: {rec['error']}", file=sys.stderr)
    finally:
        srv.stop()
    return rec


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    if "BIN" not in os.environ:
        bk.die("BIN: a directory holding randline-VARIANT binaries and load", 2)
    bindir = Path(os.environ["BIN"])
    variants = os.environ.get("VARIANTS", "old new").split()
    scen = os.environ.get("SCEN", "b d").split()
    rounds = int(os.environ.get("ROUNDS", "5"))
    secs = float(os.environ.get("SECS", "4"))
    warmup = float(os.environ.get("WARMUP", "1"))
    out = Path(os.environ.get("OUT", "target/ab-instr")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    recs = []
    for r in range(1, rounds + 1):
        order = variants[(r - 1) % len(variants):] + variants[:(r - 1) % len(variants)]
        for sc in scen:
            for v in order:
                tag = f"{v}.{sc}.r{r}"
                rec = run_one(bindir, v, sc, out, tag, secs, warmup)
                rec.update({"round": r, "time": time.strftime("%F %T"),
                            "loadavg": open("/proc/loadavg").read().split()[0]})
                recs.append(rec)
                with open(out / "runs.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(f"{time.strftime('%T')} r{r} ({sc}) {v}: ok={rec['ok']} {rec.get('lines')} lines, "
                      f"{bk.fmt(rec.get('ir_per_line'), 1)} Ir/line, "
                      f"{bk.fmt(rec['events'] / rec['wakeups'] if rec.get('wakeups') else None, 1)} events/wakeup",
                      file=sys.stderr)
    table(recs, variants, scen)


def table(recs: list[dict], variants: list[str], scen: list[str]) -> None:
    print("| scenario | " + " | ".join(f"{v}: Ir/line (median)" for v in variants)
          + f" | {variants[-1]}/{variants[0]} | runs |")
    print("|---|" + "---|" * len(variants) + "---|---|")
    for sc in scen:
        meds, n = [], 0
        for v in variants:
            xs = [r["ir_per_line"] for r in recs if r["scenario"] == sc and r["variant"] == v
                  and r.get("ok") and r.get("ir_per_line")]
            meds.append(statistics.median(xs) if xs else None)
            n = max(n, len(xs))
        ratio = meds[-1] / meds[0] if meds[0] and meds[-1] else None
        c, d = SCEN[sc]
        print(f"| {sc}: {c} conns, depth {d} | " + " | ".join(bk.fmt(m, 1) for m in meds)
              + f" | {bk.fmt(ratio, 3)} | {n} |")


if __name__ == "__main__":
    main()
