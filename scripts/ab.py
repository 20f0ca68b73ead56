#!/usr/bin/env python3
"""scripts/ab.py: several builds of randline side by side, the method of
scripts/bench: a fresh server per run pinned to CPU 0, the load tool
(examples/load/) on CPU 1, WARMUP s then SECS s measured, the order of the
variants rotated every round so that drift hits them all alike.

    BIN=/tmp/ab VARIANTS="A B" ROUNDS=9 SECS=5 scripts/ab

BIN holds randline-A, randline-B, ... (release builds of the variants) and
load (cargo build --release --example load). Scenarios (SCEN): a = ping-pong
1 conn, b = ping-pong 50 conns, c = depth 32 on 50 conns, d = depth 16384 on
1 conn, e = depth 1024 on 50 conns. One JSON line per run in
$OUT/runs.jsonl (default target/ab): lines/s, p50/p99, server CPU per line
over the window and over the run, and the load tool's whole record
(`record`, with its /proc samples of the server). docs/performance.md
("What the bounds cost", "Writing after the batch") was measured with it.

A variant named redis, tokio-current, tokio-multi or threaded is that
server of scripts/bench instead of a randline build, run the same way (same
pinning, same load; Redis is sent PING instead of x): redis-server from
PATH, BIN/tokio (cargo build --release --example tokio) or BIN/threaded. So

    BIN=/tmp/ab VARIANTS="new redis tokio-current" SCEN="b" scripts/ab

puts randline beside its peers in one alternating run. Every run is bounded
in time. The driver is scripts/benchkit.py (Python 3 standard library; why,
there).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402

SCEN = {"a": (1, 1), "b": (50, 1), "c": (50, 32), "d": (1, 16384), "e": (50, 1024)}
# Variants that name one of scripts/bench's other servers rather than a randline build.
PEERS = [s for s in bk.SERVERS if s != "randline"]


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    rounds, secs, warmup = (int(os.environ.get(k, d)) for k, d in (("ROUNDS", "9"), ("SECS", "5"), ("WARMUP", "1")))
    variants = os.environ.get("VARIANTS", "A B C").split()
    scen = os.environ.get("SCEN", "a b c").split()
    if "BIN" not in os.environ:
        bk.die("BIN: a directory holding randline-VARIANT binaries and load", 2)
    bindir = Path(os.environ["BIN"])
    out = Path(os.environ.get("OUT", "target/ab"))
    out.mkdir(parents=True, exist_ok=True)
    raw = bk.Raw(out / "runs.jsonl")
    cmds = bk.Commands(out)
    for r in range(1, rounds + 1):
        n = len(variants)
        order = [variants[(i + r - 1) % n] for i in range(n)]  # A B C, B C A, C A B, ...
        for sc in scen:
            c, d = SCEN[sc]
            for v in order:
                kind = v if v in PEERS else "randline"
                bins = {"randline": bindir / f"randline-{v}", "load": bindir / "load",
                        "tokio": bindir / "tokio", "threaded": bindir / "threaded"}
                with bk.Server(kind, bins, out / "server.log") as srv:
                    rec = bk.load(bins, cmds, "rate", srv, "--conns", c, "--depth", d, "--secs", secs,
                                  "--warmup", warmup, "--line", bk.line_for(kind),
                                  timeout=secs + warmup + 60)
                lps = rec.get("lines_per_sec")
                win_t = bk.server_ticks(rec, "window_start", "window_end")
                run_t = bk.server_ticks(rec, "start", "end")
                ws, we = bk.sample(rec, "window_start"), bk.sample(rec, "window_end")
                dt = we["t"] - ws["t"] if ws and we else None
                total = rec.get("lines_total") or 0
                win = round(win_t / rec["clk_tck"] * 1e9 / (lps * dt)) if win_t is not None and lps and dt else None
                per_run = round(run_t / rec["clk_tck"] * 1e9 / total) if run_t is not None and total else None
                srv_pct, ld_pct = (bk.cpu_pct(rec, "window_start", "window_end", who) for who in ("server", "load"))
                with open("/proc/loadavg") as f:
                    la = f.read().split()[0]
                raw.write({"round": r, "scenario": sc, "variant": v, "lps": lps, "p50": rec.get("p50_us"),
                           "p99": rec.get("p99_us"), "errors": rec.get("errors"), "unanswered": rec.get("unanswered"),
                           "load_exit": rec["exit"], "ns_line_window": win, "ns_line_run": per_run,
                           "lines_total": total, "srv_ticks_window": win_t, "srv_ticks_run": run_t,
                           "srv_cpu_pct": None if srv_pct is None else round(srv_pct),
                           "load_cpu_pct": None if ld_pct is None else round(ld_pct), "loadavg": la, "record": rec})
                print(f"{time.strftime('%T')} r{r} ({sc}) {v}: {lps} lines/s p99 {rec.get('p99_us')} us, "
                      f"{win} ns/line (window), {per_run} ns/line (run), srv {bk.fmt(srv_pct, 0)}% "
                      f"load {bk.fmt(ld_pct, 0)}%", file=sys.stderr)


if __name__ == "__main__":
    main()
