"""Shepard against the other tools that run many short jobs, on the same workload, in one run.

    .venv/bin/python bench/peers.py [--jobs 2000] [--rounds 3] [--workers 2] [--dir /var/tmp]
                                    [--tools xargs,parallel,pool,celery,ray,shepard]
                                    [--peers-python /opt/shepard-peers/bin/python]
                                    [--base OTHER_CHECKOUT/src]

The workload: JOBS trivial jobs, each `sh -c 'echo "$ITEM" > "$OUT/$ITEM.txt"'` with its own
ITEM, WORKERS at a time, files written under `--dir` (default /var/tmp: a real disk; pass
/dev/shm for tmpfs). The tools:

- `xargs -P WORKERS` and GNU `parallel -j WORKERS`: fork and exec only, no state kept;
- a Python thread pool running each job with `subprocess` (no state kept);
- Celery 5 with Redis (prefork pool of WORKERS; the Redis on 127.0.0.1:6379, started here if
  none answers) and Ray 2 (WORKERS CPUs): each job a task;
- Shepard: a local flock with WORKERS workers, `shepard submit --range ITEM=1-JOBS --wait`;
  the payload writes `$ROOT_OUTPUT_NAME/$ITEM.txt` (the runtime contract's output folder,
  zipped and stored as each job's result) and every job's outcome, history and logs are kept.

Celery, Ray and the thread pool run when their packages import in `--peers-python` (installed
by bench/peers-setup into a virtual environment of their own: none of them is a dependency of
Shepard). xargs, parallel and Shepard are timed as whole commands, start-up included; Celery's
worker and Ray's processes are started and warmed up first (two jobs) and only the jobs are
timed, as a user would keep such services running. Rounds alternate the tools (the order
rotates each round); figures are medians over the rounds. Printed per tool: seconds, jobs/s
(and their range over the rounds), the ratio to xargs, the peak RSS and PSS summed over every
process the tool started (its process tree, sampled every 100 ms from start to end, services
included, the shared Redis not), and the CPU time per job of all those processes (payloads
included), which moves less than the wall time on a shared machine. `--base` adds Shepard's
code from another checkout (run by this interpreter), to compare two commits in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

BENCH = Path(__file__).resolve().parent
SHEPARD = str(Path(sys.executable).with_name("shepard"))
COMMAND = 'echo "$ITEM" > "$OUT/$ITEM.txt"'
SHEPARD_COMMAND = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/$ITEM.txt"'
PEERS_PYTHON = "/opt/shepard-peers/bin/python"
REDIS = ("127.0.0.1", 6379)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TOOLS = ("xargs", "parallel", "pool", "celery", "ray", "shepard")


# -- the process trees of a tool ----------------------------------------------------------------


def _stat(pid: int) -> tuple[float, int, int, int, int, bytes] | None:
    """(CPU seconds of the process and of its reaped children, resident bytes, proportional
    bytes, parent pid, virtual size, command name) or None. The proportional set size (PSS)
    divides each shared page among the processes sharing it: forked workers share most of
    their pages with their parent, which a sum of RSS counts once per process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            head, tail = f.read().rsplit(b")", 1)
        fields = tail.split()
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            pss = next((line.split()[1] for line in f if line.startswith(b"Pss:")), b"0")
    except OSError:
        return None
    cpu = sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK  # utime stime cutime cstime
    name = head.split(b"(", 1)[1]
    return cpu, int(fields[21]) * PAGE, int(pss) * 1024, int(fields[1]), int(fields[20]), name


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError), os.scandir(f"/proc/{pid}/task") as tasks:
        for task in tasks:
            with contextlib.suppress(OSError), open(f"{task.path}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def tree(roots: Sequence[int]) -> dict[int, tuple[float, int, int]]:
    """Every live process under `roots` (included): pid -> (CPU seconds, RSS, PSS bytes).

    A child caught between vfork and exec (posix_spawn's, subprocess's) still runs in its
    parent's memory, and /proc shows it with its parent's figures: its memory counts zero
    (it has its parent's name, virtual size and RSS, within the pages the parent's other
    threads may touch between the two readings)."""
    seen: dict[int, tuple[float, int, int, int, int, bytes]] = {}
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        info = _stat(pid)
        if info is not None:
            seen[pid] = info
            pending += _children(pid)
    found: dict[int, tuple[float, int, int]] = {}
    for pid, (cpu, rss, pss, ppid, vsize, name) in seen.items():
        parent = seen.get(ppid)
        borrowed = (
            parent is not None
            and parent[5] == name
            and abs(parent[1] - rss) <= parent[1] // 50
            and abs(parent[4] - vsize) <= parent[4] // 50
        )
        found[pid] = (cpu, 0, 0) if borrowed else (cpu, rss, pss)
    return found


@dataclass
class Sampler:
    """Samples the summed RSS and PSS of the trees under `roots` (a callable: roots change)
    until stopped; `peak` and `peak_pss` are the largest sums seen."""

    roots: Callable[[], Sequence[int]]
    interval: float = 0.1
    peak: int = 0
    peak_pss: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        found = tree(self.roots()).values()
        self.peak = max(self.peak, sum(rss for _, rss, _ in found))
        self.peak_pss = max(self.peak_pss, sum(pss for _, _, pss in found))


def reaped_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Measure:
    seconds: float
    cpu: float  # seconds, every process of the tool
    peak_rss: int  # bytes
    peak_pss: int  # bytes


def run_command(
    argv: Sequence[str], *, env: dict[str, str], stdin: bytes = b"", errors: Path
) -> Measure:
    """Time a whole command, start-up included; its CPU is what its reaped tree used. Its
    output goes nowhere (no terminal: no progress display), its errors to `errors`."""
    began, cpu = time.perf_counter(), reaped_cpu()
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err
        )
    with Sampler(lambda: [proc.pid]) as sampler:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(stdin)
            proc.stdin.close()
        code = proc.wait()
    seconds, cpu = time.perf_counter() - began, reaped_cpu() - cpu
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited with status {code}: {errors.read_text()[-2000:]}")
    return Measure(seconds, cpu, sampler.peak, sampler.peak_pss)


