"""Runner processes: each local worker slot runs its attempts in a child process of its own.

Preparing a workspace, spawning the payload and zipping its outputs is Python work; done in
threads of one process it is serialised by the interpreter lock, so a pool of threads is no
faster than one thread for short jobs. A process per slot runs them truly side by side, while
the parent keeps the catalog, the leases and the heartbeats.

The child is `python -m shepard.backends.procs`, talking over its stdin/stdout with
length-prefixed pickles: first the RuntimeContext, then ("run", job, slot) and ("stop", job_id)
messages; it answers each run with an Outcome. It is a plain subprocess rather than a
multiprocessing child so that it never re-imports the caller's main module.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from shepard.model import Job, JobStatus, Outcome
from shepard.runtime import AttemptControl, RuntimeContext, run_attempt

_POLL = 0.1  # seconds between checks for a stop request while an attempt runs
_HEADER = struct.Struct("!I")


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


class RunnerProcess:
    """A child process that runs one attempt at a time for one worker slot.

    Calling it has the signature of `run_attempt`, so it is a drop-in runner for
    `sheep.run_claimed`. The child is started on first use and again after it died; a child
    that dies mid-attempt yields a retryable FAILED outcome.
    """

    def __init__(self, ctx: RuntimeContext) -> None:
        self.ctx = ctx
        self._proc: subprocess.Popen[bytes] | None = None

    def __call__(
        self, job: Job, ctx: RuntimeContext, control: AttemptControl, *, slot: Path | None = None
    ) -> Outcome:
        try:
            proc = self._ensure_started()
            assert proc.stdin is not None and proc.stdout is not None
            send(proc.stdin, ("run", job, slot))
            stop_sent = False
            while not _readable(proc.stdout, _POLL):
                if control.stop.is_set() and not stop_sent:
                    send(proc.stdin, ("stop", job.id))
                    stop_sent = True
            outcome: Outcome = receive(proc.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            self.close()
            return Outcome(JobStatus.FAILED, reason="the worker process died", retryable=True)
        if outcome.status is JobStatus.CANCELLED:
            outcome = replace(outcome, reason=control.stop_reason)
        return outcome

    def close(self) -> None:
        """Stop the child (after its current attempt) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self.close()
        proc = subprocess.Popen(
            [sys.executable, "-m", "shepard.backends.procs", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None
        send(proc.stdin, self.ctx)
        self._proc = proc
        return proc


def _readable(stream: IO[bytes], timeout: float) -> bool:
    ready, _, _ = select.select([stream], [], [], timeout)
    return bool(ready)


class _Child:
    """The child's side: a reader thread takes messages, the main thread runs attempts."""

    def __init__(self, inbox: IO[bytes], outbox: IO[bytes], parent: int) -> None:
        self.inbox, self.outbox, self.parent = inbox, outbox, parent
        self.ctx: RuntimeContext = receive(inbox)
        self.jobs: queue.SimpleQueue[tuple[Job, Path | None] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.current: tuple[str, AttemptControl] | None = None

    def read(self) -> None:
        """Route messages; on EOF (the parent went away) stop the running attempt and quit."""
        while True:
            try:
                message = receive(self.inbox)
            except (EOFError, OSError):
                self._stop(None)
                self.jobs.put(None)
                return
            if message[0] == "run":
                self.jobs.put((message[1], message[2]))
            elif message[0] == "stop":
                self._stop(message[1])

    def serve(self) -> None:
        while (item := self.jobs.get()) is not None:
            job, slot = item
            control = AttemptControl()
            # never publish for a parent that is gone: its attempt will be run again
            control.still_current = lambda: os.getppid() == self.parent
            with self.lock:
                self.current = (job.id, control)
            outcome = run_attempt(job, self.ctx, control, slot=slot)
            with self.lock:
                self.current = None
            try:
                send(self.outbox, outcome)
            except OSError:  # the parent is gone; its attempt will be run again
                return

    def _stop(self, job_id: str | None) -> None:
        with self.lock:
            if self.current is not None and job_id in (None, self.current[0]):
                self.current[1].stop.set()


def main() -> None:
    import signal

    # Ctrl-C reaches the whole process group: the parent decides what stops, not us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = int(sys.argv[1])
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stray prints must not corrupt the channel
    child = _Child(sys.stdin.buffer, outbox, parent)
    threading.Thread(target=child.read, name="runner-inbox", daemon=True).start()
    child.serve()


if __name__ == "__main__":
    main()
