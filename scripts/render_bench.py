#!/usr/bin/env python3
"""scripts/render_bench.py: turns the raw records of one scripts/bench run
(target/bench/raw.jsonl) into benchmarks.md and benchmarks.svg. It measures
nothing: every figure comes from the records, so rerunning it gives the
same page.

    scripts/render_bench.py target/bench/raw.jsonl --out target/bench

Python 3 standard library only; why, see scripts/benchkit.py.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402
from benchkit import fmt, median, ratio, sample, server_ticks  # noqa: E402

TITLES = {
    "a": "(a) ping-pong, 1 connection (depth 1)",
    "b": "(b) ping-pong, 50 connections (depth 1)",
    "c": "(c) pipelined, depth 32 on 50 connections",
}
SHORT = {"a": "(a) ping-pong, 1 conn", "b": "(b) ping-pong, 50 conns", "c": "(c) depth 32, 50 conns"}
COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#8cd17d", "#e15759"]
BUSY = 90  # % of a core: at or above, that side bounded the run


class Data:
    def __init__(self, recs: list[dict]):
        self.meta = next(r for r in recs if r["kind"] == "meta")
        self.end = next((r for r in recs if r["kind"] == "end"), {})
        self.recs = recs
        self.servers = self.meta["servers"]
        self.labels = self.meta["labels"]

    def name(self, s: str) -> str:
        return self.labels.get(s, s)

    def of(self, kind: str, **kw) -> list[dict]:
        return [r for r in self.recs if r["kind"] == kind and all(r.get(k) == v for k, v in kw.items())]


def per_line_ns(rec: dict):
    t = server_ticks(rec, "start", "end")
    n = rec.get("lines_total")
    return t / rec["clk_tck"] * 1e9 / n if t is not None and n else None


def by_call(counts: dict, n: int) -> str:
    """One traced run's syscalls per line, by call, adding up to its total
    (the table's syscalls/line): the calls at 0.001 per line or more by
    name, the rest (rarer calls, and any perf did not name) summed."""
    total = counts.get("all", 0) / n
    parts = sorted(((k, v / n) for k, v in counts.items() if k != "all" and v / n >= 0.001),
                   key=lambda kv: -kv[1])
    named = sum(v for _, v in parts)
    shown = [f"{k} {v:.3f}" for k, v in parts]
    rest = total - named
    if rest >= 0.0005:
        shown.append(f"the rest {rest:.3f}")
    text = ", ".join(shown) or "-"
    if named > total * 1.001 + 0.0005:
        # perf's per-call counts and its total disagree: say so, never hide it.
        return f"{text}: **{named:.3f} by call, more than the {total:.3f} counted in all**"
    return f"{text}; {total:.3f} in all"


def rate_figures(d: Data, sc: str, s: str) -> dict:
    runs = [r for r in d.of("rate", scenario=sc, server=s) if not r["traced"]]
    traced = [r for r in d.of("rate", scenario=sc, server=s) if r["traced"]]
    L = [r["load"] for r in runs]
    f = {
        "lps": median(x.get("lines_per_sec") for x in L),
        "span": bk.span(x.get("lines_per_sec") for x in L),
        "p50": median(x.get("p50_us") for x in L),
        "p99": median(x.get("p99_us") for x in L),
        "p999": median(x.get("p999_us") for x in L),
        "err": sum((x.get("errors") or 0) + (x.get("unanswered") or 0) for x in L) if L else None,
        "cpu": median(per_line_ns(x) for x in L),
        "srv": median(bk.cpu_pct(x, "window_start", "window_end") for x in L),
        "ld": median(bk.cpu_pct(x, "window_start", "window_end", "load") for x in L),
        "threads": max((sample(x, "window_end") or {}).get("server", {}).get("threads") or 0 for x in L) if L else None,
        "busy": median(r.get("machine_busy_pct") for r in runs),
        "steal": median(r.get("steal_pct") for r in runs),
        "sys": None, "by_call": "-",
    }
    if traced:
        t = traced[-1]
        n = t["load"].get("lines_total")
        c = t["syscalls"] or {}
        if n:
            f["sys"] = c.get("all", 0) / n
            f["by_call"] = by_call(c, n)
    srv, ld = f["srv"], f["ld"]
    if srv is None or ld is None:
        f["bound"] = "-"
    elif srv >= BUSY and ld >= BUSY:
        f["bound"] = "both CPUs"
    elif srv >= BUSY:
        f["bound"] = "server CPU"
    elif ld >= BUSY:
        f["bound"] = "load tool CPU"
    else:
        f["bound"] = "latency (neither CPU)"
    return f


def render_md(d: Data) -> str:
    m, st = d.meta["machine"], d.meta["settings"]
    qb, qa = d.meta["quiet_before"], d.end.get("quiet_after", {})
    el = d.end.get("elapsed_secs", 0)
    names = ", ".join(d.name(s) for s in d.servers)
    o: list[str] = []
    w = o.append
    w("# Benchmarks")
    w("")
    w(f"{names}: side by side in one run of `scripts/bench` (the driver `scripts/bench.py`, the")
    w("renderer `scripts/render_bench.py`, from the raw records alone). The servers: randline; the")
    w("thread-per-client baseline ([examples/threaded.rs](../examples/threaded.rs)); the tokio peer")
    w("([examples/tokio.rs](../examples/tokio.rs): a task per client, `BufReader`/`BufWriter`) on its")
    w("`current_thread` and its `multi_thread` runtime; and Redis (`redis-server` from Debian, no")
    w("persistence, sent inline `PING` lines, each answered by one line `+PONG`). Every server is pinned")
    w("to CPU 0 and the load tool ([examples/load/](../examples/load/main.rs)) to CPU 1 with `taskset`:")
    w("each server gets one core, so tokio's `multi_thread` runtime starts one worker (its default, one")
    w("per CPU it may run on) and shows what its scheduler costs, not what a second core would give.")
    w(f"Every figure is the median of {st['RUNS']} run(s); each load run measures {st['SECS']} s after a")
    w(f"{st['WARMUP']} s warm-up; everything runs over 127.0.0.1, each run on a fresh server.")
    w("")
    w(f"**These figures come from a {m['nproc']}-core shared virtual machine**: compare servers within this")
    w("one run (the ratios), not with figures from elsewhere. How quiet it was: with nothing of ours")
    w(f"running, the CPUs were {qb['busy_pct']}% busy (steal {qb['steal_pct']}%; load average "
      f"{' '.join(qb['loadavg'])}) in the 5 s before the suite")
    if qa:
        w(f"and {qa['busy_pct']}% busy (steal {qa['steal_pct']}%; load average {' '.join(qa['loadavg'])}) "
          "in the 5 s after it;")
    else:
        w("(no figure after it);")
    w("the `machine busy %` column below is both CPUs' use during each timed run, ours included")
    w("(a quiet machine shows about the server's CPU % + the load tool's, ÷ 2).")
    w("")
    w(f"- date: {m['date']}; commit {m['commit']}; the suite took {el // 60} min {el % 60} s")
    w(f"- machine: `nproc` {m['nproc']}; `lscpu` model name: {m['cpu_model']}; kernel `uname -r` {m['kernel']}")
    w(f"- {m['rustc']}; {m['redis'].split(' sha=')[0] if m['redis'] else 'no Redis'}; Python {m['python']}")
    w("- settings: " + " ".join(f"{k}={v}" for k, v in st.items() if k != "QUICK") +
      ("; QUICK=1 (a smoke run)" if st.get("QUICK") else "") + "; syscalls counted with perf")
    w("")
    w(f"![Throughput and p99 latency of {names} in scenarios (a), (b) and (c)](benchmarks.svg)")
    w("")
    w("## Lines: throughput, latency, syscalls and CPU per line")
    w("")
    w("Columns: answered lines per second in the measured window (median, and the range over the runs);")
    w("latency percentiles from send to answer; errors + lines never answered; (g) syscalls per answered")
    w("line; server CPU time (user + system) per answered line; the CPU use of the server and of the load")
    w(f"tool during the measured window (100% = one core), and so what bounded the run: a side at {BUSY}% or")
    w("more of its core (the server's CPU; the load tool's CPU, then compare CPU per line, not lines/s;")
    w("both), or neither (latency: both wait on each other, as in ping-pong on one connection).")
    figs = {(sc, s): rate_figures(d, sc, s) for sc in TITLES for s in d.servers}
    for sc, title in TITLES.items():
        w("")
        w(f"### {title}")
        w("")
        w("| server | lines/s | range | p50 µs | p99 µs | p99.9 µs | errors | syscalls/line | server CPU ns/line | server CPU % | load tool CPU % | bound by | machine busy % |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
        for s in d.servers:
            f = figs[sc, s]
            rng = f"{fmt(f['span'][0])}–{fmt(f['span'][1])}" if f["span"] else "-"
            w(f"| {d.name(s)} | {fmt(f['lps'])} | {rng} | {fmt(f['p50'])} | {fmt(f['p99'])} | {fmt(f['p999'])} | "
              f"{fmt(f['err'])} | {fmt(f['sys'], 3) if f['sys'] is not None else '-'} | {fmt(f['cpu'])} | "
              f"{fmt(f['srv'], 0)} | {fmt(f['ld'], 0)} | {f['bound']} | {fmt(f['busy'], 0)} |")
        if "randline" in d.servers:
            r = figs[sc, "randline"]
            for s in d.servers:
                if s == "randline":
                    continue
                x = figs[sc, s]
                w(f"| *randline / {d.name(s)}* | {ratio(r['lps'], x['lps'])} | | {ratio(r['p50'], x['p50'])} | "
                  f"{ratio(r['p99'], x['p99'])} | {ratio(r['p999'], x['p999'])} | | {ratio(r['sys'], x['sys'])} | "
                  f"{ratio(r['cpu'], x['cpu'])} | | | | |")
    w("")
    w("(g) Syscalls per answered line, by call (counted in a run of its own, with perf, after the first")
    w("timed run of each; the same run gives the tables' syscalls/line, the figure \"in all\" here; calls")
    w("under 0.001 per line, and any perf does not name, are summed as \"the rest\"):")
    w("")
    for sc in TITLES:
        for s in d.servers:
            w(f"- ({sc}) {d.name(s)}: {figs[sc, s]['by_call']}")

    # (d)
    hold = {r["server"]: r["load"] for r in d.of("hold")}
    w("")
    w("## (d) Idle connections: memory")
    w("")
    w(f"Server RSS (`VmRSS`) 0.5 s after start, before any client, and 1 s after all {fmt(st['HOLD'])} connections")
    w("were answered once and held idle; bytes per connection = the difference ÷ connections held. The")
    w("kernel's own memory for the sockets is not in any RSS: the slab column is the growth of the")
    w("system-wide slab (client and server socket together) per connection, a rough figure on a shared")
    w("machine. Threads and virtual size (`VmSize`: thread stacks are reserved there) while held.")
    w("")
    w("| server | connections held | s to open and answer them | RSS before KiB | RSS held KiB | bytes per connection | kernel slab bytes per connection | threads | VmSize MiB |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    dfig = {}
    for s in d.servers:
        x = hold.get(s)
        if not x:
            w(f"| {d.name(s)} | - | - | - | - | - | - | - | - |")
            continue
        a, b = sample(x, "start") or {}, sample(x, "held") or {}
        sa, sb = a.get("server", {}), b.get("server", {})
        n = x.get("held") or 0
        bpc = (sb["rss_kib"] - sa["rss_kib"]) * 1024 / n if n and sa.get("rss_kib") and sb.get("rss_kib") else None
        kpc = (b["slab_kib"] - a["slab_kib"]) * 1024 / n if n and a.get("slab_kib") and b.get("slab_kib") else None
        dfig[s] = {"bpc": bpc, "open": x.get("connect_secs"), "rss0": sa.get("rss_kib"), "rss": sb.get("rss_kib")}
        vm = sb.get("vm_size_kib")
        w(f"| {d.name(s)} | {fmt(n)} | {fmt(x.get('connect_secs'), 3)} | {fmt(sa.get('rss_kib'))} | {fmt(sb.get('rss_kib'))} | "
          f"{fmt(bpc, 0)} | {fmt(kpc, 0)} | {fmt(sb.get('threads'))} | {fmt(vm / 1024 if vm else None, 1)} |")
    if "randline" in dfig:
        r = dfig["randline"]
        for s in d.servers:
            if s != "randline" and s in dfig:
                x = dfig[s]
                w(f"| *randline / {d.name(s)}* | | {ratio(r['open'], x['open'])} | {ratio(r['rss0'], x['rss0'])} | "
                  f"{ratio(r['rss'], x['rss'])} | {ratio(r['bpc'], x['bpc'])} | | | |")
    mx = d.of("maxhold")
    if mx:
        x = mx[0]["load"]
        a, b = sample(x, "start") or {}, sample(x, "held") or {}
        n = x.get("held") or 0
        if n and a.get("server") and b.get("server"):
            bpc = (b["server"]["rss_kib"] - a["server"]["rss_kib"]) * 1024 / n
            kpc = (b["slab_kib"] - a["slab_kib"]) * 1024 / n
            w("")
            w(f"As many as the open-file limit here allows (hard limit {fmt(m['fd_hard_limit'])}; one run): randline held")
            w(f"{fmt(n)} of {fmt(x.get('conns'))} connections, its RSS going from {fmt(a['server']['rss_kib'])} KiB to "
              f"{fmt(b['server']['rss_kib'])} KiB: {bpc:.0f} bytes per connection. At that rate, 1,000,000 idle")
            w(f"connections would cost randline about {bpc * 1e6 / 1048576:.0f} MiB of RSS, and the kernel about "
              f"{kpc * 1e6 / 1073741824:.1f} GiB of socket memory (client and server")
            w("ends, by the slab growth measured here); it needs an open-file limit above 1,000,000.")

    # (e)
    w("")
    w("## (e) Churn: 4 clients connecting, sending one line, reading it, ending the session")
    w("")
    w("Server CPU per connection: its CPU time over the whole run ÷ connections completed.")
    w("")
    w("| server | connections/s | range | p99 µs per cycle | errors | server CPU µs/connection | server CPU % |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    efig = {}
    for s in d.servers:
        L = [r["load"] for r in d.of("churn", server=s)]
        cps = median(x.get("connections_per_sec") for x in L)
        sp = bk.span(x.get("connections_per_sec") for x in L)
        p99 = median(x.get("p99_us") for x in L)
        err = sum(x.get("errors") or 0 for x in L) if L else None

        def per_conn(x):
            t = server_ticks(x, "start", "end")
            n = x.get("connections")
            return t / x["clk_tck"] * 1e6 / n if t is not None and n else None
        cpu = median(per_conn(x) for x in L)
        pct = median(bk.cpu_pct(x, "start", "drained") for x in L)
        efig[s] = {"cps": cps, "p99": p99, "cpu": cpu}
        rng = f"{fmt(sp[0])}–{fmt(sp[1])}" if sp else "-"
        w(f"| {d.name(s)} | {fmt(cps)} | {rng} | {fmt(p99)} | {fmt(err)} | {fmt(cpu)} | {fmt(pct, 0)} |")
    if "randline" in efig:
        r = efig["randline"]
        for s in d.servers:
            if s != "randline":
                x = efig[s]
                w(f"| *randline / {d.name(s)}* | {ratio(r['cps'], x['cps'])} | | {ratio(r['p99'], x['p99'])} | | "
                  f"{ratio(r['cpu'], x['cpu'])} | |")

    # (f)
    w("")
    w("## (f) Idle, start-up and size")
    w("")
    w(f"CPU time (user + system, `/proc/PID/stat`, in ticks of 1/{bk.TCK} s) and wake-ups (voluntary +")
    w(f"involuntary context switches, summed over `/proc/PID/task/*/status`) in {st['IDLE_SECS']} s with no")
    w("client, from 1 s after start (`load idle`); start-up RSS 1 s after start. Binary: the size of the")
    w("release build of the commit above (tokio's is the example binary; Redis's the installed `redis-server`).")
    w("")
    w("| server | idle CPU ms | idle wake-ups | start-up RSS KiB | threads | binary bytes |")
    w("|---|---:|---:|---:|---:|---:|")
    sizes = d.meta["sizes"]
    ffig = {}
    for s in d.servers:
        x = next((r["load"] for r in d.of("idle", server=s)), None)
        if not x:
            continue
        a, b = sample(x, "start")["server"], sample(x, "end")["server"]
        ms = (b["ticks"] - a["ticks"]) * 1000 / x["clk_tck"]
        wk = b["ctx_switches"] - a["ctx_switches"]
        ffig[s] = {"ms": ms, "wake": wk, "rss": a["rss_kib"]}
        size = sizes.get("tokio" if s.startswith("tokio") else s)
        w(f"| {d.name(s)} | {fmt(ms, 0)} | {fmt(wk, 0)} | {fmt(a['rss_kib'])} | {fmt(a['threads'])} | {fmt(size)} |")

    # targets
    if "randline" in d.servers and "redis" in d.servers:
        R, X = (lambda sc: figs[sc, "randline"]), (lambda sc: figs[sc, "redis"])

        def q(a, b):
            return a / b if a is not None and b else None

        def verdict(v, op, lim):
            if v is None:
                return "-"
            ok = v <= lim if op == "<=" else v >= lim
            if ok:
                return "**met**"
            by = abs(v - lim) / lim * 100
            return f"**missed** by {by:.0f}% ({v:.3f} vs {lim})" if lim < 10 else f"**missed** by {by:.0f}% ({v:,.0f} vs {lim:,})"
        rows = [
            ("(b) server CPU per line ≤ 0.8 × Redis's", q(R("b")["cpu"], X("b")["cpu"]), "<=", 0.8, "×"),
            ("(b) throughput ≥ Redis's", q(R("b")["lps"], X("b")["lps"]), ">=", 1, "×"),
            ("(b) p99 latency ≤ Redis's", q(R("b")["p99"], X("b")["p99"]), "<=", 1, "×"),
            ("(c) throughput ≥ 1.5 × Redis's", q(R("c")["lps"], X("c")["lps"]), ">=", 1.5, "×"),
            ("(c) server CPU per line ≤ 0.5 × Redis's", q(R("c")["cpu"], X("c")["cpu"]), "<=", 0.5, "×"),
            ("(g) syscalls per line in (b) ≤ 2.05", R("b")["sys"], "<=", 2.05, ""),
            ("(g) syscalls per line in (c) ≤ 0.1", R("c")["sys"], "<=", 0.1, ""),
            (f"(d) server RSS per idle connection at {fmt(st['HOLD'])} ≤ 256 bytes",
             dfig.get("randline", {}).get("bpc"), "<=", 256, "bytes"),
            ("(e) churn connections/s ≥ Redis's", q(efig["randline"]["cps"], efig["redis"]["cps"]), ">=", 1, "×"),
            ("(f) idle: zero CPU time", ffig.get("randline", {}).get("ms"), "<=", 0, "ms"),
            ("(f) idle: zero wake-ups", ffig.get("randline", {}).get("wake"), "<=", 0, "count"),
            ("start-up RSS ≤ 2 MiB", ffig.get("randline", {}).get("rss"), "<=", 2048, "KiB"),
        ]
        w("")
        w("## The targets")
        w("")
        w("What randline set out to reach against Redis, and on its own, measured in this run:")
        w("")
        w("| target | measured | |")
        w("|---|---|---|")
        for t, v, op, lim, unit in rows:
            shown = ("-" if v is None else f"{v:.3f}" if unit == "" else f"{v:.2f} ×" if unit == "×"
                     else fmt(v, 0) if unit == "count" else f"{fmt(v, 0)} {unit}")
            w(f"| {t} | {shown} | {verdict(v, op, lim)} |")

    # how
    w("")
    w("## How it was measured")
    w("")
    w("```sh")
    w("scripts/bench     # = python3 scripts/bench.py: builds, copies the binaries to target/bench/bin, measures, renders")
    w(" ".join(f"{k}={v}" for k, v in st.items() if k != "QUICK") + " scripts/bench   # the settings of this run")
    w("scripts/render_bench.py target/bench/raw.jsonl --out target/bench   # re-render only")
    w("```")
    w("")
    w("The commands it ran, as run (PORT: a free port, new for every server; SERVER_PID: the server's")
    w("process id; the load tool's paths shortened to where cargo builds them). randline, threaded and")
    w("tokio ran with `RUST_LOG=warn`, so a per-client log line costs no write in (d) and (e): Redis logs")
    w("nothing per client at its default level. Redis gets `--protected-mode no` because `hold` connects")
    w(f"from 127.0.0.2 (still to 127.0.0.1 only), and `--maxclients 20000` to hold {fmt(st['HOLD'])} clients;")
    w("randline gets `--max-connections-per-ip 0` in (d) for the same reason: all those clients come from")
    w("one address, and its default per-address limit (max-connections / 16) would refuse most of them.")
    w("")
    w("```sh")
    for c in d.end.get("commands", []):
        w(c)
    w("```")
    w("")
    w("What each figure is, and what bounded each run:")
    w("")
    w("- Every load run is one `load ... --json --server-pid SERVER_PID` record; the load tool itself reads")
    w("  `/proc` at fixed points of its run (`samples`: the server's CPU ticks, `VmRSS`, `VmSize`, threads,")
    w("  context switches; its own CPU ticks; the kernel slab) and every wait in it has a timeout (5 s per")
    w("  answer; `rate` drains for at most 6 s after its window; `hold` connects for at most 120 s). The")
    w("  driver bounds every process it starts (the load tool: its seconds + 60 s, then killed).")
    w("- Throughput and latency: the load tool's measured window (`lines_per_sec`, `p50_us`, `p99_us`, `p999_us`).")
    w("- Server CPU per line: the server's utime + stime between the `start` sample (before connecting) and")
    w("  the `end` sample (after the connections closed and the server is back to its threads at start,")
    w("  + 0.3 s), ÷ every line answered in that span (`lines_total`: warm-up, window and drain).")
    w("- Server and load tool CPU % (what bounded the run): their CPU ticks between the `window_start`")
    w(f"  and `window_end` samples ÷ the time between them; a side at {BUSY}% or more of its core bounded it.")
    w("- (g) syscalls per line: `perf stat -e raw_syscalls:sys_enter` on the server (every syscall of any of")
    w("  its threads), and by name for common calls (the rest: \"other\"), in a run of its own right after the")
    w("  first timed runs: counting slows the server at every syscall and context switch, so no timed figure")
    w("  comes from a counted run. perf is attached 1 s before the load starts and stopped after the load")
    w("  tool's `end` sample; the count is ÷ `lines_total` of that run.")
    w("- (d): `hold --secs 2`: the `held` sample is 1 s after every connection was answered; then the tool")
    w("  releases them (with a reset) by itself. RSS before: the `start` sample, 0.5 s after the server started.")
    w("- (e): `churn`'s `connections_per_sec` over its `--secs`; a cycle is connect, one line, its answer,")
    w("  `STOP` (Redis: `QUIT`), the server's close; bounded by the load tool's CPU and the round trips.")
    w("- (f): `load idle`, started 1 s after the server: its `start` and `end` samples, `--secs` apart.")
    w("- Machine busy %: `/proc/stat`, both CPUs, over each timed run, read by the driver.")
    w("- Raw records of every run, one JSON object per line: `target/bench/raw.jsonl`.")
    return "\n".join(o) + "\n"


def short(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:.3g}k"
    if v >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def nice(v: float) -> float:
    if v <= 0:
        return 1
    import math
    e = 10 ** math.floor(math.log10(v))
    x = v / e
    for step in (1, 2, 2.5, 5, 10):
        if x <= step:
            return step * e
    return 10 * e


def render_svg(d: Data) -> str:
    st = d.meta["settings"]
    n = len(d.servers)
    bw = 44
    cw = 40 + n * (bw + 8)
    left, ch = 70, 200
    W = left + 3 * (cw + 20) + 10
    H = 640
    o: list[str] = []
    w = o.append
    w('<?xml version="1.0" encoding="UTF-8"?>')
    w(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">')
    w(f'<rect width="{W}" height="{H}" fill="white"/>')
    w(f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">'
      f'{escape(", ".join(d.name(s) for s in d.servers))}: medians of {st["RUNS"]} run(s) of {st["SECS"]} s</text>')
    lx = W / 2 - n * 150 / 2
    for k, s in enumerate(d.servers):
        w(f'<rect x="{lx + k * 150:.0f}" y="34" width="12" height="12" fill="{COLOURS[k % 5]}"/>'
          f'<text x="{lx + k * 150 + 16:.0f}" y="45">{escape(d.name(s))}</text>')
    figs = {(sc, s): rate_figures(d, sc, s) for sc in TITLES for s in d.servers}
    for row, (key, label) in enumerate((("lps", "answered lines/s (higher is better)"),
                                        ("p99", "p99 latency, µs (lower is better)"))):
        top = 84 + row * 270
        w(f'<text x="16" y="{top + ch / 2}" transform="rotate(-90 16 {top + ch / 2})" text-anchor="middle" font-weight="bold">{label}</text>')
        for g, (sc, title) in enumerate(TITLES.items()):
            x0 = left + g * (cw + 20)
            vals = [figs[sc, s][key] for s in d.servers]
            hi = nice(max([v for v in vals if v] or [1]))
            w(f'<text x="{x0 + cw / 2}" y="{top - 8}" text-anchor="middle" font-weight="bold">{SHORT[sc]}</text>')
            for t in range(5):
                y = top + ch - ch * t / 4
                w(f'<line x1="{x0}" x2="{x0 + cw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{"#333" if t == 0 else "#ddd"}"/>')
                w(f'<text x="{x0 - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{short(hi * t / 4)}</text>')
            for k, (s, v) in enumerate(zip(d.servers, vals)):
                x = x0 + 20 + k * (bw + 8)
                if v is None:
                    w(f'<text x="{x + bw / 2}" y="{top + ch - 4}" text-anchor="middle" font-size="10">n/a</text>')
                    continue
                bh = ch * v / hi
                w(f'<rect x="{x}" y="{top + ch - bh:.1f}" width="{bw}" height="{bh:.1f}" fill="{COLOURS[k % 5]}">'
                  f'<title>{escape(title)} {escape(d.name(s))}: {v}</title></rect>')
                w(f'<text x="{x + bw / 2}" y="{top + ch - bh - 4:.1f}" text-anchor="middle" font-size="10">{short(v)}</text>')
    w(f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle" font-size="11" fill="#555">Server on CPU 0, load tool on CPU 1, '
      f'loopback TCP; a {d.meta["machine"]["nproc"]}-core shared machine. Each chart has its own linear scale.</text>')
    w("</svg>")
    return "\n".join(o) + "\n"


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    raw = Path(args[0])
    out = Path(args[args.index("--out") + 1]) if "--out" in args else raw.parent
    d = Data(bk.read_raw(raw))
    (out / "benchmarks.md").write_text(render_md(d))
    (out / "benchmarks.svg").write_text(render_svg(d))
    print(f"rendered {out / 'benchmarks.md'} and {out / 'benchmarks.svg'}", file=sys.stderr)


if __name__ == "__main__":
    main()
