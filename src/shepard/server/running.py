"""The flock's jobs run inside `shepard serve`: the dispatcher and the inbox, as `shepard up`
runs them, in threads of the server's process.

`JobRunner` is built before the server starts any thread (a local backend starts its runner
processes as forks: see `Flock.open_backend`), started by the app's lifespan, and stopped by
it on shutdown: the stop event ends the dispatcher, which shuts the backend down as `up` does
on Ctrl-C (running jobs are stopped and queued again, without spending an attempt).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.triggers.scan import ScanResult

log = logging.getLogger(__name__)


class JobRunner:
    """Runs a flock's queued jobs (and, with `inbox`, its inbox) in a background thread."""

    def __init__(
        self,
        flock: Flock,
        *,
        workers: int | None = None,
        inbox: bool = True,
        inbox_interval: float | None = None,
        on_inbox: Callable[[ScanResult], None] | None = None,
    ) -> None:
        self.flock = flock
        self.inbox = inbox
        self.inbox_interval = inbox_interval
        self.on_inbox = on_inbox
        self.wakeup = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        flock.sweep_leftovers()  # of `batch` commands killed midway, as `up` does
        self.backend = flock.open_backend(workers=workers, wakeup=self.wakeup)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="shepard-dispatcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop running jobs (running ones are stopped and queued again) and wait for it."""
        self.stop.set()
        self.wakeup.set()
        if self._thread is None:
            self.backend.shutdown(kill=True)
            return
        self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            watch: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if self.inbox:
                from shepard.triggers import watching

                watch = watching(
                    self.flock, wakeup=self.wakeup, interval=self.inbox_interval,
                    on_result=self.on_inbox,
                )  # fmt: skip
            started = False
            try:
                with watch:
                    started = True
                    self.flock.run(self.stop, wakeup=self.wakeup, backend=self.backend)
            finally:
                if not started:  # the inbox could not start: run never shut the backend
                    self.backend.shutdown(kill=True)
        except Exception as exc:  # the API keeps serving; /healthz says jobs do not run
            self.error = exc
            log.exception("the dispatcher stopped: jobs are not run by this server")
