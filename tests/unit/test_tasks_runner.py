"""The tasks runner's semantics, table by table: phases and modes, the error flow, exit codes,
substitution, fan-out, timeouts, capture and move. Commands are real `/bin/sh` processes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from shepard.tasks import document
from shepard.tasks.runner import Context, exit_status, run


def run_doc(
    tmp_path: Path, doc: dict[str, Any], env: dict[str, str] | None = None
) -> tuple[int, list[str], list[str]]:
    """Run `doc` in tmp_path; (exit code, steps started as `kind:name`, every message)."""
    said: list[str] = []
    full_env = {"PATH": os.environ["PATH"], **(env or {})}
    checked = document.check(document.substitute(doc, full_env), "test")
    ctx = Context(
        env=full_env,
        cwd=tmp_path,
        mode=full_env.get("MODE_STR") or "default",
        local_mode=full_env.get("LOCAL_MODE") == "1",
        cores=2,
        say=said.append,
    )
    code = run(checked, ctx)
    started = [
        m.split(" [")[0] + ":" + m.split("[")[1].split("]")[0]
        for m in said
        if m.endswith(": starting")
    ]
    return code, started, said


def task(name: str, command: str = "true", **more: Any) -> dict[str, Any]:
    return {"name": name, "command": command, **more}


def doc_of(**phases: Any) -> dict[str, Any]:
    return {"programName": "p", "itemName": "i", **phases}


# -- phases, modes, error flow --------------------------------------------------------------

STORE_MISSING = {"name": "s", "bucket": "b", "source": "no", "dest": "d"}

FLOW = [
    # (id, document phases, env, expected exit code, steps started)
    (
        "phases run in document order",
        {
            "move": [{"name": "m", "inputFolder": "x", "includeFilePattern": ["*"],
                      "outputFolder": "y"}],
            "tasks": [task("t")],
        },
        {}, 0, ["move:m", "tasks:t"],
    ),
    (
        "include by substring (the original's rule, quirk included)",
        {"tasks": [task("a", includeWhenMode="full,post"), task("b", includeWhenMode="postprocess"),
                   task("c", includeWhenMode="full")]},
        {"MODE_STR": "post"}, 0, ["tasks:a", "tasks:b"],
    ),
    (
        "an array of modes is matched exactly",
        {"tasks": [task("a", includeWhenMode=["post"]), task("b", includeWhenMode=["postx"])]},
        {"MODE_STR": "post"}, 0, ["tasks:a"],
    ),
    (
        "exclude by substring",
        {"tasks": [task("a", excludeWhenMode="post"), task("b")]},
        {"MODE_STR": "post"}, 0, ["tasks:b"],
    ),
    (
        "an empty MODE_STR is the default mode",
        {"tasks": [task("a", includeWhenMode="default"), task("b", excludeWhenMode="default")]},
        {"MODE_STR": ""}, 0, ["tasks:a"],
    ),
    (
        "a failure ends its phase at once, even before a required step",
        {"tasks": [task("a", "exit 5"), task("b", required=True)]},
        {}, 5, ["tasks:a"],
    ),
    (
        "exitOnError false: a warning, the job succeeds",
        {"tasks": [task("a", "exit 5", exitOnError=False), task("b")]},
        {}, 0, ["tasks:a", "tasks:b"],
    ),
    (
        "after a failed phase only required steps run, and the first code stays",
        {
            "tasks": [task("a", "exit 55")],
            "move": [{"name": "m", "inputFolder": "x", "includeFilePattern": ["*"],
                      "outputFolder": "y"}],
            "store": [
                {"name": "s", "bucket": "b", "source": "nope", "dest": "d"},
                {"name": "r", "bucket": "b", "source": "nope", "dest": "d", "required": True},
            ],
        },
        {}, 55, ["tasks:a", "store:r"],
    ),
    (
        "LOCAL_MODE=1 skips the store phase",
        {"tasks": [task("a")], "store": [STORE_MISSING]},
        {"LOCAL_MODE": "1"}, 0, ["tasks:a"],
    ),
    (
        "a store source that does not exist: 43",
        {"tasks": [task("a")], "store": [STORE_MISSING]},
        {}, 43, ["tasks:a", "store:s"],
    ),
    (
        "an unexpected error in a step: 4, and the phase ends",
        {"tasks": [task("a", outputFolder="f/sub"), task("b")]},
        {}, 4, ["tasks:a"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("phases", "env", "code", "started"), [c[1:] for c in FLOW],
                         ids=[c[0] for c in FLOW])  # fmt: skip
def test_flow(
    tmp_path: Path, phases: dict[str, Any], env: dict[str, str], code: int, started: list[str]
) -> None:
    (tmp_path / "f").write_text("a file where a folder is wanted")
    got_code, got_started, said = run_doc(tmp_path, doc_of(**phases), env)
    assert (got_code, got_started) == (code, started), said


# -- exit codes of a task ---------------------------------------------------------------------

CODES = [
    ("its own status", task("t", "exit 55"), 55),
    ("killed by SIGKILL: 256 - 9", task("t", "kill -9 $$"), 247),
    ("killed by SIGTERM: 256 - 15", task("t", "kill -15 $$"), 241),
    ("a timeout: 244", task("t", "sleep 20", timeout=1), 244),
    ("no input file: 232", task("t", inputFolder=".", inputFilePattern="*.none"), 232),
    ("no input file, exitOnError false: 0",
     task("t", inputFolder=".", inputFilePattern="*.none", exitOnError=False), 0),
    ("success", task("t", "true"), 0),
]  # fmt: skip


@pytest.mark.parametrize(("step", "code"), [c[1:] for c in CODES], ids=[c[0] for c in CODES])
def test_exit_codes(tmp_path: Path, step: dict[str, Any], code: int) -> None:
    got, _, said = run_doc(tmp_path, doc_of(tasks=[step]))
    assert got == code, said


@pytest.mark.parametrize(
    ("raw", "status"), [(0, 0), (3, 3), (255, 255), (-9, 247), (512, 255), (32512, 255)]
)
def test_exit_status_is_never_zero_for_a_failure(raw: int, status: int) -> None:
    assert exit_status(raw) == status


# -- substitution -----------------------------------------------------------------------------

SUBSTITUTION = [
    ("${WORK_ITEM}", "Dam001/Period03"),
    ("$WORK_ITEM.7z", "Dam001/Period03.7z"),
    ("$WORK_ITEMx", "$WORK_ITEMx"),  # the longest name, undefined: left as is
    ("${UNDEFINED}/x", "${UNDEFINED}/x"),
    ("$(echo hi) $$", "$(echo hi) $$"),
    ("q=${QUOTE}", 'q=say "hi" \\ there'),  # no JSON text to break
    ("./Output/$Dam{SITE_NAME}/Period${PERIOD_ID}", "./Output/$Dam{SITE_NAME}/Period${PERIOD_ID}"),
]


@pytest.mark.parametrize(("text", "expected"), SUBSTITUTION)
def test_substitution(text: str, expected: str) -> None:
    env = {"WORK_ITEM": "Dam001/Period03", "QUOTE": 'say "hi" \\ there'}
    assert document.substitute({"k": [text]}, env) == {"k": [expected]}


def test_substitution_reaches_commands(tmp_path: Path) -> None:
    step = task("t", "echo ${WORK_ITEM} $WORK_ITEM.7z $NOPE > out.txt")
    code, _, _ = run_doc(tmp_path, doc_of(tasks=[step]), {"WORK_ITEM": "w1"})
    assert code == 0
    assert (tmp_path / "out.txt").read_text() == "w1 w1.7z\n"  # $NOPE: the shell's empty


# -- fan-out, timeouts, capture -------------------------------------------------------------


def test_fan_out_runs_each_input_file_within_the_workers(tmp_path: Path) -> None:
    for site in ("A", "B", "C", "D", "E"):
        (tmp_path / "Sites" / site).mkdir(parents=True)
        (tmp_path / "Sites" / site / "haz.in").write_text(site)
    (tmp_path / "lock").mkdir()
    command = (
        "mkdir lock/$$; ls lock | wc -l >> counts; cat [INPUT_FILE_PATH] >> seen; "
        "echo [INPUT_FILE_PATH] >> paths; sleep 0.2; rmdir lock/$$"
    )
    step = task("t", command, inputFolder="Sites", inputFilePattern="*.in", workers=2)
    code, _, said = run_doc(tmp_path, doc_of(tasks=[step]))
    assert code == 0, said
    assert sorted((tmp_path / "seen").read_text()) == sorted("ABCDE")
    paths = sorted((tmp_path / "paths").read_text().split())
    assert paths == [f"Sites/{s}/haz.in" for s in "ABCDE"]
    assert max(int(n) for n in (tmp_path / "counts").read_text().split()) <= 2


def test_every_item_runs_after_one_fails(tmp_path: Path) -> None:
    for n in range(4):
        (tmp_path / f"{n}.in").write_text(str(n))
    step = task("t", "echo [INPUT_FILE_PATH] >> ran; [ [INPUT_FILE_PATH] != 1.in ] || exit 7",
                inputFolder=".", inputFilePattern="*.in", workers=1)  # fmt: skip
    code, _, _ = run_doc(tmp_path, doc_of(tasks=[step]))
    assert code == 7
    assert len((tmp_path / "ran").read_text().split()) == 4


def test_a_timeout_kills_the_whole_command(tmp_path: Path) -> None:
    step = task("t", "sleep 30 & echo $! > pid; wait", timeout=1)
    began = time.monotonic()
    code, _, _ = run_doc(tmp_path, doc_of(tasks=[step]))
    assert code == 244 and time.monotonic() - began < 10
    pid = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid), "the command's own children must be killed too"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_capture_names_logs_and_keeps_the_whole_command(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.txt").write_text("")
    (tmp_path / "in" / "y.in").write_text("")
    step = task("cap", "echo first; echo out [INPUT_FILE_PATH]; [ -z \"$FAIL\" ] || echo bad >&2",
                inputFolder="in", inputFilePattern="*", logBehavior="capture")  # fmt: skip
    code, _, _ = run_doc(tmp_path, doc_of(tasks=[step]))
    assert code == 0
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["cap-in-x.log", "cap-in-y.log"]
    assert (logs / "cap-in-x.log").read_text() == "first\nout in/x.txt\n"  # both commands


def test_capture_prints_the_errors_of_a_failed_task(tmp_path: Path) -> None:
    step = task("cap", "echo some output; echo the-error >&2; exit 3", logBehavior="capture")
    code, _, said = run_doc(tmp_path, doc_of(tasks=[step]))
    assert code == 3
    text = "\n".join(said)
    assert "the-error" in text and "some output" in text


# -- move -----------------------------------------------------------------------------------


def test_move_keeps_relative_paths_and_skips_excluded(tmp_path: Path) -> None:
    for rel in ("out/a/r.csv", "out/a/r.tmp", "out/b/s.csv"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "dest/a").mkdir(parents=True)
    (tmp_path / "dest/a/r.csv").write_text("old")
    step = {"name": "m", "inputFolder": "out", "includeFilePattern": ["*.csv"],
            "excludeFilePattern": ["b/*"], "outputFolder": "dest"}  # fmt: skip
    code, _, _ = run_doc(tmp_path, doc_of(tasks=[task("t")], move=[step]))
    assert code == 0
    assert (tmp_path / "dest/a/r.csv").read_text() == "out/a/r.csv"  # overwritten
    assert not (tmp_path / "dest/b").exists() and (tmp_path / "out/b/s.csv").exists()
    assert (tmp_path / "out/a/r.tmp").exists()


def test_move_from_the_current_folder_works(tmp_path: Path) -> None:
    (tmp_path / "r1.csv").write_text("1")
    step = {"name": "m", "inputFolder": ".", "includeFilePattern": ["*.csv"],
            "outputFolder": "results"}  # fmt: skip
    code, _, said = run_doc(tmp_path, doc_of(tasks=[task("t")], move=[step]))
    assert code == 0, said
    assert (tmp_path / "results/r1.csv").read_text() == "1"


def test_disk_stats_and_supported_modes_are_reported(tmp_path: Path) -> None:
    said: list[str] = []
    doc = {**doc_of(tasks=[task("t")]), "supportedModes": ["default"]}
    ctx = Context(env={"PATH": os.environ["PATH"]}, cwd=tmp_path, mode="post", disk_stats=True,
                  say=said.append)  # fmt: skip
    assert run(document.check(doc, "test"), ctx) == 0
    assert sum(m.startswith("disk: ") for m in said) == 2  # start and end (no fetch phase)
    assert any("not one of supportedModes" in m for m in said)
