"""Dashboard sessions: a signed cookie standing for an API token, and CSRF checks.

Signing in pastes an API token; the cookie then holds the token's sha256 digest (the value
the catalog keeps, never the secret) and a random CSRF value, signed with the flock's
dashboard key (itsdangerous, HMAC-SHA1 over the payload and a timestamp). Every request
looks the digest up again, so revoking the token ends its sessions at once. The cookie is
HttpOnly, SameSite=Strict, and Secure when the server speaks TLS.

Forms carry the session's CSRF value in a hidden field (scripts send it as the
`X-CSRF-Token` header); the sign-in form, which has no session yet, uses a signed CSRF
cookie of its own (double submit). Both compare in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

log = logging.getLogger(__name__)

COOKIE = "shepard_session"
PRE_COOKIE = "shepard_signin"
MAX_AGE = 12 * 3600
"""Seconds a session lasts after signing in."""
KEY_FILE = ".dashboard-key"


@dataclass(frozen=True)
class Session:
    """Who is signed in: the token's name, whether it is read-only, the CSRF value."""

    name: str
    read_only: bool
    csrf: str
    digest: str


def load_key(folder: Path) -> bytes:
    """The flock's dashboard signing key, kept in `<flock folder>/.dashboard-key` (mode 0600,
    made on first use) so that sessions outlive a restart of the server. A folder that cannot
    be written gets a key for this server's lifetime only (a warning says so)."""
    path = folder / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        pass
    except OSError as exc:
        log.warning("cannot read %s (%s): sessions end when the server stops", path, exc)
        return secrets.token_bytes(32)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server made it meanwhile: use theirs
        return bytes.fromhex(path.read_text().strip())
    except OSError as exc:
        log.warning("cannot write %s (%s): sessions end when the server stops", path, exc)
        return key
    with os.fdopen(fd, "w") as out:
        out.write(key.hex() + "\n")
    return key


class Signer:
    """Makes and reads the session and sign-in cookies with one key."""

    def __init__(self, key: bytes) -> None:
        self._session = URLSafeTimedSerializer(key, salt="shepard-session")
        self._signin = URLSafeTimedSerializer(key, salt="shepard-signin")

    def session_cookie(self, digest: str) -> tuple[str, str]:
        """(cookie value, CSRF value) of a new session for the token with this digest."""
        csrf = secrets.token_urlsafe(24)
        return self._session.dumps({"d": digest, "c": csrf}), csrf

    def read_session(self, value: str | None) -> tuple[str, str] | None:
        """(digest, CSRF value) of a valid, unexpired session cookie, else None."""
        if not value:
            return None
        try:
            data = self._session.loads(value, max_age=MAX_AGE)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        digest, csrf = data.get("d"), data.get("c")
        if not isinstance(digest, str) or not isinstance(csrf, str):
            return None
        return digest, csrf

    def signin_cookie(self) -> tuple[str, str]:
        """(cookie value, form value) for the sign-in form's double-submit check."""
        nonce = secrets.token_urlsafe(24)
        return self._signin.dumps(nonce), nonce

    def signin_ok(self, cookie: str | None, form_value: str) -> bool:
        if not cookie or not form_value:
            return False
        try:
            nonce = self._signin.loads(cookie, max_age=3600)
        except BadSignature:
            return False
        return isinstance(nonce, str) and same(nonce, form_value)


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two texts."""
    return hmac.compare_digest(a.encode(), b.encode())
