#!/usr/bin/env python3
"""scripts/models.py: the event loop (randline) and a thread per client
(examples/threaded.rs), and with MODELS=... the tokio peer too, side by side
on this machine in one run, with the project's load tool (examples/load/).
Writes every run's record to target/models/raw.jsonl, docs/models.svg, and
prints Markdown tables for docs/models.md.

    scripts/models                              # RUNS=3 SECS=3: about 4 minutes
    scripts/models --no-docs                    # leave docs/models.svg alone
    MODELS="randline threaded tokio-current" scripts/models

For each model, a fresh server on a free 127.0.0.1 port each time
(RUST_LOG=warn), pinned to CPU 0; the load tool on CPU 1:
  1. idle clients: `load hold` N = 1,000 and 10,000 connections (each
     answered once, then held); server RSS before and while held, its
     threads, its virtual size (VmSize: the thread stacks).
  2. ping-pong (`load rate --depth 1`) with 10 and 500 connections: lines/s,
     p50 and p99 latency, server CPU time per line.
  3. one client that never reads: it sends 20 MB of lines and reads nothing
     for 8 s; meanwhile 10 other clients are measured as in 2, and the
     server's RSS is read mid-stall (the rate run's `window_end` sample).
Medians over RUNS (1 and 3 are one run each: they barely vary).

Installs nothing. Needs: cargo, taskset (util-linux), 2 CPUs. The driver is
scripts/benchkit.py (Python 3 standard library; why, there).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402
from benchkit import fmt, median, sample, server_ticks  # noqa: E402


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    runs, secs = (int(os.environ.get(k, d)) for k, d in (("RUNS", "3"), ("SECS", "3")))
    models = os.environ.get("MODELS", "randline threaded").split()
    out = bk.ROOT / "target/models"
    bins = bk.build(out)
    cmds = bk.Commands(out)
    raw = bk.Raw(out / "raw.jsonl")
    raw.write({"kind": "meta", "machine": bk.machine(), "settings": {"RUNS": runs, "SECS": secs},
               "models": models, "quiet_before": bk.background(3)})
    log = out / "server.log"

    def idle(m: str, n: int) -> None:
        with bk.Server(m, bins, log) as srv:
            time.sleep(0.3)
            rec = bk.load(bins, cmds, "hold", srv, "--conns", n, "--secs", 2, timeout=300)
        raw.write({"kind": "idle", "model": m, "conns": n, "load": rec})

    def rate(m: str, conns: int, kind: str, srv: bk.Server) -> None:
        rec = bk.load(bins, cmds, "rate", srv, "--conns", conns, "--depth", 1, "--warmup", 0,
                      "--secs", secs, timeout=secs + 60)
        raw.write({"kind": kind, "model": m, "conns": conns, "load": rec})

    for r in range(1, runs + 1):
        for m in models:
            print(f"run {r}: {m}", file=sys.stderr)
            if r == 1:
                idle(m, 1000)
                idle(m, 10000)
            for c in (10, 500):
                with bk.Server(m, bins, log) as srv:
                    rate(m, c, "rate", srv)
    for m in models:
        print(f"{m} with a client that never reads", file=sys.stderr)
        with bk.Server(m, bins, log) as srv:
            bad = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            bad.settimeout(30)
            # 20 MB of empty lines, sent by a thread (it blocks once the
            # server stops reading); read only after 8 s.
            sender = threading.Thread(target=lambda: _send_quietly(bad, b"\n" * 20_000_000), daemon=True)
            sender.start()
            time.sleep(2)
            rate(m, 10, "stalled", srv)
            time.sleep(max(0.0, 8 - 2 - secs))
            bad.shutdown(socket.SHUT_RDWR)
            bad.close()
            sender.join(5)
    raw.write({"kind": "end", "commands": cmds.seen})
    raw.f.close()
    render(bk.read_raw(out / "raw.jsonl"))


def _send_quietly(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass


def render(recs: list[dict]) -> None:
    meta = next(r for r in recs if r["kind"] == "meta")
    models = meta["models"]

    def get(kind, m, conns, f):
        return median(f(r["load"]) for r in recs if r["kind"] == kind and r["model"] == m and r["conns"] == conns)

    def bpc(x):
        a, b = sample(x, "start"), sample(x, "held")
        return (b["server"]["rss_kib"] - a["server"]["rss_kib"]) * 1024 / x["held"] if x.get("held") else None

    def held(x, k):
        return (sample(x, "held") or {}).get("server", {}).get(k)

    def ns(x):
        t = server_ticks(x, "start", "end")
        return t / x["clk_tck"] * 1e9 / x["lines_total"] if t is not None and x.get("lines_total") else None

    print()
    print("| idle clients | " + " | ".join(f"{m}: bytes/client" for m in models) + " | "
          + " | ".join(f"{m}: threads, VmSize KiB" for m in models) + " |")
    print("|---" * (1 + 2 * len(models)) + "|")
    for n in (1000, 10000):
        print(f"| {fmt(n)} | " + " | ".join(fmt(get("idle", m, n, bpc), 0) for m in models) + " | "
              + " | ".join(f"{fmt(get('idle', m, n, lambda x: held(x, 'threads')))}, "
                           f"{fmt(get('idle', m, n, lambda x: held(x, 'vm_size_kib')))}" for m in models) + " |")
    print()
    print("| ping-pong | " + " | ".join(f"{m} lines/s" for m in models) + " | "
          + " | ".join(f"{m} p50 / p99 µs" for m in models) + " | "
          + " | ".join(f"{m} CPU ns/line" for m in models) + " |")
    print("|---" * (1 + 3 * len(models)) + "|")
    for kind, c, name in (("rate", 10, "10 clients"), ("rate", 500, "500 clients"),
                          ("stalled", 10, "10 clients + 1 that never reads")):
        print(f"| {name} | " + " | ".join(fmt(get(kind, m, c, lambda x: x.get("lines_per_sec"))) for m in models) + " | "
              + " | ".join(f"{fmt(get(kind, m, c, lambda x: x.get('p50_us')))} / {fmt(get(kind, m, c, lambda x: x.get('p99_us')))}"
                           for m in models) + " | "
              + " | ".join(fmt(get(kind, m, c, ns)) for m in models) + " |")
    print()
    for m in models:
        x = next(r["load"] for r in recs if r["kind"] == "stalled" and r["model"] == m)
        s = (sample(x, "window_end") or {}).get("server", {})
        print(f"server RSS while one client never reads, {m}: {fmt(s.get('rss_kib'))} KiB, {s.get('threads')} threads")
    mc = meta["machine"]
    print()
    print(f"medians of {meta['settings']['RUNS']} runs ({meta['settings']['SECS']} s each; idle: 1 run); "
          f"{mc['nproc']} CPUs ({mc['cpu_model']}); {mc['date']}; machine {meta['quiet_before']['busy_pct']}% busy before")

    # The plot: bytes per idle client (log scale) and p99 at 500 clients.
    import math
    colours = ["#2a7ab0", "#c0504d", "#59a14f", "#8cd17d"]
    b = [get("idle", m, 10000, bpc) or 1 for m in models]
    p = [get("rate", m, 500, lambda x: x.get("p99_us")) or 0 for m in models]
    pm = max(p) or 1
    h = 120 + 64 * len(models)
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="640" height="{h}" font-family="sans-serif" font-size="13">',
         f'<rect width="640" height="{h}" fill="white"/>',
         '<text x="20" y="24" font-weight="bold">Memory per idle client (10,000 held; log scale)</text>']
    y = 40
    for k, m in enumerate(models):
        lb = math.log10(max(b[k], 1))
        o.append(f'<rect x="110" y="{y}" width="{lb * 100:.0f}" height="24" fill="{colours[k % 4]}"/>'
                 f'<text x="20" y="{y + 17}">{m}</text><text x="{116 + lb * 100:.0f}" y="{y + 17}">{b[k]:.0f} B</text>')
        y += 32
    y += 24
    o.append(f'<text x="20" y="{y}" font-weight="bold">p99 latency, ping-pong, 500 clients</text>')
    y += 16
    for k, m in enumerate(models):
        o.append(f'<rect x="110" y="{y}" width="{p[k] / pm * 400:.0f}" height="24" fill="{colours[k % 4]}"/>'
                 f'<text x="20" y="{y + 17}">{m}</text><text x="{116 + p[k] / pm * 400:.0f}" y="{y + 17}">{p[k]} µs</text>')
        y += 32
    o.append(f'<text x="20" y="{h - 15}" fill="#666">scripts/models; see docs/models.md for the machine and the commands</text></svg>')
    svg = bk.ROOT / "target/models/models.svg"
    svg.write_text("\n".join(o) + "\n")
    if "--no-docs" not in sys.argv[1:]:
        bk.shutil.copy2(svg, bk.ROOT / "docs/models.svg")
        print("wrote docs/models.svg", file=sys.stderr)


if __name__ == "__main__":
    main()
