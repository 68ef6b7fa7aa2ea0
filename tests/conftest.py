"""Settings for every tier."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal gives it, for this process and the commands the tests start.

    A shell starts a background job (`pytest ... &` in a script, as scripts/test runs one half
    of the suite) with SIGINT ignored, and a program inherits an ignored signal across exec:
    every `shepard up` or `query --watch` a test interrupts would then never see its Ctrl-C.
    A handler of our own is reset to the default in each child instead.
    """
    del config
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


LAST = ("tests/unit/test_server_schema.py",)
"""Run after every other test of their process: schemathesis's ASGI client leaves a thread
behind (an anyio portal), and the tests that fork refuse to run beside other threads."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    del config
    items.sort(key=lambda item: item.nodeid.split("::")[0] in LAST)  # stable: order kept
