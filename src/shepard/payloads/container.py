"""Running a payload in a container, through the Docker Engine API (Docker or Podman).

`run_container` is the container twin of `runtime.process.run_payload`: the same ProcessResult
and Ending (its `detail` names the image that ran), the same deadline, stop event and grace.
The container gets the job's environment, its folders bind-mounted at the same absolute paths
(so every path in the environment means the same inside), the flock's limits, and no
privileges; its stdout and stderr are copied into the attempt's two log files while it runs.
Whatever happens, the container is removed before `run_container` returns.

The engine is driven with create / start / wait / logs / kill / remove; `containers.run`
is not used (its attached output hangs with some Podman versions).
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from shepard.errors import PayloadError
from shepard.payloads.container_engine import (
    LABEL_JOB,
    Engine,
    connect,
    engine_url,
    forget,
    gpu_problem,
    import_docker,
    remove_labelled,
)
from shepard.payloads.container_options import ContainerSpec, Mount, create_options
from shepard.runtime.process import KILL_GRACE, Ending, ProcessResult, wait_for_end
from shepard.runtime.workspace import SetupError

log = logging.getLogger(__name__)

FIRST_LOOK = 0.02  # seconds after the start of the first look at the container's state
INSPECT_EVERY = 1.0  # longest time between two looks at the container's state
SIGKILL_STATUS = 128 + 9  # how engines report a container killed by SIGKILL


def run_container(
    spec: ContainerSpec,
    command: str | None,
    *,
    cwd: Path,
    env: Mapping[str, str],
    mounts: Sequence[Mount],
    labels: Mapping[str, str],
    name: str,
    stdout: Path,
    stderr: Path,
    deadline: float | None,
    stop: threading.Event,
    grace: float = KILL_GRACE,
) -> ProcessResult:
    """Run `spec.image` as the module docstring says; the container is always removed.

    `labels` must hold LABEL_JOB: containers an earlier attempt of that job left behind (a
    worker killed with kill -9) are removed first. On timeout or `stop` the container's PID 1
    gets SIGTERM, passes it on to the payload, and SIGKILL follows after `grace` seconds.
    Raises PayloadError when another attempt would fail the same way (image missing and not
    pullable, a command the engine cannot start, GPUs this host lacks), SetupError when the
    engine cannot be reached or a log file cannot be opened.
    """
    url = engine_url(spec.engine)
    problem = gpu_problem("all" if spec.gpus < 0 else spec.gpus, url)
    if problem is not None:
        raise PayloadError(problem)
    files = _open_logs(stdout, stderr)
    try:
        with _engine_errors(url):
            engine = connect(url)
            remove_labelled(engine, {LABEL_JOB: labels[LABEL_JOB]})
            options = create_options(
                spec, command, cwd=cwd, env=env, mounts=mounts, labels=labels, name=name,
                url=url, rootless=engine.rootless,
            )  # fmt: skip
            container = _create(engine, spec, options)
            try:
                ending, code = _run(engine, spec, container.id, files, deadline, stop, grace)
            finally:
                _remove(container)
    finally:
        for fh in files:
            fh.close()
    if ending is Ending.EXITED and code != 0:
        _check_started(spec.image, container.attrs, stderr)
    image_id = str(container.attrs.get("Image") or "").removeprefix("sha256:")[:12]
    return ProcessResult(ending, code, f"image {spec.image} (id {image_id or 'unknown'})")


def _open_logs(stdout: Path, stderr: Path) -> tuple[IO[bytes], IO[bytes]]:
    """Create (truncate) both log files; raise SetupError naming the one that failed."""
    opened: list[IO[bytes]] = []
    try:
        for path in (stdout, stderr):
            path.parent.mkdir(parents=True, exist_ok=True)
            opened.append(open(path, "wb", buffering=0))  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        for fh in opened:
            fh.close()
        raise SetupError(f"cannot open the log file {exc.filename}: {exc.strerror}") from exc
    return opened[0], opened[1]


@contextlib.contextmanager
def _engine_errors(url: str) -> Iterator[None]:
    """Turn an engine that stopped answering into a retryable SetupError."""
    docker = import_docker()
    try:
        yield
    except docker.errors.APIError as exc:  # one the steps above did not explain
        raise SetupError(f"the container engine at {url} failed: {_explain(exc)}") from exc
    except (docker.errors.DockerException, OSError, _requests_errors()) as exc:
        forget(url)
        raise SetupError(f"lost the container engine at {url}: {exc}") from exc


def _requests_errors() -> type[Exception]:
    import requests

    return requests.exceptions.RequestException


def _create(engine: Engine, spec: ContainerSpec, options: dict[str, Any]) -> Any:
    """Create the container, pulling the image first as `spec.pull` says."""
    docker = import_docker()
    if spec.pull == "always":
        _pull(engine, spec.image)
    try:
        try:
            return engine.client.containers.create(**options)
        except docker.errors.ImageNotFound:
            if spec.pull == "never":
                raise PayloadError(
                    f"image {spec.image} not found on the container engine at {engine.url} "
                    '(container.pull = "never"): build it with `shepard deploy`, or load it'
                ) from None
            _pull(engine, spec.image)
            return engine.client.containers.create(**options)
    except docker.errors.APIError as exc:
        raise PayloadError(f"cannot create a container of {spec.image}: {_explain(exc)}") from exc


def _pull(engine: Engine, image: str) -> None:
    """Pull `image`; PayloadError with the engine's own words when that fails."""
    docker = import_docker()
    repository, tag = docker.utils.parse_repository_tag(image)
    problem = None
    try:
        for item in engine.client.api.pull(repository, tag or "latest", stream=True, decode=True):
            problem = item.get("error") or problem
    except docker.errors.APIError as exc:
        problem = _explain(exc)
    if problem:
        raise PayloadError(
            f"image {image} not found on the container engine at {engine.url}, and pulling it "
            f"failed: {' '.join(str(problem).split())}; build it with `shepard deploy`, or "
            "load it"
        )


