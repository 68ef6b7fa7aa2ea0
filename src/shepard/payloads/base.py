"""The payload protocol: what runs for a job, and how, behind one small interface.

A flock's `[payload] kind` names a payload kind; the runtime (runtime/worker.py) runs every
attempt through the three methods of `Payload`, in this order, and knows nothing else about
what the payload is:

1. `prepare` once the job's folders exist and the secrets are placed;
2. `environment` once the input bundle is in `input/`;
3. `run`, unless the attempt was stopped meanwhile.

A payload object is built once per worker process (`kind_class(kind).from_config(config)`)
and serves every attempt, from any thread: it must hold no per-attempt state. Its methods run
on the hot path of short jobs, so they do no imports and no I/O beyond what they document.

A new kind is one module holding one class that follows `PayloadKind`, plus one line in
`KINDS`; docs/payloads.md says more.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

from shepard.model import Job
from shepard.runtime.context import RuntimeContext
from shepard.runtime.process import ProcessResult
from shepard.runtime.workspace import Workspace

if TYPE_CHECKING:
    from shepard.config import FlockConfig, PayloadConfig

KINDS: dict[str, str] = {
    "command": "shepard.payloads.command:CommandPayload",
    "image": "shepard.payloads.image:ImagePayload",
    "quick-deploy": "shepard.payloads.quickdeploy:QuickDeployPayload",
    "tasks": "shepard.payloads.tasks:TasksPayload",
}
"""Every payload kind: its name in `[payload] kind` -> `module:class` (imported on first use)."""


class UnknownKind(ValueError):
    """`[payload] kind` names no registered kind; the message lists the known ones."""


class Launch(NamedTuple):
    """What `run` starts: `command` goes through `/bin/sh -c` (None: the payload's own, e.g.
    an image's entrypoint) in the working directory `cwd`."""

    command: str | None
    cwd: Path


class Payload(Protocol):
    """One payload kind, configured for one flock. Every method may be called from several
    threads at once, for different attempts."""

    kind: ClassVar[str]

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        """Decide what the attempt runs, and place in `ws` what that needs (e.g. a job's
        quick-deploy folder into `ws.input`).

        Called after `ws`'s folders are created and the secrets placed, before the input
        bundle is copied. Raises SetupError for a problem of this attempt (`retryable=False`
        when another attempt would meet it again: nothing to run, a bad parameter), or
        PayloadError when the payload itself cannot run; the runtime turns either into a
        FAILED outcome with an error bundle.
        """
        ...

    def environment(
        self,
        job: Job,
        ctx: RuntimeContext,
        *,
        start_time: int,
        ws: Workspace,
        base: Mapping[str, str],
    ) -> dict[str, str]:
        """The payload's complete environment, as the runtime contract says
        (`runtime.contract.build_env`, docs/runtime-contract.md): `base` is the worker's
        inherited environment, which a kind may keep (a process) or leave out (an image
        brings its own PATH, HOME, ...); the runtime variables are the same for every kind
        except for the host facts that the kind's sandbox changes (HOSTNAME, ULIMIT_FILENO,
        ALLOW_DOCKER_ACCESS). Pure: no I/O beyond reading this process's limits.
        """
        ...

    def run(
        self,
        launch: Launch,
        *,
        job: Job,
        ctx: RuntimeContext,
        ws: Workspace,
        env: Mapping[str, str],
        logs: tuple[Path, Path],
        deadline: float | None,
        stop: threading.Event,
        grace: float,
    ) -> ProcessResult:
        """Run `launch` with exactly `env` and stdin empty, and block until it ends.

        Guarantees:
        - stdout and stderr go to the two files of `logs` (created, truncated), readable while
          the payload runs;
        - at `deadline` (a time.monotonic() value; None: no limit) the result is TIMED_OUT, and
          once `stop` is set it is STOPPED (looked at at least every 0.1 s): SIGTERM first, then
          SIGKILL `grace` seconds later, to the payload's whole process group or container;
        - when it returns or raises, nothing it started is left running: the process group is
          killed, the container removed;
        - `returncode` is the exit status as Popen reports it (negative N: killed by signal N,
          also when a container was killed by the out-of-memory killer); 0 alone is success;
          `detail`, if not None, goes into the job's history.
        Raises PayloadError when the payload cannot be started at all (not retryable),
        SetupError for a problem another attempt may not meet (e.g. a lost container engine).
        """
        ...


class PayloadKind(Protocol):
    """What `KINDS` registers: a class that checks its settings and builds its Payload."""

    kind: ClassVar[str]

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        """Raise ValueError, with a message naming the keys to set or remove, when `payload`
        does not suit this kind. Called while flock.toml is validated."""
        ...

    @classmethod
    def from_config(cls, config: FlockConfig) -> Payload:
        """The Payload of a flock whose config has been validated (`check` passed)."""
        ...


def kind_class(kind: str) -> PayloadKind:
    """The class registered as `kind`, imported on first use; UnknownKind listing the known
    kinds when there is none."""
    try:
        module, _, name = KINDS[kind].partition(":")
    except KeyError:
        raise UnknownKind(
            f"unknown payload kind {kind!r}; known: {', '.join(sorted(KINDS))}"
        ) from None
    cls: PayloadKind = getattr(importlib.import_module(module), name)
    return cls


def open_payload(config: FlockConfig) -> Payload:
    """The Payload of `config`'s `[payload] kind`."""
    return kind_class(config.payload.kind).from_config(config)


def infer_kind(command: str | None, image: str | None) -> str:
    """The kind of a `[payload]` section written before `kind` existed: an image when one is
    set, else a command when one is set (not blank), else quick-deploy (jobs name their
    folder): what such a flock's jobs ran before."""
    if image is not None:
        return "image"
    return "command" if command and command.strip() else "quick-deploy"
