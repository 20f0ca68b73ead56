"""benchkit: the driver the benchmark scripts share (scripts/bench.py,
scripts/models.py, scripts/reuseport_bench.py, scripts/trace_cost.py).

Why Python 3 and only its standard library: the driver starts and stops
processes, waits with timeouts, reads the load tool's JSON records, runs
perf and reads its CSV, takes medians and writes Markdown and SVG. That is
subprocess, json, statistics and string formatting: all in the standard
library of the Python 3 these machines already have (ripgrep's benchsuite
is Python for the same reasons). Nothing to build, no dependency to pin,
and no change to Cargo.toml (a second crate would need a workspace, in a
manifest other people edit), while `cargo run --release -- 8001` keeps
running the server. The load tool itself stays in Rust
(examples/load/): it is the part whose own cost must stay small and
known. The driver never reads /proc for a server's figures: the load tool
samples them itself (`--server-pid`) and puts them in its record; the
driver reads only /proc/stat and /proc/loadavg, for how busy the machine
was, and /proc/net/tcp, to know when a server listens.

Every process started here is tracked and ended (SIGTERM, then SIGKILL)
when the script exits; every wait has a timeout.
"""

from __future__ import annotations

import atexit
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TCK = os.sysconf("SC_CLK_TCK")

# ---------------------------------------------------------------------------
# processes: every one started is tracked, and ended at exit
# ---------------------------------------------------------------------------

_children: list[subprocess.Popen] = []


def _end_all() -> None:
    for p in _children:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 2
    for p in _children:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


atexit.register(_end_all)


def _on_signal(signum, _frame):
    print(f"benchkit: interrupted (signal {signum})", file=sys.stderr)
    sys.exit(130)


signal.signal(signal.SIGTERM, _on_signal)


def spawn(cmd: list[str], **kw) -> subprocess.Popen:
    p = subprocess.Popen([str(c) for c in cmd], **kw)
    _children.append(p)
    return p


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 10) -> int | None:
    """Ends `p` with `sig`, then SIGKILL after `wait` seconds; its exit code."""
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(wait)
        except subprocess.TimeoutExpired:
            print(f"benchkit: pid {p.pid} ignored signal {sig}: killed", file=sys.stderr)
            p.kill()
            p.wait()
    if p in _children:
        _children.remove(p)
    return p.returncode


def die(msg: str, code: int = 1) -> None:
    print(msg, file=sys.stderr)
    sys.exit(code)


# ---------------------------------------------------------------------------
# the binaries
# ---------------------------------------------------------------------------


def build(out: Path, names=("randline", "threaded", "tokio", "load")) -> dict[str, Path]:
    """`cargo build --release --examples --bins`, then copies the binaries
    to out/bin, so a rebuild meanwhile (someone else's) changes nothing."""
    cmd = ["cargo", "build", "--release", "--locked", "--examples", "--bins"]
    print("building: " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=1800)
    (out / "bin").mkdir(parents=True, exist_ok=True)
    bins = {}
    for n in names:
        src = ROOT / "target/release" / n if n == "randline" else ROOT / "target/release/examples" / n
        dst = out / "bin" / n
        tmp = dst.with_suffix(".new")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        bins[n] = dst
    return bins


# ---------------------------------------------------------------------------
# servers
# ---------------------------------------------------------------------------

# name: (label in tables, how it answers: "line" (STOP) or "redis" (PING/QUIT))
SERVERS = {
    "randline": "randline",
    "threaded": "threaded",
    "tokio-current": "tokio current_thread",
    "tokio-multi": "tokio multi_thread",
    "redis": "Redis",
}


def line_for(server: str) -> str:
    return "PING" if server == "redis" else "x"  # Redis answers +PONG


def stop_for(server: str) -> str:
    return "QUIT" if server == "redis" else "STOP"


def server_cmd(name: str, bins: dict[str, Path], port: int, extra=()) -> list[str]:
    addr = f"127.0.0.1:{port}"
    if name == "randline":
        return [bins["randline"], "--listen", addr, *extra]
    if name == "threaded":
        return [bins["threaded"], "--listen", addr, *extra]
    if name == "tokio-current":
        return [bins["tokio"], "--listen", addr, "--runtime", "current", *extra]
    if name == "tokio-multi":
        return [bins["tokio"], "--listen", addr, "--runtime", "multi", *extra]
    if name == "redis":
        return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
                "--maxclients", "20000", *extra]
    raise ValueError(name)


_next_port = 20000 + os.getpid() % 10000


def free_port() -> int:
    """A port below the ephemeral range that nothing is bound to."""
    global _next_port
    for _ in range(12000):
        _next_port = 20001 if _next_port >= 31999 else _next_port + 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", _next_port))
                return _next_port
            except OSError:
                continue
    die("benchkit: no free port in 20001-31999")
    return 0