def _explain(exc: Any) -> str:
    """The engine's own words for an APIError, on one line."""
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())


def _run(
    engine: Engine,
    spec: ContainerSpec,
    container_id: str,
    files: tuple[IO[bytes], IO[bytes]],
    deadline: float | None,
    stop: threading.Event,
    grace: float,
) -> tuple[Ending, int]:
    """Start the container, copy its logs, wait for its end (or stop it); how it ended."""
    docker = import_docker()
    api = engine.client.api
    try:
        api.start(container_id)
    except docker.errors.APIError as exc:
        raise PayloadError(f"cannot start the container of {spec.image}: {_explain(exc)}") from exc
    streams = ("stdout", "stderr")
    pumps = [_LogPump(engine, container_id, fh, s) for fh, s in zip(files, streams, strict=True)]
    watch = _ExitWatch(engine, container_id)
    try:
        ending = wait_for_end(watch, deadline, stop)
        if ending is not Ending.EXITED:
            _signal(api, container_id, "SIGTERM")
            if not watch.wait(grace):
                _signal(api, container_id, "SIGKILL")
                watch.wait(30.0)
        code = watch.status()
        for pump in pumps:
            pump.finish()
    finally:
        for pump in pumps:
            pump.cancel()
    if code == SIGKILL_STATUS and _oom_killed(api, container_id):
        code = -9  # the out-of-memory killer: reported as for a process payload
    return ending, code


# What the init programs engines run as PID 1 (catatonit with Podman, tini with Docker) print
# when they cannot execute the container's command: a container that never ran its payload.
_EXEC_FAILED = re.compile(
    r"^(ERROR \(catatonit:\d+\): failed to exec pid1: .*"
    r"|\[FATAL tini \(\d+\)\] exec .* failed: .*)$",
    re.MULTILINE,
)


def _check_started(image: str, attrs: Mapping[str, Any], stderr: Path) -> None:
    """Raise PayloadError when the container's init could not execute its command."""
    try:
        with open(stderr, "rb") as fh:
            head = fh.read(4096).decode(errors="replace")
    except OSError:
        return
    match = _EXEC_FAILED.search(head)
    if match is None:
        return
    config = attrs.get("Config") or {}
    argv = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    raise PayloadError(
        f"cannot start the container of {image}: its command {argv} could not be executed "
        f"({match.group(1).strip()})"
    )


def _signal(api: Any, container_id: str, signal: str) -> None:
    docker = import_docker()
    with contextlib.suppress(docker.errors.APIError):  # it may have ended meanwhile
        api.kill(container_id, signal=signal)


def _oom_killed(api: Any, container_id: str) -> bool:
    state = api.inspect_container(container_id).get("State") or {}
    return bool(state.get("OOMKilled"))


