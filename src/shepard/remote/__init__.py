"""The CLI's remote mode: the job commands against a `shepard serve` over HTTP.

`SHEPARD_SERVER` (the server's URL) and `SHEPARD_TOKEN` (a token from `shepard token create`)
switch it on. Needs httpx (the `server` extra).
"""

from __future__ import annotations

import os

SERVER_ENV = "SHEPARD_SERVER"
TOKEN_ENV = "SHEPARD_TOKEN"


def server_url() -> str | None:
    """The server the CLI should talk to, if remote mode is on."""
    return os.environ.get(SERVER_ENV, "").strip() or None
