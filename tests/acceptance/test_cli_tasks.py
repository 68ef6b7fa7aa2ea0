"""Cloudburst's habits, as a user runs them: `init --payload-tasks`, `tasks check`, `submit`
by work items (preview, --apply, a file or stdin), `stop` by work item, and tasks jobs that
succeed and fail with the document's exit codes."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from shepard.flock import Flock
from tests.acceptance.conftest import Cli

HELLO = {
    "programName": "hello",
    "itemName": "${WORK_ITEM}",
    "tasks": [
        {
            "name": "hello",
            "command": 'echo "$WORK_ITEM $MODE_STR $B" > "$ROOT_OUTPUT_NAME/item.txt"',
            "includeWhenMode": "default,post",
        }
    ],
}


def write_doc(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def init_tasks(cli: Cli, doc: dict[str, Any]) -> Path:
    path = write_doc(cli.cwd / "tasks.json", doc)
    cli("init", str(cli.flock), "--payload-tasks", "tasks.json", "--workers", "2")
    return path


def names(cli: Cli) -> list[str]:
    jobs = cli("query", "--json", "--limit", "1000").json()["jobs"]
    return sorted(j["name"] for j in jobs)


def test_init_refuses_a_bad_document_listing_every_error(cli: Cli) -> None:
    bad = {**HELLO, "tasks": [HELLO["tasks"][0], {"name": "x", "comand": "y"}, "echo"]}
    write_doc(cli.cwd / "tasks.json", bad)
    result = cli("init", str(cli.flock), "--payload-tasks", "tasks.json", ok=False)
    assert result.code == 2 and "Traceback" not in result.err
    assert "tasks[1].comand: unknown key, did you mean command?" in result.err
    assert "tasks[2]: 'echo' is not of type 'object'" in result.err
    assert not cli.flock.exists()
    write_doc(cli.cwd / "good.json", HELLO)
    both = cli("init", str(cli.flock), "--payload-tasks", "good.json", "--payload-command", "x",
               ok=False)  # fmt: skip
    assert both.code == 2 and "--payload-command" in both.err and not cli.flock.exists()
    checked = cli("tasks", "check", "tasks.json", ok=False)
    assert checked.code == 2 and "3 error(s)" in checked.err
    as_json = cli("tasks", "check", "tasks.json", "--json", ok=False).json()
    assert as_json["valid"] is False and len(as_json["errors"]) == 3


def test_items_preview_then_apply(cli: Cli) -> None:
    init_tasks(cli, HELLO)
    args = ("submit", "--items", "01-16", "--prefix", "Dam001/Period", "--padding", "2",
            "--mode", "post")  # fmt: skip
    preview = cli(*args)
    lines = [json.loads(line) for line in preview.out.splitlines()]
    assert len(lines) == 16 and "--apply" in preview.err
    assert lines[0] == {
        "name": "Dam001/Period01",
        "params": {"MODE_STR": "post", "WORK_ITEM": "Dam001/Period01"},
    }
    assert cli("query", "--json").json()["jobs"] == []  # nothing submitted
    cli(*args, "--apply")
    assert names(cli) == [f"Dam001/Period{i:02d}" for i in range(1, 17)]


def test_items_file_from_stdin_and_name_values(cli: Cli) -> None:
    init_tasks(cli, HELLO)
    cli("submit", "--items-file", "-", "--name-value", "B=x=y", "--item-var", "SITE",
        "--apply", stdin="a\n\nsite-b\n  \n")  # fmt: skip
    jobs = cli("query", "--json").json()["jobs"]
    assert sorted(j["name"] for j in jobs) == ["a", "site-b"]
    assert all(j["params"]["B"] == "x=y" and "SITE" in j["params"] for j in jobs)
    assert all(j["params"]["JOB_NAME"] == j["params"]["SITE"] for j in jobs)


def test_bad_items_are_refused_with_one_message(cli: Cli) -> None:
    init_tasks(cli, HELLO)
    for args, message in [
        (("--items", "5-3"), "runs backwards"),
        (("--items", "a", "--name-value", "novalue"), "KEY=VALUE"),
        (("--items", "a", "--items-file", "x"), "not both"),
        (("--items-file", "missing.txt"), "missing.txt"),
        (("--json", "{}", "--mode", "post"), "go with --items"),
    ]:
        result = cli("submit", *args, "--apply" if "--mode" not in args else "--wait", ok=False)
        assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert names(cli) == []


def test_apply_by_default_and_stop_by_item(cli: Cli) -> None:
    init_tasks(cli, HELLO)
    cli.configure(lambda data: data.setdefault("submit", {}).update(apply_by_default=True))
    cli("submit", "--items", "1-5")
    assert names(cli) == ["001", "002", "003", "004", "005"]
    preview = cli("stop", "--items", "2-3")
    assert "2 queued or running job(s) match" in preview.err
    assert len(preview.out.splitlines()) == 2
    done = cli("stop", "--items", "2-3", "--apply", "--json").json()
    assert len(done["cancelled"]) == 2
    statuses = {j["name"]: j["status"] for j in cli("query", "--json").json()["jobs"]}
    assert statuses == {"001": "queued", "002": "cancelled", "003": "cancelled",
                        "004": "queued", "005": "queued"}  # fmt: skip
    cli("stop", "--all", "--apply")
    assert cli("query", "--json").json()["counts"]["cancelled"] == 5
    assert cli("stop", ok=False).code == 2


def test_a_document_broken_after_init_is_refused_at_submission(cli: Cli) -> None:
    path = init_tasks(cli, HELLO)
    write_doc(path, {**HELLO, "tasks": [{"name": "t", "command": "x", "workers": "2"}]})
    result = cli("submit", "--items", "a", "--apply", ok=False)
    assert result.code == 2 and "tasks[0].workers" in result.err
    assert names(cli) == []


def test_tasks_jobs_run_and_fail_with_the_documents_codes(cli: Cli) -> None:
    doc = {
        "programName": "p",
        "itemName": "${WORK_ITEM}",
        "tasks": [
            {"name": "work", "command": 'echo "$WORK_ITEM" > "$ROOT_OUTPUT_NAME/item.txt"'},
            {"name": "check", "command": "echo checking $WORK_ITEM; echo broke-$WORK_ITEM >&2; "
             '[ "$WORK_ITEM" != bad ] || exit 55', "logBehavior": "capture"},
        ],
    }  # fmt: skip
    init_tasks(cli, doc)
    result = cli("submit", "--items", "good,bad", "--padding", "0", "--apply", "--wait", ok=False)
    assert result.code == 1
    jobs = {j["name"]: j for j in cli("query", "--json").json()["jobs"]}
    assert jobs["good"]["status"] == "succeeded" and jobs["bad"]["status"] == "failed"
    assert jobs["bad"]["exit_code"] == 55
    flock = Flock.open(cli.flock)
    try:
        bad = flock.job(jobs["bad"]["id"])
        assert bad.error_bundle is not None
        data = flock.store("errors").get_bytes(bad.error_bundle)
        [good_zip] = flock.job(jobs["good"]["id"]).outputs
        with zipfile.ZipFile(io.BytesIO(flock.store("outputs").get_bytes(good_zip))) as zf:
            assert zf.read("item.txt") == b"good\n"
    finally:
        flock.close()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        stdout = zf.read("stdout.txt").decode()
    assert "broke-bad" in stdout and "checking bad" in stdout  # the captured task logs
    assert "processing completed with exit code 55" in stdout
