"""backends/forked.py: a runner forked from this process, behind a Popen-like handle."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import IO

import pytest

from shepard.backends.forked import Forked, single_threaded


def echo(stdin: IO[bytes]) -> None:
    """Copy one line from the parent back to it, then exit 0."""
    os.write(1, stdin.readline())
    os._exit(0)


def until_end_of_input(stdin: IO[bytes]) -> None:
    os.write(1, b"ready")
    stdin.read()
    os._exit(0)


def sleep_then_exit(stdin: IO[bytes]) -> None:
    os.write(1, b"ready")
    time.sleep(30)
    os._exit(0)


def fail(stdin: IO[bytes]) -> None:
    raise RuntimeError("broken runner")


@pytest.fixture
def handler_in_parent() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_the_child_talks_over_its_pipes_and_its_status_is_collected() -> None:
    child = Forked(echo)
    child.stdin.write(b"hello\n")
    child.stdin.flush()
    assert child.stdout.readline() == b"hello\n"
    assert child.wait(timeout=30) == 0 and child.returncode == 0


def test_a_child_sees_its_end_of_input_although_a_later_child_was_forked() -> None:
    first = Forked(until_end_of_input)
    assert first.stdout.read(5) == b"ready"
    second = Forked(until_end_of_input, [first.stdin.fileno(), first.stdout.fileno()])
    assert second.stdout.read(5) == b"ready"
    first.stdin.close()  # the second child closed its copy: the first one sees the end
    assert first.wait(timeout=30) == 0
    second.stdin.close()
    assert second.wait(timeout=30) == 0


def test_a_sigterm_ends_the_child_even_when_the_parent_handles_it(
    handler_in_parent: None,
) -> None:
    child = Forked(sleep_then_exit)
    assert child.stdout.read(5) == b"ready"
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM


def test_kill_and_a_wait_that_times_out() -> None:
    child = Forked(sleep_then_exit)
    assert child.stdout.read(5) == b"ready"
    with pytest.raises(TimeoutError):
        child.wait(timeout=0.2)
    child.kill()
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.kill()  # already ended: nothing happens


def test_a_child_whose_main_fails_says_why_and_exits_1(capfd: pytest.CaptureFixture[str]) -> None:
    child = Forked(fail)
    assert child.wait(timeout=30) == 1
    assert "RuntimeError: broken runner" in capfd.readouterr().err


def test_single_threaded_sees_other_threads() -> None:
    import threading

    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert not single_threaded()
    finally:
        release.set()
        other.join()
