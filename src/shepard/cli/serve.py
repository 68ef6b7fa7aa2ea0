"""`shepard serve`: the flock over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shepard.cli.common import FlockOption, open_flock
from shepard.errors import ShepardError


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
) -> None:
    """Serve the flock's REST API (and, with --shepherd, shepherd's API) while running its
    jobs, in one process. Clients authenticate with tokens from `shepard token create`."""
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
        insecure=insecure, tls_cert=tls_cert, tls_key=tls_key,
    )  # fmt: skip
    settings.check()
    f = open_flock(flock)
    app = create_app(f, settings)
    uvicorn.run(
        app, host=host, port=port, log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )  # fmt: skip
