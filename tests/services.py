"""Shared helper for tests that need an external service (PostgreSQL, S3, a container engine).

Locally a missing service skips its tests with a loud reason; in CI (env CI == "true") the
same tests FAIL, so a broken service container can never turn a run green by skipping.
"""

from __future__ import annotations

import os

import pytest


def require_service(name: str, reason: str | None) -> None:
    """Skip (locally) or fail (CI) the current test when `name` is unavailable.

    `reason` is None when the service is available, else why it is not.
    """
    if reason is None:
        return
    message = f"{name} is NOT AVAILABLE, so this test did not run: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing service is an error)", pytrace=False)
    pytest.skip(message)
