"""Library code may run inside a threaded server (issue 17): process-wide state changes, and
the private internals of the libraries we use, only where ALLOWED says, each with its reason.

The scan reads the source (no import): calls of os._exit, os.chdir, signal.signal, gc's
switches and atexit's private functions; the undocumented Typer attributes the CLI's start-up
shortcut replaces; struct-packed binary formats beside a library that writes them.
"""

from __future__ import annotations

import ast
import os
import signal
import threading
from pathlib import Path

import shepard
from shepard.cli.common import terminable

SRC = Path(shepard.__file__).parent

# (module, dotted name) pairs that change the whole process, or reach library internals
WATCHED = {
    ("os", "_exit"),
    ("os", "chdir"),
    ("os", "fchdir"),
    ("signal", "signal"),
    ("gc", "disable"),
    ("gc", "enable"),
    ("gc", "freeze"),
    ("gc", "unfreeze"),
    ("atexit", "_run_exitfuncs"),
    ("atexit", "_clear"),
    ("struct", "pack"),
    ("struct", "Struct"),
}
# undocumented attributes: Typer's command lists, the raw dict behind CPython's os.environ
WATCHED_ATTRIBUTES = {"registered_commands", "registered_groups", "_data"}

ENTRY = "the CLI's own entry point: the process is the `shepard` command"
TASK = "`python -m shepard.task`: a scheduler's task, a process of its own"
RUNNER = "the body of a runner process (only ever runs in the forked child)"
# path under src/shepard, enclosing function ("" for module level) -> {watched name: reason}
ALLOWED: dict[tuple[str, str], dict[str, str]] = {
    ("cli/launch.py", ""): {"gc.disable": ENTRY, "gc.freeze": ENTRY, "gc.enable": ENTRY},
    ("cli/launch.py", "leave"): {"atexit._run_exitfuncs": ENTRY, "os._exit": ENTRY},
    ("cli/common.py", "handling"): {
        "signal.signal": "the CLI commands' handlers, main thread of `shepard` only (checked)"
    },
    ("cli/fastpath.py", "narrowed"): {
        "registered_commands": "start-up shortcut: one module, measured, tested against Typer",
        "registered_groups": "start-up shortcut: one module, measured, tested against Typer",
    },
    ("task.py", ""): {"gc.disable": TASK, "os._exit": TASK},
    ("task.py", "main"): {"gc.enable": TASK, "signal.signal": TASK},
    ("tasks/__main__.py", "_stop_on_sigterm"): {
        "signal.signal": "`python -m shepard.tasks`, a tasks job's runner: a process of its own"
    },
    ("batch_task.py", ""): {"gc.disable": TASK, "os._exit": TASK},  # a Batch child's entry
    ("batch_task.py", "main"): {"signal.signal": TASK},
    ("backends/procs.py", "_serve"): {
        "signal.signal": RUNNER,
        "gc.freeze": RUNNER,
        "os._exit": RUNNER,
    },
    ("backends/procs.py", ""): {
        "struct.Struct": "the length prefix of the runner channel's messages: no library's format"
    },
    ("backends/forked.py", "Forked.__init__"): {"gc.freeze": RUNNER, "os._exit": RUNNER},
    ("backends/forked.py", "_default_signals"): {"signal.signal": RUNNER},
    ("runtime/process.py", "work_in"): {
        "os.chdir": "runner processes only: refuses unless become_runner_process was called"
    },
    ("runtime/environ.py", "inherited_env"): {
        "_data": "os.environ read once while unchanged: one module, measured, tested"
    },
    ("runtime/zipwriter.py", ""): {
        "struct.Struct": "the small zip writer beside zipfile: measured, tested against zipfile"
    },
    ("cli/jobs.py", "_collector_paused"): {
        "gc.disable": "`shepard submit` registering jobs: the CLI's own process (measured)",
        "gc.enable": "`shepard submit` registering jobs: the CLI's own process (measured)",
    },
}
MAY_BE_GONE: set[tuple[str, str]] = set()  # entries another branch may have removed


