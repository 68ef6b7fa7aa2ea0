"""Verified tokens, remembered for a second.

Checking a token is one catalog read, which cost more than registering the job itself in a
single-job submission (about 2.5 times, measured with `bench/serve_submit.py`'s load).
A token seen valid is trusted again for `TTL` seconds: a token revoked through this server
is forgotten at once, one revoked elsewhere (`shepard token revoke` in another process) is
refused within `TTL`. Unknown tokens are never remembered.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from shepard.views import TokenView

TTL = 1.0
"""Seconds a verified token is trusted without asking the catalog again."""
MAX_KEPT = 10_000


class TokenCache:
    def __init__(
        self,
        verify: Callable[[str], TokenView | None],
        *,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._verify, self._ttl, self._clock = verify, ttl, clock
        self._seen: dict[str, tuple[TokenView, float]] = {}

    def verify(self, secret: str) -> TokenView | None:
        """The token `secret` belongs to, or None (unknown or revoked)."""
        key = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
        now = self._clock()
        hit = self._seen.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]
        token = self._verify(secret)
        if token is None:
            self._seen.pop(key, None)
            return None
        if len(self._seen) >= MAX_KEPT:
            self._seen.clear()
        self._seen[key] = (token, now + self._ttl)
        return token

    def forget(self) -> None:
        """Trust nothing remembered (after a token was revoked here)."""
        self._seen.clear()