def _remove(container: Any) -> None:
    """Remove the container (and its anonymous volumes), even if it still runs."""
    try:
        container.remove(force=True, v=True)
    except Exception as exc:  # the next attempt of the job removes it by its label
        log.warning("could not remove container %s: %s", container.id[:12], exc)


class _ExitWatch:
    """Waits for the container's end. A thread blocks in the engine's `wait` call, and the
    container's state is looked at too, 20 ms after the start and then at doubling intervals
    up to INSPECT_EVERY: some engines (Podman) answer `wait` only a quarter of a second after
    the end, which would be most of the cost of a short job, and an engine whose `wait` never
    answers is covered as well."""

    def __init__(self, engine: Engine, container_id: str) -> None:
        self.api, self.id = engine.client.api, container_id
        self._done = threading.Event()
        self._code: int | None = None
        self._delay = FIRST_LOOK
        self._next_look = time.monotonic() + self._delay
        threading.Thread(target=self._block, name="container-wait", daemon=True).start()

    def _block(self) -> None:
        try:
            result = self.api.wait(self.id, timeout=None)
            self._code = int(result["StatusCode"])
        except Exception:  # removed, or the engine went away: status() finds out
            pass
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """True once the container has ended; False after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if now >= self._next_look:
                self._delay = min(self._delay * 2, INSPECT_EVERY)
                self._next_look = now + self._delay
                if self._inspect() is not None:
                    return True
            left = end - now
            if left <= 0:
                return self._done.is_set()
            if self._done.wait(min(left, self._next_look - now)):
                return True

    def status(self) -> int:
        """The container's exit status (after `wait` said it ended)."""
        if self._code is not None:
            return self._code
        code = self._inspect()
        if code is None:
            raise SetupError("the container engine lost track of the container")
        return code

    def _inspect(self) -> int | None:
        state = self.api.inspect_container(self.id).get("State") or {}
        if state.get("Status") in ("exited", "dead", "stopped"):
            self._code = int(state.get("ExitCode", -1))
            self._done.set()
        return self._code


class _LogPump:
    """Copies one stream of a container's output into a log file while the container runs
    (so `shepard logs` shows it live); `finish` completes the file once the container ended.
    A large log thus crosses the engine's socket twice; a short one costs one more call."""

    def __init__(self, engine: Engine, container_id: str, fh: IO[bytes], stream: str) -> None:
        self.engine, self.id, self.fh = engine, container_id, fh
        self.which = {"stdout": stream == "stdout", "stderr": stream == "stderr"}
        self.lock = threading.Lock()  # guards the file, `written`, `stopped` and `response`
        self.written = 0  # bytes copied into the file
        self.stopped = False
        self.response: Any = None
        self.done = threading.Event()
        threading.Thread(target=self._follow, name=f"logs-{stream}", daemon=True).start()

    def _follow(self) -> None:
        try:
            response = self.engine.client.api.logs(self.id, stream=True, follow=True, **self.which)
            with self.lock:  # `cancel` closes the stream, or this thread sees it was called
                self.response, stopped = response, self.stopped
            if stopped:
                _close(response)
                return
            for chunk in response:
                with self.lock:
                    if self.stopped:
                        return
                    self._write(chunk)
        except Exception:  # the log is read again in full by `finish`
            log.debug("log stream of container %s ended", self.id[:12], exc_info=True)
        finally:
            self.done.set()

    def _write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.written += len(chunk)

    def finish(self) -> None:
        """Called once the container has ended: close the stream, read the whole log once
        more, and append what the stream had not delivered (the same bytes in the same order,
        so that part is known by its length). Follow streams cannot be trusted to end at the
        end of the log: Podman ends them late, early (before the last output), or never."""
        self.cancel()  # the thread writes nothing more, and ends when its stream does
        chunks = self.engine.client.api.logs(self.id, stream=True, follow=False, **self.which)
        with self.lock:
            skip = self.written
            for chunk in chunks:
                if skip >= len(chunk):
                    skip -= len(chunk)
                    continue
                self._write(chunk[skip:])
                skip = 0

    def cancel(self) -> None:
        """Stop copying and close the stream (idempotent)."""
        with self.lock:
            self.stopped = True
            response = self.response
        if response is not None and not self.done.is_set():
            _close(response)


def _close(response: Any) -> None:
    """Close a log stream; a thread blocked reading it then ends (socket timeouts are off
    for log streams, so nothing else would end a stream the engine keeps open)."""
    with contextlib.suppress(Exception):
        response.close()