class _Finder(ast.NodeVisitor):
    """Collects (enclosing function, watched name, line) in one module."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.aliases: dict[str, tuple[str, str]] = {}  # `from os import chdir as cd`
        self.found: list[tuple[str, str, int]] = []

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if (node.module or "", alias.name) in WATCHED:
                self.aliases[alias.asname or alias.name] = (node.module or "", alias.name)
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scoped(node.name, node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node.name, node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and (node.value.id, node.attr) in WATCHED:
            self._add(f"{node.value.id}.{node.attr}", node)
        elif node.attr in WATCHED_ATTRIBUTES:
            self._add(node.attr, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(obj, "name", ...): an attribute read by name
        if isinstance(node.func, ast.Name) and node.func.id == "getattr" and len(node.args) > 1:
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value in WATCHED_ATTRIBUTES:
                self._add(str(name.value), node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in self.aliases:
            self._add(".".join(self.aliases[node.id]), node)

    def _scoped(self, name: str, node: ast.AST) -> None:
        self.scope.append(name)
        self.generic_visit(node)
        self.scope.pop()

    def _add(self, name: str, node: ast.expr) -> None:
        self.found.append((".".join(self.scope), name, node.lineno))


def find(source: str) -> list[tuple[str, str, int]]:
    finder = _Finder()
    finder.visit(ast.parse(source))
    return finder.found


def scan() -> dict[tuple[str, str], set[str]]:
    seen: dict[tuple[str, str], set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).as_posix()
        for function, name, _line in find(path.read_text()):
            seen.setdefault((module, _outermost(module, function)), set()).add(name)
    return seen


def _outermost(module: str, function: str) -> str:
    """`Class.method` or `function` (a nested function counts as its enclosing one)."""
    parts = function.split(".") if function else []
    if len(parts) >= 2 and (module, ".".join(parts[:2])) in ALLOWED:
        return ".".join(parts[:2])
    return parts[0] if parts else ""


def test_process_wide_state_changes_only_where_allowed() -> None:
    bad = [
        f"src/shepard/{module} ({function or 'module level'}): {name}"
        for (module, function), names in scan().items()
        for name in sorted(names - set(ALLOWED.get((module, function), {})))
    ]
    assert not bad, "process-wide state or library internals outside the allowlist:\n" + "\n".join(
        bad
    )


def test_the_allowlist_has_no_stale_entries() -> None:
    seen = scan()
    stale = [
        f"{place}: {name}"
        for place, names in ALLOWED.items()
        if place not in MAY_BE_GONE
        for name in names
        if name not in seen.get(place, set())
    ]
    assert not stale


def test_the_scan_finds_each_form_of_call() -> None:
    source = (
        "import os, gc\nfrom signal import signal as on\n"
        "gc.disable()\n"
        "def f():\n    os.chdir('/')\n    on(15, None)\n"
        "class C:\n    def m(self):\n        def inner():\n"
        "            app.registered_commands = []\n"
        "getattr(os.environ, '_data', None)\n"
    )
    assert sorted(find(source)) == [
        ("", "_data", 11),
        ("", "gc.disable", 3),
        ("C.m.inner", "registered_commands", 10),
        ("f", "os.chdir", 5),
        ("f", "signal.signal", 6),
    ]


def test_cli_signal_handlers_only_from_the_main_thread_and_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with terminable() as terminate:
        os.kill(os.getpid(), signal.SIGTERM)
        assert terminate.wait(5)
    assert signal.getsignal(signal.SIGTERM) == before
    errors: list[BaseException] = []

    def in_a_thread() -> None:
        try:
            with terminable():
                pass
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert [str(e) for e in errors] == [
        "signal handlers are installed by the main thread of the CLI only"
    ]