def listening(port: int) -> bool:
    """Whether a socket listens on `port` (state 0A in /proc/net/tcp):
    without connecting, which a server would count as a client."""
    want = f":{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            if parts[1].endswith(want) and parts[3] == "0A":
                return True
    return False


class Server:
    """A fresh server on a free 127.0.0.1 port, pinned to `cpu` (None: not
    pinned), with RUST_LOG=warn: per-client log lines would cost randline,
    threaded and tokio a write per connection; Redis logs none."""

    def __init__(self, name: str, bins: dict[str, Path], log: Path, cpu: int | None = 0,
                 extra=(), port: int | None = None, env=None):
        self.name = name
        for attempt in range(5):
            self.port = port or free_port()
            self.addr = f"127.0.0.1:{self.port}"
            cmd = server_cmd(name, bins, self.port, extra)
            self.cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + [str(c) for c in cmd]
            e = {**os.environ, "RUST_LOG": "warn", **(env or {})}
            self.log = open(log, "w")
            self.proc = spawn(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=e)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if listening(self.port):
                    return
                time.sleep(0.05)
            stop(self.proc)
            self.log.close()
            text = Path(log).read_text(errors="replace")
            if "in use" not in text.lower() or port:
                die(f"benchkit: {name} did not start; its log:\n{text}")
        die(f"benchkit: {name} found no free port")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def server_pid(server: Server) -> int:
    """The server process itself (taskset execs it: the same pid)."""
    return server.pid


# ---------------------------------------------------------------------------
# the load tool
# ---------------------------------------------------------------------------


class Commands:
    """The command lines as run, made generic (PORT, SERVER_PID), in order,
    each once: for the 'How it was measured' section."""

    def __init__(self, out: Path):
        self.out = out
        self.seen: list[str] = []

    def note(self, cmd, server: Server | None = None) -> str:
        words = [str(c) for c in cmd]
        text = shlex.join(words)
        text = text.replace(str(self.out / "bin" / "load"), "target/release/examples/load")
        text = text.replace(str(self.out / "bin" / "threaded"), "target/release/examples/threaded")
        text = text.replace(str(self.out / "bin" / "tokio"), "target/release/examples/tokio")
        text = text.replace(str(self.out / "bin" / "randline"), "target/release/randline")
        if server is not None:
            text = text.replace(f"127.0.0.1:{server.port}", "127.0.0.1:PORT")
            text = text.replace(f"--port {server.port} ", "--port PORT ")
            text = text.replace(f"--server-pid {server.pid}", "--server-pid SERVER_PID")
            text = text.replace(f"-p {server.pid}", "-p SERVER_PID")
        if text not in self.seen:
            self.seen.append(text)
        return text


def load(bins, cmds: Commands, mode: str, server: Server | None, *args, cpu: int | None = 1,
         timeout: float = 120, stderr_path: Path | None = None) -> dict:
    """Runs the load tool once with --json (and --server-pid); returns its
    record, with `exit` (its exit code) and `command` added."""
    cmd = (["taskset", "-c", str(cpu)] if cpu is not None else []) + [bins["load"], mode]
    if server is not None and mode != "idle":
        cmd += ["--addr", server.addr]
    cmd += [str(a) for a in args] + ["--json"]
    if server is not None:
        cmd += ["--server-pid", str(server.pid)]
    text = cmds.note(cmd, server)
    p = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"benchkit: the load tool overran {timeout} s: killed", file=sys.stderr)
        p.kill()
        out, err = p.communicate()
    if p in _children:
        _children.remove(p)
    if stderr_path:
        Path(stderr_path).write_text(err)
    rec = {}
    for line in out.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
    if not rec:
        print(f"benchkit: no record from: {text}\n{err}", file=sys.stderr)
    rec["exit"] = p.returncode
    rec["command"] = text
    return rec


def sample(rec: dict, at: str) -> dict | None:
    for s in rec.get("samples", []):
        if s["at"] == at:
            return s
    return None


def server_ticks(rec: dict, a: str, b: str) -> int | None:
    sa, sb = sample(rec, a), sample(rec, b)
    if not sa or not sb or "server" not in sa or "server" not in sb:
        return None
    ta, tb = sa["server"]["ticks"], sb["server"]["ticks"]
    return None if ta is None or tb is None else tb - ta


