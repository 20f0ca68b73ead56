#!/usr/bin/env python3
"""scripts/reuseport_bench.py: throughput of 1 and of 2 randline processes
sharing one port with --reuse-port, side by side, alternating, on this
machine.

    scripts/reuseport-bench            # ROUNDS=3 SECS=5: about 2 minutes

Each round starts fresh servers (N = 1, then 2, all with --reuse-port on the
same 127.0.0.1 port, RUST_LOG=warn) and runs the project's load tool
(examples/load/) against the port: ping-pong (50 connections, 1 line in
flight each) and pipelined (50 connections, 32 lines in flight). Nothing is
pinned: with N = 2 the servers and the load tool share the cores as the
scheduler sees fit, which is what a real one-process-per-core setup does.
Prints medians and ranges of answered lines/s as a Markdown table; every
record goes to target/reuseport-bench/raw.jsonl. Beware: on a 2-core
machine the load tool needs a core too, so this understates what 2
processes give on a machine with cores to spare.

Installs nothing. The driver is scripts/benchkit.py (Python 3 standard
library; why, there).
"""

from __future__ import annotations

import os
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
    rounds, secs = (int(os.environ.get(k, d)) for k, d in (("ROUNDS", "3"), ("SECS", "5")))
    out = bk.ROOT / "target/reuseport-bench"
    bins = bk.build(out, ("randline", "load"))
    cmds = bk.Commands(out)
    raw = bk.Raw(out / "raw.jsonl")
    raw.write({"kind": "meta", "machine": bk.machine(), "settings": {"ROUNDS": rounds, "SECS": secs}})
    for r in range(1, rounds + 1):
        for n in (1, 2):
            for depth in (1, 32):
                port = bk.free_port()
                servers = [bk.Server("randline", bins, out / f"server{i}.log", cpu=None,
                                     extra=("--reuse-port",), port=port) for i in range(n)]
                time.sleep(0.3)  # the second one is listening too
                print(f"round {r}: {n} process(es), depth {depth}", file=sys.stderr)
                rec = bk.load(bins, cmds, "rate", servers[0], "--conns", 50, "--depth", depth,
                              "--warmup", 1, "--secs", secs, cpu=None, timeout=secs + 60)
                for s in servers:
                    s.stop()
                raw.write({"kind": "rate", "round": r, "processes": n, "depth": depth, "load": rec})
    raw.f.close()
    recs = bk.read_raw(out / "raw.jsonl")

    def col(n, d):
        return [x["load"].get("lines_per_sec") for x in recs if x["kind"] == "rate" and x["processes"] == n and x["depth"] == d]
    print()
    print("| load (50 connections) | 1 process, lines/s | 2 processes, lines/s | 2 / 1 |")
    print("|---|---|---|---|")
    for d in (1, 32):
        a, b = median(col(1, d)), median(col(2, d))
        sa, sb = span(col(1, d)), span(col(2, d))
        name = "ping-pong" if d == 1 else "pipelined, 32 in flight"
        print(f"| {name} | {fmt(a)} ({fmt(sa[0])}–{fmt(sa[1])}) | {fmt(b)} ({fmt(sb[0])}–{fmt(sb[1])}) | {bk.ratio(b, a)} |")
    m = recs[0]["machine"]
    print()
    print(f"medians of {rounds} rounds of {secs} s; {m['nproc']} CPUs ({m['cpu_model']}); {m['date']}")


if __name__ == "__main__":
    main()
