"""What `shepard serve` was asked to do, as one value handed to the app factory."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from shepard.errors import ShepardError

DEFAULT_MAX_BODY = 128 << 20
"""Bytes a request body may carry by default: a shepherd start-job with a 64 MiB payload fits."""


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    shepherd: bool = False
    """Also serve shepherd's routes (/start-job, /jobs/{id}/status, ...)."""
    shepherd_token: bool = False
    """Require API tokens on shepherd's routes too (shepherd itself had no auth)."""
    insecure: bool = False
    """Allow plain HTTP on a non-loopback address."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body: int = DEFAULT_MAX_BODY
    dispatch: bool = True
    """Run the flock's jobs in this process too (the dispatcher and the inbox)."""

    def check(self) -> None:
        """Refuse settings that would expose tokens in clear text, with the fix."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ShepardError("give both --tls-cert and --tls-key, or neither")
        if not (1 <= self.port <= 65535):
            raise ShepardError(f"--port {self.port} is not a TCP port (1-65535)")
        if self.max_body < 1:
            raise ShepardError("--max-body must be at least 1 byte")
        if self.tls_cert is None and not self.insecure and not is_loopback(self.host):
            raise ShepardError(
                f"refusing to serve plain HTTP on {self.host}: tokens would cross the network "
                "in clear text; give --tls-cert and --tls-key, or --insecure if a proxy in "
                "front of this server terminates TLS"
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