# -- the tools ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    jobs: int
    workers: int
    peers_python: str
    redis_url: str
    base: Path | None = None


def items(jobs: int) -> bytes:
    return "".join(f"{i}\n" for i in range(1, jobs + 1)).encode()


def run_xargs(setup: Setup, out: Path) -> Measure:
    script = f'echo "{{}}" > "{out}/{{}}.txt"'
    argv = ["xargs", "-P", str(setup.workers), "-I{}", "sh", "-c", script]
    return run_command(
        argv, env=dict(os.environ), stdin=items(setup.jobs), errors=out.parent / "err"
    )


def run_parallel(setup: Setup, out: Path) -> Measure:
    # parallel runs each command line through $SHELL, as xargs runs `sh -c`
    argv = ["parallel", "-j", str(setup.workers), f'ITEM={{}} OUT="{out}"; {COMMAND}']
    env = {**os.environ, "SHELL": "/bin/sh"}
    return run_command(argv, env=env, stdin=items(setup.jobs), errors=out.parent / "err")


def run_shepard(setup: Setup, out: Path, source: Path | None = None) -> Measure:
    """Shepard from this environment, or the code under `source` (another checkout's `src`,
    run by this interpreter: `--base`)."""
    flock = out.parent / "flock"
    env = {**os.environ, "SHEPARD_FLOCK": str(flock)}
    shepard = [SHEPARD]
    if source is not None:
        shepard = [sys.executable, "-m", "shepard"]
        env["PYTHONPATH"] = str(source)
    init = [*shepard, "init", str(flock), "--payload-command", SHEPARD_COMMAND]
    init += ["--workers", str(setup.workers)]
    subprocess.run(init, check=True, env=env, capture_output=True)
    submit = [*shepard, "submit", "--range", f"ITEM=1-{setup.jobs}", "--wait"]
    measure = run_command(submit, env=env, errors=out.parent / "err")
    produced = len(list((flock / "outputs").glob("result@*_root.zip")))
    if produced != setup.jobs:
        raise RuntimeError(f"shepard: {produced} results for {setup.jobs} jobs")
    out.rmdir()  # the results are in the flock's outputs store, checked above
    return measure


