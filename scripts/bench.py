#!/usr/bin/env python3
"""scripts/bench.py: randline, the thread-per-client baseline
(examples/threaded.rs), the tokio peer (examples/tokio.rs) on its
current_thread and multi_thread runtimes, and Redis, side by side in one
run on this machine. Writes every run's record to target/bench/raw.jsonl,
then renders docs/benchmarks.md and docs/benchmarks.svg from that file
alone (scripts/render_bench.py; rerun it to re-render without measuring).

    scripts/bench                 # RUNS=3 SECS=5: about 12 minutes
    QUICK=1 scripts/bench         # a smoke run: 1 run, 2 s per measurement
    scripts/bench --no-docs       # measure and render into target/bench only

Settings (environment): RUNS=3 runs of (a) (b) (c) (e); SECS=5 measured
seconds per load run after WARMUP=1; IDLE_SECS=10 for (f); HOLD=10000 idle
connections for (d); MAXHOLD (default: the open-file limit - 100, at most
50,000) for the one randline run that holds as many as it can; SERVERS
(default: randline threaded tokio-current tokio-multi redis).

Scenarios, every server in turn, a fresh server each time on a free
127.0.0.1 port, pinned to CPU 0, the load tool (examples/load/) on CPU 1:
  (a) ping-pong, 1 connection   (b) ping-pong, 50 connections
  (c) pipelined, depth 32, 50 connections
  (g) during (a) (b) (c): server CPU per line and CPU % (from the load
      tool's /proc samples); syscalls per line in one more run of each with
      perf on the server (first run only: counting slows the server)
  (d) HOLD idle connections: server RSS before and while held
  (e) churn, 4 clients: connections/s
  (f) IDLE_SECS with no client: server CPU time and wake-ups; start-up RSS

Installs nothing. Needs cargo, taskset and lscpu (util-linux), redis-server,
perf with syscall tracepoints (Debian: linux-perf; as root), 2 CPUs.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402

SCENARIOS = {"a": (1, 1), "b": (50, 1), "c": (50, 32)}


def setting(name: str, default: int) -> int:
    v = os.environ.get(name, str(default))
    if not v.isdigit():
        bk.die(f"scripts/bench: {name} must be a whole number, not '{v}'", 2)
    return int(v)


def main() -> None:
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    docs = "--no-docs" not in args
    unknown = [a for a in args if a != "--no-docs"]
    if unknown:
        bk.die(f"scripts/bench: unexpected argument {unknown[0]!r} (settings are environment variables; see --help)", 2)

    quick = os.environ.get("QUICK") == "1"
    runs = 1 if quick else setting("RUNS", 3)
    secs = 2 if quick else setting("SECS", 5)
    warmup = setting("WARMUP", 1)
    idle_secs = 2 if quick else setting("IDLE_SECS", 10)
    hold = setting("HOLD", 10000)
    fd_limit = bk.machine()["fd_hard_limit"]
    fd_limit = 1048576 if fd_limit < 0 else fd_limit
    maxhold = setting("MAXHOLD", min(fd_limit - 100, 50000))
    servers = os.environ.get("SERVERS", " ".join(bk.SERVERS)).split()
    for s in servers:
        if s not in bk.SERVERS:
            bk.die(f"scripts/bench: unknown server '{s}' in SERVERS (known: {' '.join(bk.SERVERS)})", 2)
    if runs < 1 or secs < 1 or hold < 1:
        bk.die("scripts/bench: RUNS, SECS and HOLD must be at least 1", 2)
    if hold > fd_limit - 100:
        bk.die(f"scripts/bench: HOLD={hold} needs an open-file limit above {hold + 100}; the hard limit is {fd_limit}")

    missing = [f"{t} ({how})" for t, how in (
        ("cargo", "rustup"), ("taskset", "apt-get install -y util-linux"),
        ("lscpu", "apt-get install -y util-linux"),
        ("redis-server", "apt-get install -y redis-server"))
        if not bk.shutil.which(t) and (t != "redis-server" or "redis" in servers)]
    events = bk.perf_events()
    if events is None:
        missing.append("perf with syscall tracepoints (apt-get install -y linux-perf; as root)")
    if missing:
        bk.die("scripts/bench needs, and will not install:\n  " + "\n  ".join(missing))
    if (os.cpu_count() or 1) < 2:
        bk.die("scripts/bench needs 2 CPUs (server on CPU 0, load tool on CPU 1)")

    out = bk.ROOT / "target/bench"
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / "lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        bk.die(f"scripts/bench: another scripts/bench is running ({out / 'lock'})")
    bins = bk.build(out)
    cmds = bk.Commands(out)
    raw = bk.Raw(out / "raw.jsonl")
    began = time.monotonic()

    def el() -> str:
        return f"{time.monotonic() - began:5.0f}s"

    print(f"{el()} how busy the machine is before the suite (5 s, nothing of ours running)", file=sys.stderr)
    quiet_before = bk.background(5)
    sizes = {"randline": os.path.getsize(bins["randline"]), "threaded": os.path.getsize(bins["threaded"]),
             "tokio": os.path.getsize(bins["tokio"])}
    redis_path = bk.shutil.which("redis-server")
    if redis_path:
        sizes["redis"] = os.path.getsize(os.path.realpath(redis_path))
    raw.write({"kind": "meta", "machine": bk.machine(), "quiet_before": quiet_before,
               "settings": {"RUNS": runs, "SECS": secs, "WARMUP": warmup, "IDLE_SECS": idle_secs,
                            "HOLD": hold, "MAXHOLD": maxhold, "QUICK": quick},
               "servers": servers, "labels": bk.SERVERS, "sizes": sizes, "perf_events": events})

    def logf(name: str) -> Path:
        return out / f"{name}.log"

    def rate(run: int, sc: str, s: str, traced: bool) -> None:
        conns, depth = SCENARIOS[sc]
        with bk.Server(s, bins, logf("server")) as srv:
            cmds.note(srv.cmd, srv)
            tracer = bk.Tracer(events, srv, out, cmds) if traced else None
            b0 = bk.cpu_busy()
            rec = bk.load(bins, cmds, "rate", srv, "--conns", conns, "--depth", depth, "--secs", secs,
                          "--warmup", warmup, "--line", bk.line_for(s), timeout=secs + warmup + 60,
                          stderr_path=logf("load"))
            b1 = bk.cpu_busy()
            calls = tracer.finish() if tracer else None
        total = max(1, b1[2] - b0[2])
        row = {"kind": "rate", "run": run, "scenario": sc, "server": s, "traced": traced,
               "load": rec, "syscalls": calls,
               "machine_busy_pct": round(100 * (b1[0] - b0[0]) / total, 1),
               "steal_pct": round(100 * (b1[1] - b0[1]) / total, 1)}
        raw.write(row)
        lines = rec.get("lines_total") or 0
        if traced:
            per = calls["all"] / lines if lines else None
            print(f"{el()} ({sc}) {s}, counted with perf: {bk.fmt(per)} syscalls/line", file=sys.stderr)
        else:
            t = bk.server_ticks(rec, "start", "end")
            ns = t / rec["clk_tck"] * 1e9 / lines if lines and t is not None else None
            print(f"{el()} ({sc}) {s} run {run}: {bk.fmt(rec.get('lines_per_sec'))} lines/s, "
                  f"p99 {bk.fmt(rec.get('p99_us'))} µs, {bk.fmt(ns)} ns/line, errors {rec.get('errors')}",
                  file=sys.stderr)

    def churn(run: int, s: str) -> None:
        with bk.Server(s, bins, logf("server")) as srv:
            cmds.note(srv.cmd, srv)
            rec = bk.load(bins, cmds, "churn", srv, "--conns", 4, "--secs", secs, "--line", bk.line_for(s),
                          "--stop", bk.stop_for(s), timeout=secs + 60, stderr_path=logf("load"))
        raw.write({"kind": "churn", "run": run, "server": s, "load": rec})
        print(f"{el()} (e) {s} run {run}: {bk.fmt(rec.get('connections_per_sec'))} connections/s, "
              f"errors {rec.get('errors')}", file=sys.stderr)

    def hold_run(s: str, n: int, kind: str) -> None:
        # Every `hold` connection comes from 127.0.0.2 (10,000 per source
        # address): randline's default --max-connections-per-ip (its
        # max-connections / 16) would refuse most of them.
        extra = ("--max-connections-per-ip", "0") if s == "randline" else ()
        with bk.Server(s, bins, logf("server"), extra=extra) as srv:
            cmds.note(srv.cmd, srv)
            time.sleep(0.5)
            # 2 s: the `held` sample is taken 1 s after every connection is answered.
            rec = bk.load(bins, cmds, "hold", srv, "--conns", n, "--secs", 2, "--line", bk.line_for(s),
                          timeout=300, stderr_path=logf("load"))
        raw.write({"kind": kind, "server": s, "load": rec})
        a, b = bk.sample(rec, "start"), bk.sample(rec, "held")
        bpc = None
        if a and b and rec.get("held"):
            bpc = (b["server"]["rss_kib"] - a["server"]["rss_kib"]) * 1024 / rec["held"]
        print(f"{el()} ({'d' if kind == 'hold' else 'd, max'}) {s}: held {rec.get('held')} of {n} "
              f"in {rec.get('connect_secs')} s, {bk.fmt(bpc)} bytes/connection", file=sys.stderr)

    def idle(s: str) -> None:
        with bk.Server(s, bins, logf("server")) as srv:
            cmds.note(srv.cmd, srv)
            time.sleep(1)
            rec = bk.load(bins, cmds, "idle", srv, "--secs", idle_secs, timeout=idle_secs + 30)
        raw.write({"kind": "idle", "server": s, "load": rec})
        t = bk.server_ticks(rec, "start", "end")
        print(f"{el()} (f) {s}: {t} ticks in {idle_secs} s", file=sys.stderr)

    for run in range(1, runs + 1):
        for sc in SCENARIOS:
            for s in servers:
                rate(run, sc, s, False)
            if run == 1:
                for s in servers:
                    rate(run, sc, s, True)
        for s in servers:
            churn(run, s)
    for s in servers:
        hold_run(s, hold, "hold")
    if "randline" in servers and maxhold > hold:
        hold_run("randline", maxhold, "maxhold")
    for s in servers:
        idle(s)

    elapsed = time.monotonic() - began
    print(f"{el()} how busy the machine is after the suite (5 s)", file=sys.stderr)
    raw.write({"kind": "end", "elapsed_secs": round(elapsed), "quiet_after": bk.background(5),
               "commands": cmds.seen})
    raw.f.close()

    render = [sys.executable, str(bk.ROOT / "scripts/render_bench.py"), str(out / "raw.jsonl"),
              "--out", str(out)]
    subprocess.run(render, check=True, timeout=120)
    if docs:
        for f in ("benchmarks.md", "benchmarks.svg"):
            bk.shutil.copy2(out / f, bk.ROOT / "docs" / f)
        print(f"wrote docs/benchmarks.md and docs/benchmarks.svg ({elapsed / 60:.0f} min "
              f"{elapsed % 60:.0f} s); raw records: {out / 'raw.jsonl'}", file=sys.stderr)


if __name__ == "__main__":
    main()
