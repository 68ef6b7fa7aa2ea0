"""Shared helper for tests that need an external service (PostgreSQL, S3, a container engine).

Locally a missing service skips its tests with a loud reason; in CI (env CI == "true") the
same tests FAIL, so a broken service container can never turn a run green by skipping.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

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


S3_ENV = "SHEPARD_TEST_S3"


def s3_problem(endpoint: str | None) -> str | None:
    """None if the S3 server at `endpoint` answers, else why not."""
    if not endpoint:
        return f'{S3_ENV} is not set (start the server: eval "$(scripts/services-s3)")'
    try:
        with urllib.request.urlopen(endpoint, timeout=3):
            return None
    except urllib.error.HTTPError:
        return None  # it answered, if only to refuse an unsigned request
    except OSError as exc:
        return f"the S3 server at {endpoint} ({S3_ENV}) does not answer: {exc}"


def s3_endpoint() -> str:
    """The S3 test server's endpoint (env SHEPARD_TEST_S3, set by scripts/services-s3),
    with fake credentials and a region in the environment, as boto3's chain reads them;
    skips (locally) or fails (CI) the current test when the server is missing."""
    endpoint = os.environ.get(S3_ENV)
    require_service("the S3 server", s3_problem(endpoint))
    assert endpoint is not None
    for name, value in _FAKE_AWS.items():
        os.environ.setdefault(name, value)
    return endpoint


# moto accepts any credentials; these only keep boto3 from looking for real ones
_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


CHROMIUM_ENV = "SHEPARD_TEST_CHROMIUM"


def chromium_path() -> str:
    """Debian's Chromium for the browser tests (env SHEPARD_TEST_CHROMIUM, set by
    scripts/services-browser) with Playwright importable; skips (locally) or fails (CI) the
    current test when either is missing. Playwright's own browser download is never used."""
    path = os.environ.get(CHROMIUM_ENV)
    problem = None
    if not path:
        problem = f'{CHROMIUM_ENV} is not set (install it: eval "$(scripts/services-browser)")'
    elif not os.access(path, os.X_OK):
        problem = f"{path} ({CHROMIUM_ENV}) is not an executable"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (scripts/setup dev)"
    require_service("Chromium with Playwright", problem)
    assert path is not None
    return path