def run_driver(kind: str, setup: Setup, out: Path) -> Measure:
    """A Python peer (bench/peer_drivers.py): started and warmed up untimed, then its jobs
    timed from `go` to `done`; Celery's worker is started beside its client."""
    env = {**os.environ, "PYTHONPATH": str(BENCH), "PEERS_REDIS": setup.redis_url}
    env["PEERS_QUEUE"] = f"shepard-peers-{os.getpid()}-{time.monotonic_ns()}"
    env.setdefault("RAY_raylet_start_wait_time_s", "180")  # a loaded machine starts Ray slowly
    procs: list[subprocess.Popen[str]] = []
    with Sampler(lambda: [p.pid for p in procs]) as sampler:
        try:
            if kind == "celery":
                worker = [setup.peers_python, "-m", "celery", "-A", "peer_celery", "worker"]
                worker += ["--pool", "prefork", "-c", str(setup.workers), "--loglevel", "WARNING"]
                worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
                procs.append(subprocess.Popen(worker, env=env, cwd=BENCH, text=True))
            argv = [setup.peers_python, str(BENCH / "peer_drivers.py"), kind, str(out)]
            argv += [str(setup.jobs), str(setup.workers)]
            driver = subprocess.Popen(
                argv, env=env, cwd=BENCH, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            procs.append(driver)
            assert driver.stdin is not None and driver.stdout is not None
            if driver.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{kind}: the driver did not start")
            before = sum(cpu for cpu, _, _ in tree([p.pid for p in procs]).values())
            began = time.perf_counter()
            driver.stdin.write("go\n")
            driver.stdin.flush()
            if driver.stdout.readline().strip() != "done":
                raise RuntimeError(f"{kind}: the driver failed")
            seconds = time.perf_counter() - began
            after = sum(cpu for cpu, _, _ in tree([p.pid for p in procs]).values())
            sampler.sample()
            driver.stdin.write("stop\n")
            driver.stdin.flush()
            driver.wait(120)
        finally:
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return Measure(seconds, after - before, sampler.peak, sampler.peak_pss)


RUNNERS: dict[str, Callable[[Setup, Path], Measure]] = {
    "xargs": run_xargs,
    "parallel": run_parallel,
    "pool": lambda setup, out: run_driver("pool", setup, out),
    "celery": lambda setup, out: run_driver("celery", setup, out),
    "ray": lambda setup, out: run_driver("ray", setup, out),
    "shepard": run_shepard,
    "base": lambda setup, out: run_shepard(setup, out, setup.base),
}
LABELS = {
    "xargs": "xargs -P{w}",
    "parallel": "GNU parallel -j{w}",
    "pool": "Python thread pool + subprocess",
    "celery": "Celery 5 + Redis, prefork {w}",
    "ray": "Ray 2, {w} CPUs",
    "shepard": "Shepard, local flock, {w} workers",
    "base": "Shepard (--base), {w} workers",
}


def missing(tool: str, peers_python: str) -> str | None:
    """Why `tool` cannot run here, or None."""
    if tool in ("xargs", "parallel"):
        return None if shutil.which(tool) else f"`{tool}` is not installed (bench/peers-setup)"
    module = {"pool": "concurrent.futures", "celery": "celery, redis", "ray": "ray"}.get(tool)
    if module is None:
        return None
    if not Path(peers_python).exists():
        return f"no {peers_python} (bench/peers-setup)"
    check = subprocess.run([peers_python, "-c", f"import {module}"], capture_output=True)
    return None if check.returncode == 0 else f"{module} does not import in {peers_python}"


@contextlib.contextmanager
def redis_server() -> Iterator[None]:
    """Redis on 127.0.0.1:6379: the one running, else one started for this run."""
    with contextlib.suppress(OSError), socket.create_connection(REDIS, timeout=1):
        yield
        return
    proc = subprocess.Popen(
        ["redis-server", "--bind", REDIS[0], "--port", str(REDIS[1]), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(REDIS, timeout=1):
                break
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait()


def filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, kind = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            point, fstype = line.split()[1:3]
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="the filesystem used")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated, of " + ",".join(TOOLS)
    )
    parser.add_argument(
        "--base",
        type=Path,
        help="also run the Shepard code in this `src` folder (e.g. an export of another commit)",
    )
    python = PEERS_PYTHON if Path(PEERS_PYTHON).exists() else sys.executable
    parser.add_argument("--peers-python", default=python)
    args = parser.parse_args()
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TOOLS]
    if unknown or "xargs" not in wanted:
        parser.error(f"--tools: {', '.join(unknown) or 'xargs (the baseline) is required'}")
    if args.base is not None:
        wanted.append("base")
    tools = []
    for tool in wanted:
        reason = missing(tool, args.peers_python)
        if reason is None:
            tools.append(tool)
        else:
            print(f"skipping {tool}: {reason}", file=sys.stderr)
    redis = f"redis://{REDIS[0]}:{REDIS[1]}/0"
    setup = Setup(args.jobs, args.workers, args.peers_python, redis, args.base)
    results: dict[str, list[Measure]] = {tool: [] for tool in tools}
    failures: dict[str, int] = {}
    with redis_server() if "celery" in tools else contextlib.nullcontext():
        for index in range(args.rounds):
            order = tools[index % len(tools) :] + tools[: index % len(tools)]
            for tool in order:
                scratch = Path(tempfile.mkdtemp(prefix="shepard-peers-", dir=args.dir))
                try:
                    measure = run_round(tool, setup, scratch / "out")
                    results[tool].append(measure)
                    print(f"  round {index + 1} {tool} {measure.seconds:.2f} s", file=sys.stderr)
                except Exception as exc:  # a peer that fails once (Ray timing out) is reported
                    failures[tool] = failures.get(tool, 0) + 1
                    print(f"  round {index + 1} {tool} failed: {exc}", file=sys.stderr)
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
            if index + 1 < args.rounds:  # the figures so far, should a long run be cut short
                report(args, results, sys.stderr, index + 1)
    report(args, results, sys.stdout, args.rounds)
    for tool, count in failures.items():
        print(f"{LABELS[tool].format(w=args.workers)}: failed in {count} of {args.rounds} rounds")


