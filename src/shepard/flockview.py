"""A flock described for clients (`GET /api/v1/flock`, the dashboard): its config as loaded,
with what must not leave the server removed.

A flock.toml may hold secrets in two places: URLs with a password (a PostgreSQL catalog, an
S3 endpoint) and values of variables meant for jobs (`[payload] env`). Passwords in URLs are
replaced, so is every value of `payload.env` (whatever its name: jobs are often given tokens
under plain names), and so is the value of every key whose name says it is a secret.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from shepard.config import STORE_NAMES
from shepard.views import FlockView

if TYPE_CHECKING:
    from shepard.flock import Flock

HIDDEN = "***"
_SECRET_NAME = re.compile(r"secret|passw|token|credential|api[_-]?key|private|auth", re.I)


def flock_view(flock: Flock) -> FlockView:
    cfg = flock.config
    return FlockView(
        name=cfg.name,
        backend=cfg.backend.kind,
        workers=cfg.backend.workers,
        payload=cfg.payload.kind,
        stores={name: flock.dir.store_url(name) for name in STORE_NAMES},
        catalog=hide_password(flock.dir.catalog_url),
        config=redacted(_env_hidden(cfg.model_dump(mode="json"))),
    )


def _env_hidden(data: dict[str, Any]) -> dict[str, Any]:
    payload = data.get("payload")
    if isinstance(payload, dict) and isinstance(payload.get("env"), dict):
        payload["env"] = {key: HIDDEN for key in payload["env"]}
    return data


def redacted(value: Any, key: str = "") -> Any:
    """`value` (JSON data) with secret-named keys' values and URL passwords replaced."""
    if isinstance(value, dict):
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, key) for v in value]
    if isinstance(value, str):
        return HIDDEN if _SECRET_NAME.search(key) and value else hide_password(value)
    return value


def hide_password(text: str) -> str:
    """`text` with the password of a URL (`scheme://user:password@host/...`) replaced."""
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if not password:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{HIDDEN}@{host}"))
