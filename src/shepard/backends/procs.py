"""Runner processes: each local worker slot is a child process that runs, records and claims
its jobs by itself.

Why a process: preparing a workspace, spawning the payload and zipping its outputs is Python
work, and threads of one process take turns on the interpreter lock, so a pool of threads is
no faster than one thread for short jobs. Why self-sufficient: a runner that sent every
outcome to its parent and waited there for its next job spent as much CPU on that
conversation as on the job itself. So a runner holds its own catalog connection and heartbeat,
records outcomes and claims its next jobs in one transaction (`sheep.Recorder`; several jobs
at a time while they are short), and tells the parent only when it has run out of work.

The child is a fork of the parent when the parent has a single thread (`start_runners`, called
as the backend opens: no imports to wait for; it first adopts the spares the `shepard` command
forked as it started, smaller: backends/spares.py), else `python -m shepard.backends.procs
PARENT_PID`; either way it talks over its stdin/stdout with length-prefixed pickles. Parent
to child: a RunnerSetup, then ("run", job) for a job the dispatcher claimed, ("stop", job_ids)
to cancel attempts, ("close", kill) to finish. Child to parent: IDLE when no job is left to
claim. End of file means the other side is gone: a child
whose parent is gone stops its payload, gives its job back and exits; a parent whose child
died handles that child's attempts as a lost worker's (reason WORKER_DIED). Neither kind is
a multiprocessing child, so the caller's main module is never imported again.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import pickle
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shepard.backends import spares
from shepard.backends.forked import Forked, single_threaded
from shepard.catalog import open_catalog
from shepard.catalog.base import Catalog
from shepard.errors import CatalogError
from shepard.model import Job, JobStatus, RetryPolicy
from shepard.runtime import AttemptControl, RuntimeContext
from shepard.runtime.process import KILL_GRACE, become_runner_process, work_in
from shepard.sheep import MAX_AHEAD, SHORT_JOB, SHUTDOWN, Heartbeat, Recorder, attempt, release

log = logging.getLogger(__name__)

IDLE = "idle"
WORKER_DIED = "the worker process died"
CLOSE_TIMEOUT = KILL_GRACE + 30.0  # seconds a killed runner gets to give its job back
_HEADER = struct.Struct("!I")
_Child = subprocess.Popen[bytes] | Forked


@dataclass(frozen=True)
class RunnerSetup:
    """Everything a runner needs to serve the flock on its own."""

    ctx: RuntimeContext
    catalog_url: str
    policy: RetryPolicy
    lease: float
    slot: Path  # the slot's folder: the root folder of each of its jobs
    log_level: int = logging.WARNING  # for a runner forked before logging was configured


def send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message; EOFError when the other side has gone."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def runner_worker_id(pid: int) -> str:
    """The worker name a runner claims under: `host:pid` of the runner process."""
    return f"{socket.gethostname()}:{pid}"


class RunnerProcess:
    """The parent's side of one slot: starts its runner, hands it jobs, notices its death.

    `busy` is True from `run` until the runner says it found nothing more to claim (or died);
    `on_idle` is then called (from a reader thread). The runner is started on first use and
    again after it died. Thread-safe.
    """

    def __init__(
        self,
        setup: RunnerSetup,
        catalog: Catalog,
        *,
        on_idle: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.setup, self.catalog, self.on_idle, self.clock = setup, catalog, on_idle, clock
        self._lock = threading.Lock()
        self._proc: _Child | None = None
        self._reader: threading.Thread | None = None
        self._handed: Job | None = None  # the job given with `run`, until the runner is idle
        self._busy = False
        self._closing = False

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return None if proc is None else proc.pid

    def run(self, job: Job) -> None:
        """Hand the runner a claimed job; it runs it, then claims and runs more on its own."""
        with self._lock:
            self._busy, self._handed = True, job
            try:
                proc = self._started()
            except OSError as exc:
                log.error("cannot start a runner process: %s", exc)
                proc = None
        if proc is None:
            self._lost(None, job)
            return
        with contextlib.suppress(OSError, ValueError):  # a dead runner: its reader reports it
            assert proc.stdin is not None
            send(proc.stdin, ("run", job))

    def stop(self, job_ids: Sequence[str]) -> None:
        """Stop the attempts of these jobs if this runner holds them (cancellation)."""
        self._tell(("stop", list(job_ids)))

    def close(self, *, kill: bool) -> None:
        """Ask the runner to finish: let its current attempt end (kill=False) or stop it
        (kill=True); jobs it has not started go back to the queue."""
        with self._lock:
            self._closing = True
        self._tell(("close", kill))

    def join(self, timeout: float | None = None) -> None:
        """Wait until the runner has exited and its end is handled (SIGKILL after `timeout`
        seconds)."""
        proc, reader = self._proc, self._reader
        if reader is None:
            return
        reader.join(timeout)
        if reader.is_alive() and proc is not None:
            log.warning("runner %d did not finish in %.0f s; killing it", proc.pid, timeout or 0)
            proc.kill()
            reader.join()

    def _tell(self, message: Any) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError, ValueError):
            send(proc.stdin, message)
            if message[0] == "close":
                proc.stdin.close()

    def _started(self) -> _Child:
        """The running child, started (with its reader thread) when there is none."""
        if self._proc is None:
            self._follow(self._spawn(fork=False))
        assert self._proc is not None
        return self._proc

    def _spawn(self, *, fork: bool, close_fds: Sequence[int] = ()) -> _Child:
        """Start the child (a fork of this process, closing `close_fds` in it, or a new
        interpreter) and send it its setup; its reader thread is not started yet (see
        start_runners)."""
        proc: _Child
        if fork:
            proc = spares.take() or Forked(_serve, close_fds)
        else:
            proc = subprocess.Popen(
                [sys.executable, "-m", "shepard.backends.procs", str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            send(proc.stdin, self.setup)
        self._proc = proc
        return proc

    def _follow(self, proc: _Child) -> None:
        self._reader = threading.Thread(
            target=self._read, args=(proc,), name=f"runner-{proc.pid}", daemon=True
        )
        self._reader.start()

    def _read(self, proc: _Child) -> None:
        """Follow one child: IDLE messages, then its exit (expected or not)."""
        assert proc.stdout is not None
        while True:
            try:
                message = receive(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                break
            if message == IDLE:
                with self._lock:
                    self._busy, self._handed = False, None
                self.on_idle()
        code = proc.wait()
        proc.stdout.close()
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        with self._lock:
            if self._proc is proc:
                self._proc = None
            handed, self._handed = self._handed, None
            clean = self._closing and code == 0
            self._busy = False
        if not clean:
            log.warning("runner process %d ended with status %s", proc.pid, code)
            self._lost(proc.pid, handed)
        self.on_idle()

    def _lost(self, pid: int | None, handed: Job | None) -> None:
        """End the attempts a dead runner held (the job it was handed and those it claimed)
        as a lost worker's: back to the queue without spending an attempt, until a job has
        lost MAX_LOST workers (see Catalog.lose). The runner may have claimed some of them
        ahead and not started them; one of them may be what killed it."""
        jobs = [] if handed is None else [handed]
        now = self.clock()
        try:
            if pid is not None:
                jobs += self.catalog.page(
                    status=JobStatus.RUNNING, worker=runner_worker_id(pid), limit=1000
                )
            for job in jobs:
                self.catalog.lose(
                    job.id, job.attempt, now=now, reason=WORKER_DIED,
                    retry_at=now + self.setup.policy.backoff,
                )  # fmt: skip
        except CatalogError as exc:  # the leases run out; the jobs run again
            log.error("could not record the end of a dead runner's jobs: %s", exc)


def start_runners(
    runners: Sequence[RunnerProcess], *, before_fork: Callable[[], None] = lambda: None
) -> bool:
    """Start these runners now rather than with their first job, as forks of this process,
    if it runs no other thread (see forked.py): a fork is ready in milliseconds, with
    everything imported. Otherwise (or for a runner started again after it died) a runner
    starts as a new interpreter when it is first needed. True if they were forked.

    `before_fork` must close this process's database connections (a catalog's `close`; the
    catalog reconnects when next used): SQLite keeps per-process state about the files it
    has open, and a child that inherits it fails on the same database ("locking protocol").
    """
    if not single_threaded():
        spares.discard()
        return False
    before_fork()
    idle = [runner for runner in runners if runner._proc is None]
    started: list[tuple[RunnerProcess, _Child]] = []
    try:
        for runner in idle:  # every fork before any reader thread exists
            # A single thread means no other runner lives (each has a reader thread), so the
            # only pipes a child must not keep are those of the children forked just before.
            pipes = [f.fileno() for _, proc in started for f in (proc.stdin, proc.stdout) if f]
            started.append((runner, runner._spawn(fork=True, close_fds=pipes)))
    finally:
        spares.discard()  # those not adopted
        for runner, proc in started:
            runner._follow(proc)
    return True


def prefork_spares(count: int) -> None:
    """Fork `count` spare runners now, for `start_runners` to adopt (backends/spares.py).
    Only a process's entry point calls it, while it runs a single thread."""
    spares.prefork(count, _serve)


