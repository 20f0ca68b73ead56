#!/usr/bin/env python3
"""scripts/timer_scale.py: the server's own instructions per event and per
line as the number of clients grows, with a deadline armed for every client
(--idle-timeout 60), in two phases:

  A  every client active: each sends a line, waits for its answer, sends
     the next, ROUNDS_A lines per client (ping-pong, all at once);
  B  every client closing at once: each sends STOP, reads to end-of-file
     and closes (the server lingers, then frees them all).

    BIN=/tmp/ab VARIANTS="old new" SIZES="1000 5000 19900" ROUNDS=3 scripts/timer-scale

BIN holds randline-VARIANT (release builds). IDLE (default 60) is the
--idle-timeout; IDLE=0 is the control: no client has a deadline, the
timer heap stays empty. Each run is a fresh server under
`valgrind --tool=callgrind` (user-space instructions, Ir: the loop, the
timer heap, libc; not the kernel), pinned to CPU 0, with an open-file
limit of 20,000 (as `prlimit --nofile=20000:20000`); the clients are
WORKERS processes of this script (each holding SIZE/WORKERS sockets, well
under its own 20,000 descriptors) on CPU 1, over 127.0.0.1. Connecting and one warm-up line per
client happen before the counters are zeroed. Each phase is measured as:

  callgrind_control -z; SIGUSR1 (stats: line); the phase; wait until the
  server is quiet; SIGUSR1 (stats: line); callgrind_control -d

so the instructions of a phase and the counters of its two stats: lines
cover the same work, plus the two stats: lines themselves: phase 0, the
same sequence with nothing in between, measures those, and the figures
printed are each phase's less phase 0's (instructions, events,
wakeups). Phase B ends when the server holds no client socket any more
(counted in /proc/PID/fd) and its stats: line says active=0. Every wait is bounded (TIMEOUT s); a run that overruns
is recorded as failed and the script goes on.

Out: one JSON line per run in $OUT/runs.jsonl (default target/timer-scale),
and a Markdown table of medians on stdout. Python 3 standard library only,
plus scripts/benchkit.py for process tracking and ports.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchkit as bk  # noqa: E402

TIMEOUT = float(os.environ.get("TIMEOUT", "300"))

# ---------------------------------------------------------------------------
# worker: holds its share of the clients; commands on stdin, answers on stdout
# ---------------------------------------------------------------------------


def worker(host: str, port: int, n: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    socks: list[socket.socket] = []
    ep = select.epoll()
    out = sys.stdout

    def reply(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    def pingpong(batch: list[socket.socket], rounds: int, deadline: float) -> int:
        """Each socket sends `rounds` lines, one at a time, each after the
        answer to the one before. Returns lines answered."""
        left = {s.fileno(): rounds for s in batch}
        by_fd = {s.fileno(): s for s in batch}
        partial = {fd: b"" for fd in by_fd}
        for s in batch:
            ep.register(s.fileno(), select.EPOLLIN)
            s.send(b"x\n")
        answered, busy = 0, len(batch)
        try:
            while busy:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ping-pong: {busy} clients unfinished")
                for fd, _ in ep.poll(1.0, 4096):
                    data = by_fd[fd].recv(4096)
                    if not data:
                        raise ConnectionError("EOF during ping-pong")
                    buf = partial[fd] + data
                    got = buf.count(b"\n")
                    partial[fd] = buf[buf.rfind(b"\n") + 1:]
                    if got == 0:
                        continue
                    if got != 1:
                        raise ConnectionError(f"{got} answers to one line")
                    answered += 1
                    left[fd] -= 1
                    if left[fd] > 0:
                        by_fd[fd].send(b"x\n")
                    else:
                        busy -= 1
        finally:
            for s in batch:
                ep.unregister(s.fileno())
        return answered

    for cmd in sys.stdin:
        words = cmd.split()
        try:
            t0 = time.monotonic()
            deadline = t0 + TIMEOUT
            if words[0] == "connect":
                for i in range(0, n, 500):
                    batch = []
                    for _ in range(min(500, n - i)):
                        s = socket.create_connection((host, port), timeout=30)
                        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        s.setblocking(False)
                        batch.append(s)
                    socks.extend(batch)
                    pingpong(batch, 1, deadline)  # accepted, registered, armed
                reply(f"ok {len(socks)} {time.monotonic() - t0:.3f}")
            elif words[0] == "A":
                lines = pingpong(socks, int(words[1]), deadline)
                reply(f"ok {lines} {time.monotonic() - t0:.3f}")
            elif words[0] == "B":
                by_fd = {s.fileno(): s for s in socks}
                for s in socks:
                    ep.register(s.fileno(), select.EPOLLIN)
                    s.send(b"STOP\n")
                open_ = len(socks)
                while open_:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"STOP: {open_} clients saw no EOF")
                    for fd, _ in ep.poll(1.0, 4096):
                        s = by_fd[fd]
                        if s.recv(4096) == b"":
                            ep.unregister(fd)
                            s.close()
                            open_ -= 1
                socks = []
                reply(f"ok {len(by_fd)} {time.monotonic() - t0:.3f}")
            elif words[0] == "quit":
                reply("ok")
                return
            else:
                reply(f"error unknown command {words[0]}")
        except Exception as e:  # reported to the driver, which gives up the run
            reply(f"error {type(e).__name__}: {e}")


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


class Workers:
    def __init__(self, port: int, size: int, count: int, cpu: int):
        shares = [size // count + (1 if i < size % count else 0) for i in range(count)]
        self.procs = [
            bk.spawn(["taskset", "-c", str(cpu), sys.executable, __file__, "--worker", "127.0.0.1",
                      port, k], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                     env={**os.environ, "TIMEOUT": str(TIMEOUT)})
            for k in shares if k > 0
        ]

    def ask(self, cmd: str) -> list[str]:
        """Sends `cmd` to every worker at once; their answers (bounded wait)."""
        for p in self.procs:
            p.stdin.write(cmd + "\n")
            p.stdin.flush()
        answers = []
        for p in self.procs:
            r, _, _ = select.select([p.stdout], [], [], TIMEOUT + 30)
            line = p.stdout.readline().strip() if r else "error worker silent"
            if not line.startswith("ok"):
                raise RuntimeError(f"worker {p.pid}: {cmd}: {line or 'exited'}")
            answers.append(line)
        return answers

    def close(self) -> None:
        for p in self.procs:
            try:
                p.stdin.write("quit\n")
                p.stdin.flush()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            bk.stop(p)


def nofile_20000() -> None:
    """The server's open-file limit: 20,000, soft and hard (what
    `prlimit --nofile=20000:20000` sets; valgrind keeps 12 of them)."""
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))


STATS = re.compile(r"stats: (.*)$")


class Server:
    def __init__(self, binary: Path, out: Path, tag: str,
                 args=("--idle-timeout", "60", "--max-connections-per-ip", "0")):
        self.port = bk.free_port()
        self.tag = tag
        self.cg = out / f"cg.{tag}"
        for f in glob.glob(f"{self.cg}*"):
            os.remove(f)
        self.log_path = out / f"server.{tag}.log"
        self.log = open(self.log_path, "w")
        self.cmd = ["taskset", "-c", "0",
                    "valgrind", "--tool=callgrind", f"--callgrind-out-file={self.cg}",
                    "--dump-instr=no", "--compress-strings=no", "--compress-pos=no",
                    str(binary), "--listen", f"127.0.0.1:{self.port}", *args]
        self.proc = bk.spawn(self.cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
                             env={**os.environ, "RUST_LOG": "info"}, preexec_fn=nofile_20000)
        deadline = time.monotonic() + 60
        while not bk.listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {self.log_path}")
            time.sleep(0.1)
        self.dumps = 0

    @property
    def pid(self) -> int:
        return self.proc.pid  # taskset execs valgrind, which runs the binary in this pid

    def sockets(self) -> int:
        n = 0
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            try:
                if os.readlink(f"/proc/{self.pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
        return n

    def stats(self) -> dict[str, int]:
        """SIGUSR1, then the new stats: line from the log (bounded wait)."""
        before = self.log_path.read_text(errors="replace").count("stats:")
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if "stats:" in ln]
            if len(lines) > before:
                m = STATS.search(lines[before])
                return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
            time.sleep(0.05)
        raise RuntimeError("no stats: line after SIGUSR1")

    def control(self, flag: str) -> None:
        r = subprocess.run(["callgrind_control", flag, str(self.pid)], capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"callgrind_control {flag}: {r.stdout}{r.stderr}")

    def zero(self) -> None:
        self.control("-z")

    def dump(self) -> int:
        """Dumps the counters since the last zero; their Ir total."""
        self.control("-d")
        self.dumps += 1
        path = Path(f"{self.cg}.{self.dumps}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if path.exists():
                text = path.read_text(errors="replace")
                m = re.search(r"^summary: (\d+)", text, re.M)
                if m:
                    return int(m.group(1))
            time.sleep(0.05)
        raise RuntimeError(f"no callgrind dump {path}")

    def stop(self) -> None:
        bk.stop(self.proc, signal.SIGTERM, 60)
        self.log.close()


def wait_quiet(srv: Server, base_sockets: int, deadline: float) -> None:
    """Until the server holds no more sockets than before the clients came."""
    while srv.sockets() > base_sockets:
        if time.monotonic() > deadline:
            raise TimeoutError(f"server still holds {srv.sockets() - base_sockets} client sockets")
        time.sleep(0.1)


def delta(a: dict, b: dict) -> dict:
    return {k: b[k] - a[k] for k in ("lines", "wakeups", "events", "reads", "writes", "wouldblock")}


def run_one(binary: Path, out: Path, tag: str, size: int, rounds_a: int, nworkers: int) -> dict:
    rec: dict = {"size": size, "rounds_a": rounds_a}
    srv = Server(binary, out, tag, args=("--idle-timeout", os.environ.get("IDLE", "60"),
                                         "--max-connections-per-ip", "0"))
    workers = None
    try:
        base_sockets = srv.sockets()
        workers = Workers(srv.port, size, nworkers, cpu=1)
        t0 = time.monotonic()
        answers = workers.ask("connect")
        rec["connect_s"] = round(time.monotonic() - t0, 2)
        rec["connected"] = sum(int(a.split()[1]) for a in answers)
        # Phase 0: nothing but the two stats: lines.
        srv.zero()
        s0 = srv.stats()
        s1 = srv.stats()
        rec["0"] = {"ir": srv.dump(), **delta(s0, s1)}
        rec["active_before"] = s1["active"]
        # Phase A: ROUNDS_A lines per client, ping-pong.
        srv.zero()
        s0 = srv.stats()
        t0 = time.monotonic()
        answers = workers.ask(f"A {rounds_a}")
        secs = time.monotonic() - t0
        s1 = srv.stats()
        rec["A"] = {"ir": srv.dump(), "secs": round(secs, 2),
                    "client_lines": sum(int(a.split()[1]) for a in answers), **delta(s0, s1)}
        # Phase B: all send STOP at once, read to EOF, close.
        srv.zero()
        s0 = srv.stats()
        t0 = time.monotonic()
        workers.ask("B")
        wait_quiet(srv, base_sockets, time.monotonic() + TIMEOUT)
        secs = time.monotonic() - t0
        s1 = srv.stats()
        rec["B"] = {"ir": srv.dump(), "secs": round(secs, 2), "active_after": s1["active"], **delta(s0, s1)}
        rec["ok"] = rec["connected"] == size and rec["A"]["client_lines"] == size * rounds_a \
            and s1["active"] == 0
    except Exception as e:
        rec["ok"] = False
        rec["error"] = f"{type(e).__name__}: {e}"
        print(f"timer-scale: {tag}: {rec['error']}", file=sys.stderr)
    finally:
        if workers:
            workers.close()
        srv.stop()
    return rec


def net(rec: dict, phase: str) -> dict:
    """A phase's figures less phase 0's (its two stats: lines)."""
    ph, zero = rec.get(phase), rec.get("0")
    if not ph or not zero:
        return {}
    return {k: ph[k] - zero[k] for k in ("ir", "lines", "wakeups", "events", "reads", "writes")}


def per(ph: dict, what: str) -> float | None:
    d = ph.get(what)
    return ph["ir"] / d if d else None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__)
        return
    if "BIN" not in os.environ:
        bk.die("BIN: a directory holding randline-VARIANT binaries", 2)
    bindir = Path(os.environ["BIN"])
    variants = os.environ.get("VARIANTS", "old new").split()
    sizes = [int(s) for s in os.environ.get("SIZES", "1000 5000 19900").split()]
    rounds = int(os.environ.get("ROUNDS", "3"))
    rounds_a = int(os.environ.get("ROUNDS_A", "10"))
    nworkers = int(os.environ.get("WORKERS", "2"))
    out = Path(os.environ.get("OUT", "target/timer-scale")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.jsonl"
    recs = []
    for r in range(1, rounds + 1):
        for size in sizes:
            order = variants[(r - 1) % len(variants):] + variants[:(r - 1) % len(variants)]
            for v in order:
                tag = f"{v}.{size}.r{r}"
                rec = run_one(bindir / f"randline-{v}", out, tag, size, rounds_a, nworkers)
                rec.update({"round": r, "variant": v, "time": time.strftime("%F %T"),
                            "loadavg": open("/proc/loadavg").read().split()[0]})
                recs.append(rec)
                with open(runs, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                a, b = net(rec, "A"), net(rec, "B")
                print(f"{time.strftime('%T')} r{r} {v} {size}: ok={rec['ok']} "
                      f"A {bk.fmt(per(a, 'events') if a else None, 0)} Ir/event "
                      f"{bk.fmt(per(a, 'lines') if a else None, 0)} Ir/line ({rec.get('A', {}).get('secs')} s); "
                      f"B {bk.fmt(per(b, 'events') if b else None, 0)} Ir/event ({rec.get('B', {}).get('secs')} s)",
                      file=sys.stderr)
    table(recs, variants, sizes)


def table(recs: list[dict], variants: list[str], sizes: list[int]) -> None:
    def med(v, size, phase, what):
        xs = [per(net(r, phase), what) for r in recs
              if r["variant"] == v and r["size"] == size and r.get("ok") and per(net(r, phase), what)]
        return (statistics.median(xs), len(xs)) if xs else (None, 0)

    print("| variant | clients | A: Ir/event | A: Ir/line | A: events/wakeup | B: Ir/event | B: Ir/client | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for v in variants:
        for size in sizes:
            ae, n = med(v, size, "A", "events")
            al, _ = med(v, size, "A", "lines")
            aw = [net(r, "A")["events"] / net(r, "A")["wakeups"] for r in recs
                  if r["variant"] == v and r["size"] == size and r.get("ok") and net(r, "A")["wakeups"]]
            be, _ = med(v, size, "B", "events")
            bc = [net(r, "B")["ir"] / size for r in recs if r["variant"] == v and r["size"] == size and r.get("ok")]
            print(f"| {v} | {size:,} | {bk.fmt(ae, 0)} | {bk.fmt(al, 0)} | "
                  f"{bk.fmt(statistics.median(aw) if aw else None, 1)} | {bk.fmt(be, 0)} | "
                  f"{bk.fmt(statistics.median(bc) if bc else None, 0)} | {n} |")


if __name__ == "__main__":
    main()