def run_round(tool: str, setup: Setup, out: Path) -> Measure:
    out.mkdir()
    measure = RUNNERS[tool](setup, out)
    if out.exists() and len(os.listdir(out)) != setup.jobs:
        raise RuntimeError(f"{tool}: {len(os.listdir(out))} files for {setup.jobs} jobs")
    return measure


def report(
    args: argparse.Namespace, results: dict[str, list[Measure]], out: TextIO, rounds: int
) -> None:
    jobs = args.jobs
    load = os.getloadavg()[0]
    results = {tool: measures for tool, measures in results.items() if measures}
    if "xargs" not in results:
        return
    print(
        f'{jobs} jobs `sh -c \'echo "$ITEM" > "$OUT/$ITEM.txt"\'`, {args.workers} at a time, '
        f"files in {args.dir} ({filesystem(args.dir.resolve())}), median of {rounds} "
        f"rounds, load average {load:.1f} at the end",
        file=out,
    )
    base = statistics.median(jobs / m.seconds for m in results["xargs"])
    print(
        f"| tool | jobs/s | range | vs xargs -P{args.workers} | peak RSS | peak PSS "
        "| CPU per job |",
        file=out,
    )
    print("|---|---|---|---|---|---|---|", file=out)
    rows = sorted(
        results.items(), key=lambda kv: -statistics.median(jobs / m.seconds for m in kv[1])
    )
    for tool, measures in rows:
        rates = [jobs / m.seconds for m in measures]
        rate = statistics.median(rates)
        rss = statistics.median(m.peak_rss for m in measures) / 2**20
        pss = statistics.median(m.peak_pss for m in measures) / 2**20
        cpu = statistics.median(m.cpu for m in measures) / jobs * 1000
        label = LABELS[tool].format(w=args.workers)
        print(
            f"| {label} | {rate:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {rate / base:.2f} "
            f"| {rss:,.0f} MB | {pss:,.0f} MB | {cpu:.2f} ms |",
            file=out,
        )


if __name__ == "__main__":
    main()