def cpu_pct(rec: dict, a: str, b: str, who: str = "server") -> float | None:
    """CPU use of the server (or the load tool) between two samples, % of one core."""
    sa, sb = sample(rec, a), sample(rec, b)
    if not sa or not sb or sb["t"] <= sa["t"]:
        return None
    if who == "server":
        t = server_ticks(rec, a, b)
    else:
        t = None if sa["load_ticks"] is None or sb["load_ticks"] is None else sb["load_ticks"] - sa["load_ticks"]
    if t is None:
        return None
    return 100 * t / rec["clk_tck"] / (sb["t"] - sa["t"])


# ---------------------------------------------------------------------------
# syscall counting: perf stat on the server
# ---------------------------------------------------------------------------

PERF_CALLS = ("read write recvfrom sendto readv writev recvmsg sendmsg epoll_wait epoll_pwait "
              "epoll_pwait2 epoll_ctl accept accept4 close shutdown futex setsockopt getsockopt "
              "fcntl ioctl openat mmap munmap mprotect brk madvise clock_nanosleep sched_yield "
              "clone3 rt_sigprocmask io_uring_enter").split()


def perf_events() -> str | None:
    """raw_syscalls:sys_enter (every call) and, by name, the common ones
    this kernel has: not all ~350, each one costs the traced server at
    every context switch. None when perf cannot count syscalls here."""
    if not shutil.which("perf"):
        return None
    try:
        ok = subprocess.run(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "--", "true"],
                            capture_output=True, timeout=30).returncode == 0
        listed = subprocess.run(["perf", "list", "syscalls:sys_enter_*"], capture_output=True,
                                text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return None
    if not ok:
        return None
    have = {w.split()[0] for w in listed.splitlines() if w.strip().startswith("syscalls:")}
    events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in PERF_CALLS
                                           if f"syscalls:sys_enter_{c}" in have]
    return ",".join(events)


class Tracer:
    """perf stat on the server, from before the load starts to after it."""

    def __init__(self, events: str, server: Server, out: Path, cmds: Commands, cpu: int = 1):
        self.file = out / "trace.txt"
        cmd = ["taskset", "-c", str(cpu), "perf", "stat", "-x,", "-e", events, "-p",
               str(server.pid), "-o", self.file]
        cmds.note(cmd, server)
        self.proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=open(out / "trace.err", "w"))
        time.sleep(1)  # attached before the load starts (perf is live within ~50 ms)

    def finish(self) -> dict[str, int]:
        """Stops perf; the counts by call, with "all" and "other"."""
        stop(self.proc, signal.SIGINT, 30)
        counts, total = {}, 0
        for line in self.file.read_text().splitlines():
            f = line.split(",")
            if len(f) < 3 or not f[0].isdigit():
                continue
            if f[2] == "raw_syscalls:sys_enter":
                total = int(f[0])
            elif int(f[0]) > 0:
                counts[f[2].removeprefix("syscalls:sys_enter_")] = int(f[0])
        named = sum(counts.values())
        if total > named:
            counts["other"] = total - named
        counts["all"] = total
        return counts


# ---------------------------------------------------------------------------
# the machine: what it is and how busy it was
# ---------------------------------------------------------------------------


def cpu_busy() -> tuple[int, int, int]:
    """(busy, steal, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def background(secs: float = 5) -> dict:
    """How busy the machine is with none of ours running: CPU busy and
    steal % over `secs`, and the load average."""
    a = cpu_busy()
    time.sleep(secs)
    b = cpu_busy()
    total = max(1, b[2] - a[2])
    with open("/proc/loadavg") as f:
        la = f.read().split()[:3]
    return {"secs": secs, "busy_pct": round(100 * (b[0] - a[0]) / total, 1),
            "steal_pct": round(100 * (b[1] - a[1]) / total, 1), "loadavg": la,
            "nproc": os.cpu_count()}


def machine() -> dict:
    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""
    model = ""
    for line in out(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    commit = out(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "rustc": out(["rustc", "-V"]),
        "redis": out(["redis-server", "--version"]),
        "python": platform.python_version(),
        "fd_hard_limit": __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1],
    }


# ---------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def span(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else None


def fmt(v, digits=None) -> str:
    """Thousands separated; 4 significant figures for small values."""
    if v is None:
        return "-"
    if digits is not None:
        return f"{v:,.{digits}f}"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 10:
        return f"{v:.1f}"
    if a == int(a):
        return f"{v:.0f}"
    return f"{v:.3g}" if a < 1 else f"{v:.2f}"


def ratio(a, b) -> str:
    if a is None or b is None or b == 0:
        return ""
    return f"{a / b:.2f}"


class Raw:
    """target/.../raw.jsonl: one JSON object per line, appended as runs end."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "w")

    def write(self, obj: dict) -> None:
        self.f.write(json.dumps(obj, sort_keys=False) + "\n")
        self.f.flush()


def read_raw(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