# -- the child's side -------------------------------------------------------------------------


class _Runner:
    """The child: a reader thread takes the parent's messages, the main thread runs jobs."""

    def __init__(self, inbox: IO[bytes], outbox: IO[bytes], setup: RunnerSetup) -> None:
        self.inbox, self.outbox, self.setup = inbox, outbox, setup
        if not logging.getLogger().handlers:  # forked as a spare, or a new interpreter
            logging.basicConfig(
                level=setup.log_level,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
        os.makedirs(self.setup.slot, exist_ok=True)
        work_in(self.setup.slot)  # its payloads start the cheap way (see runtime/process.py)
        self.worker = runner_worker_id(os.getpid())
        self.catalog = open_catalog(self.setup.catalog_url, create=False, patient=True)
        self.heartbeat = Heartbeat(self.catalog, self.setup.lease).start()
        self.recorder = Recorder(
            self.catalog, self.heartbeat, self.setup.policy, self.setup.ctx.outputs,
            worker=self.worker, lease=self.setup.lease,
        )  # fmt: skip
        self.handed: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.closing = False

    def read(self) -> None:
        """Route the parent's messages; end of file means the parent is gone: stop at once."""
        while True:
            try:
                message = receive(self.inbox)
            except (EOFError, OSError, pickle.UnpicklingError):
                message = ("close", True)
            if message[0] == "run":
                self.handed.put(message[1])
            elif message[0] == "stop":
                self.heartbeat.stop(message[1], "cancelled")
            elif message[0] == "close":
                self.closing = True  # before stopping: attempts held later see it
                if message[1]:
                    self.heartbeat.stop(None, SHUTDOWN)
                self.handed.put(None)
                return

    def serve(self) -> None:
        """Run handed jobs and what they lead to claim, until the parent closes (None)."""
        while (job := self.handed.get()) is not None:
            control = self.heartbeat.hold(job)
            if not self.closing:
                with contextlib.suppress(Exception):  # the lease was taken a while ago: renew
                    self.heartbeat.beat()
            self._work(job, control)
            if not self.closing:
                with contextlib.suppress(OSError):  # the parent is gone: its close comes next
                    send(self.outbox, IDLE)
        self.recorder.close()
        self.heartbeat.close()
        self.catalog.close()

    def _work(self, job: Job, control: AttemptControl) -> None:
        """Run `job`, then the jobs claimed as attempts end, until none is left to claim.

        While attempts are short (SHORT_JOB), the runner claims up to MAX_AHEAD jobs at a
        time and records outcomes together: one transaction for several jobs."""
        ready = collections.deque([(job, control)])
        ahead = 1
        while ready:
            job, control = ready.popleft()
            began = time.monotonic()
            self._attempt(job, control)
            short = time.monotonic() - began < SHORT_JOB
            ahead = min(2 * ahead, MAX_AHEAD) if short else 1
            if not ready:
                with contextlib.suppress(CatalogError):  # logged; the leases run out
                    ready.extend(self.recorder.flush(0 if self.closing else ahead))

    def _attempt(self, job: Job, control: AttemptControl) -> None:
        """Run one claimed attempt; queue its outcome, or give the job back."""
        if self.closing:  # accepted but never started: give it back untouched
            control.stop_reason = SHUTDOWN
            control.stop.set()
        setup = self.setup
        try:
            outcome = attempt(job, setup.ctx, self.catalog, control, slot=setup.slot)
            if outcome is None:
                release(self.catalog, job, time.time())
        except CatalogError:
            outcome = None  # logged; the lease runs out and the job runs again
        except Exception:
            log.exception("job %s: the runner failed", job.id)
            outcome = None
        if outcome is None:
            self.heartbeat.drop(job.id, job.attempt)
        else:
            self.recorder.add(job, outcome)


def main() -> None:
    """`python -m shepard.backends.procs PARENT_PID`: a runner started as a new interpreter."""
    _serve(sys.stdin.buffer)


def _serve(inbox: IO[bytes]) -> None:
    """Be a runner: the parent's messages on `inbox`, ours on stdout. Never returns."""
    import signal

    # Ctrl-C reaches the whole process group: the parent decides what stops, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    become_runner_process()  # its working directory is its slot (see runtime/process.py)
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the channel
    try:
        setup = receive(inbox)
    except (EOFError, OSError, pickle.UnpicklingError):
        os._exit(0)  # a spare never adopted (backends/spares.py), or a parent gone already
    runner = _Runner(inbox, outbox, setup)
    threading.Thread(target=runner.read, name="runner-inbox", daemon=True).start()
    gc.freeze()  # what is loaded by now lives as long as the runner: keep the collector off it
    runner.serve()
    outbox.close()
    os._exit(0)  # everything is recorded and closed; skip the interpreter's slow teardown


if __name__ == "__main__":
    main()
