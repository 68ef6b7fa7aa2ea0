"""`shepard serve`: the flock over HTTP, and its jobs run in the same process."""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from shepard.cli import render
from shepard.cli.common import (
    FlockOption,
    NoInboxOption,
    WorkersOption,
    console,
    err_console,
    handling,
    open_flock,
)
from shepard.errors import ShepardError

if TYPE_CHECKING:
    import socket

    from shepard.flock import Flock
    from shepard.server.settings import ServeSettings
    from shepard.triggers.scan import ScanResult

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def byte_size(text: str) -> int:
    """Bytes of `--max-body`: a number of bytes, or with a unit (64M, 64MiB, 1G: powers of 1024)."""
    found = _SIZE.match(text)
    if not found:
        raise typer.BadParameter(f"{text!r} is not a size: give bytes, or e.g. 64M, 512K, 1G")
    return int(found.group(1)) * _UNITS[found.group(2).lower()]


def serve(
    flock: FlockOption = Path("."),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    shepherd: Annotated[
        bool, typer.Option("--shepherd", help="Also serve shepherd's API (/start-job, ...).")
    ] = False,
    shepherd_token: Annotated[
        bool,
        typer.Option("--shepherd-token", help="Require API tokens on shepherd's routes too."),
    ] = False,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure", help="Allow plain HTTP on a non-loopback address (TLS ends elsewhere)."
        ),
    ] = False,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate chain: serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
    max_body: Annotated[
        str,
        typer.Option(
            "--max-body",
            envvar="SHEPARD_MAX_BODY",
            help="Largest request body accepted (bytes, or 64M, 1G...); larger ones get 413.",
        ),
    ] = "64M",
    no_dispatch: Annotated[
        bool,
        typer.Option(
            "--no-dispatch",
            help="Only serve: run no jobs here (a `shepard up` elsewhere runs them).",
        ),
    ] = False,
    workers: WorkersOption = None,
    no_inbox: NoInboxOption = False,
) -> None:
    """Serve the flock's REST API (and, with --shepherd, shepherd's API) while running its
    jobs, in one process, until Ctrl-C. Clients authenticate with tokens from `shepard token
    create`."""
    try:
        import uvicorn

        from shepard.server.app import create_app
        from shepard.server.settings import ServeSettings
    except ImportError as exc:
        raise ShepardError(
            f"`shepard serve` needs the server extra ({exc.name} is missing): "
            "pip install 'shepard[server]'"
        ) from None
    settings = ServeSettings(
        host=host, port=port, shepherd=shepherd, shepherd_token=shepherd_token,
        insecure=insecure, tls_cert=tls_cert, tls_key=tls_key, max_body=byte_size(max_body),
        dispatch=not no_dispatch,
    )  # fmt: skip
    settings.check()
    f = open_flock(flock)
    f.count()  # a flock without its catalog is refused here, not at the first request
    runner = None
    if settings.dispatch:
        from shepard.server.running import JobRunner

        # before uvicorn starts threads: a local backend forks its runner processes now
        runner = JobRunner(f, workers=workers, inbox=not no_inbox, on_inbox=_report_inbox)
    app = create_app(f, settings, runner=runner)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )  # fmt: skip
    try:
        listening = _listen(host, port)
        _load(config, tls_cert, tls_key)
    except BaseException:
        if runner is not None:
            runner.close()
        raise
    _announce(f, settings, workers)
    try:
        # uvicorn handles Ctrl-C and SIGTERM itself (a graceful shutdown, then the app's
        # lifespan stops the jobs) and raises the signal again once done: these handlers
        # take it then, so that the command ends through its usual path
        with listening, handling(_after_shutdown, signal.SIGINT, signal.SIGTERM):
            uvicorn.Server(config).run(sockets=[listening])
    finally:
        if runner is not None:
            runner.close()  # when uvicorn could not start (the lifespan never ran)
    console.print(render.counts_table(f.counts()))


def _listen(host: str, port: int) -> socket.socket:
    import socket  # here, not at module level: every `shepard` command imports this module

    """A socket listening on host:port, or a ShepardError saying why it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ShepardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        hint = " (another server uses it: choose another --port)" if exc.errno == 98 else ""
        raise ShepardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}") from None
    return sock


def _load(config: Any, cert: Path | None, key: Path | None) -> None:
    """Load uvicorn's config, the certificate and key included: refused here, with the
    files named, rather than halfway through starting."""
    import ssl

    try:
        config.load()
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ShepardError(
            f"cannot serve HTTPS with --tls-cert {cert} and --tls-key {key}: {reason} "
            "(give a PEM certificate chain and its PEM private key)"
        ) from None


def _after_shutdown(signum: int, frame: Any) -> None:
    """A signal uvicorn has already acted on (see `serve`)."""


def _announce(f: Flock, settings: ServeSettings, workers: int | None) -> None:
    scheme = "https" if settings.tls else "http"
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    url = f"{scheme}://{host}:{settings.port}"
    if settings.dispatch:
        n = workers or f.config.backend.workers
        jobs = f"running its jobs: {f.config.backend.kind} backend, {n} workers"
    else:
        jobs = "not running its jobs: --no-dispatch"
    if not console.is_terminal:
        sys.stdout.write(f"serving flock {f.config.name} at {url}, {jobs}\n")
        sys.stdout.flush()
        return
    console.print(
        f"[bold]serving flock {escape(f.config.name)}[/] at [link={url}]{url}[/link], "
        f"{escape(jobs)}; Ctrl-C to stop"
    )
    console.print(f"  API docs: {url}/api/v1/docs   metrics: {url}/metrics", markup=False)
    console.print(
        "  clients send `Authorization: Bearer <token>`; make one with `shepard token create NAME`",
        markup=False,
    )


def _report_inbox(result: ScanResult) -> None:
    if result.jobs:
        console.print(f"inbox: registered {len(result.jobs)} bundle(s)")
    for r in result.rejected:
        err_console.print(f"[red]inbox: rejected {escape(r.name)}[/]: {escape(r.reason)}")
