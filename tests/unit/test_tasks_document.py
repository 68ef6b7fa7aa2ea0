"""Checking tasks documents: every element of every array, unknown keys with a did-you-mean,
every error listed with its path; the schema ships in the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shepard.tasks import document

GOOD: dict[str, Any] = {
    "$schema": "tasks.schema.json",
    "programName": "haz",
    "itemName": "${WORK_ITEM}",
    "supportedModes": ["default", "post"],
    "fetch": [{"name": "f", "bucket": "${BUCKET_NAME}", "key": "input/${WORK_ITEM}.7z",
               "dest": "./Sites", "expand": True, "excludeFilePattern": ["*.bak"]}],
    "tasks": [{"name": "t", "command": "run [INPUT_FILE_PATH]", "inputFolder": "Sites",
               "inputFilePattern": "*.in", "workers": 0, "timeout": 60, "logBehavior": "capture",
               "outputFolder": "out", "includeWhenMode": "default,post", "exitOnError": False}],
    "move": [{"name": "m", "inputFolder": "out", "includeFilePattern": ["*"],
              "outputFolder": "o2", "excludeFilePattern": ["*.tmp"], "required": True}],
    "store": [{"name": "s", "bucket": "b", "source": "o2", "dest": "output/${WORK_ITEM}/",
               "compress": True, "compressSubDirectories": False, "compressInSharedMemory": False,
               "removeOnStore": False, "excludeWhenMode": ["post"]}],
    "comment": "other top-level keys are allowed, as in the original",
}  # fmt: skip


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with `value` at `path` (e.g. "tasks.1" appends a second task)."""
    doc: dict[str, Any] = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if last.isdigit():
        node.insert(int(last), value)
    else:
        node[last] = value
    return doc


def test_a_good_document_has_no_problem() -> None:
    assert document.problems(GOOD) == []


BAD = [
    ("a misspelled key, any element", with_("tasks.1", {"name": "x", "comand": "y"}),
     ["tasks[1].comand: unknown key, did you mean command?", "tasks[1].command: missing"]),
    ("a later element that is not an object", with_("tasks.1", "echo"),
     ["tasks[1]: 'echo' is not of type 'object'"]),
    ("a wrong type", with_("tasks.0.workers", "2"), ["tasks[0].workers: '2' is not of type"]),
    ("missing required keys", with_("fetch.1", {"name": "f2"}),
     ["fetch[1].bucket: missing", "fetch[1].key: missing", "fetch[1].dest: missing"]),
    ("a pattern with no folder", with_("tasks.1", {"name": "x", "command": "y",
                                                   "inputFilePattern": "*.in"}),
     ["tasks[1]: 'inputFolder' is a dependency of 'inputFilePattern'"]),
    ("no tasks", with_("tasks", []), ["tasks: [] should be non-empty"]),
    ("a missing header", {k: v for k, v in GOOD.items() if k != "programName"},
     ["programName: missing (required)"]),
    ("a store key misspelled", with_("store.0.removeOnstore", True),
     ["store[0].removeOnstore: unknown key, did you mean removeOnStore?"]),
    ("a bad mode type", with_("move.0.includeWhenMode", 3),
     ["move[0].includeWhenMode: expected a string or an array of strings"]),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_every_problem_is_listed_with_its_path(doc: dict[str, Any], expected: list[str]) -> None:
    found = document.problems(doc)
    for wanted in expected:
        assert any(p.startswith(wanted) for p in found), (wanted, found)
    assert len(found) == len(expected), found


def test_several_errors_are_all_listed(tmp_path: Path) -> None:
    doc = with_("tasks.1", {"name": "x", "comand": "y"})
    doc["fetch"][0]["dset"] = "z"
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(document.DocumentError) as caught:
        document.load(path, {})
    assert len(caught.value.problems) == 3
    assert "fetch[0].dset: unknown key, did you mean dest?" in str(caught.value)


def test_unreadable_and_non_json_documents(tmp_path: Path) -> None:
    with pytest.raises(document.DocumentError, match="cannot read it"):
        document.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(document.DocumentError, match="not JSON"):
        document.read(tmp_path / "bad.json")


def test_the_schema_ships_in_the_package() -> None:
    schema = json.loads(document.schema_text())
    assert schema["title"] == "Task Processing Document"
    assert set(schema["required"]) == {"programName", "itemName", "tasks"}
    assert schema["$defs"]["task"]["additionalProperties"] is False


def test_a_document_checked_once_is_not_checked_again_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(GOOD))
    digest = document.checked_digest(path)
    assert digest is not None
    loaded = document.load(path, {"WORK_ITEM": "w"}, checked=digest)
    assert loaded["itemName"] == "w"
    path.write_text(json.dumps(with_("tasks.1", {"name": "x"})))  # changed: checked again
    assert document.checked_digest(path) is None
    with pytest.raises(document.DocumentError, match=r"tasks\[1\]\.command: missing"):
        document.load(path, {}, checked=digest)
