"""The `shepard` entry point: exit codes as sys.exit gives them, exit handlers and output
kept when the interpreter's teardown is skipped, a normal exit while threads still run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shepard.cli.launch import exit_status


@pytest.mark.parametrize(
    ("code", "status"), [(None, 0), (0, 0), (2, 2), (256, 0), (-1, 255), ("bye", 1)]
)
def test_exit_status_is_what_sys_exit_gives(code: int | str | None, status: int) -> None:
    assert exit_status(code) == status


def _leave(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import atexit, sys, threading, time
        from shepard.cli.launch import leave
        out = {str(tmp_path / "atexit.txt")!r}
        atexit.register(lambda: open(out, "w").write("ran"))
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )


def test_leave_runs_exit_handlers_flushes_output_and_keeps_the_code(tmp_path: Path) -> None:
    done = _leave(tmp_path, 'sys.stdout.write("unflushed"); leave(3)')
    assert done.returncode == 3
    assert done.stdout == "unflushed"
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def test_leave_prints_a_string_code_and_fails(tmp_path: Path) -> None:
    done = _leave(tmp_path, 'leave("cannot go on")')
    assert done.returncode == 1
    assert done.stderr.strip() == "cannot go on"


def test_leave_waits_for_a_thread_that_is_not_a_daemon(tmp_path: Path) -> None:
    done = _leave(
        tmp_path,
        """
        def late():
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        leave(0)
        """,
    )
    assert done.returncode == 0
    assert done.stdout == "thread finished\n"
    assert (tmp_path / "atexit.txt").read_text() == "ran"


def test_the_cli_loads_no_module_that_most_commands_never_use() -> None:
    """Every command pays for what the CLI imports: SQLAlchemy's PostgreSQL dialect, its
    driver and `cryptography` are loaded only by the commands (and catalogs) that use them."""
    unused = ("cryptography", "sqlalchemy.dialects.postgresql", "psycopg")
    script = (
        f"import sys, shepard.cli.main; print([m for m in sys.modules if m.startswith({unused})])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
