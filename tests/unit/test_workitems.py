"""Work items as `start_jobs.py` takes them, and where we do better than it."""

from __future__ import annotations

import io

import pytest

from shepard.errors import ParamsError
from shepard.workitems import (
    expand_items,
    item_params,
    job_name,
    parse_name_values,
    read_items,
)

ITEMS = [
    ("01-16", "Dam001/Period", 2, [f"Dam001/Period{i:02d}" for i in range(1, 17)]),
    ("7", "", 3, ["007"]),
    ("7,8,abc", "", 3, ["007", "008", "abc"]),
    ("Dam001/Period03", "", 3, ["Dam001/Period03"]),
    ("site-a", "", 3, ["site-a"]),  # the original crashed on a dash in a word
    ("site-a,b-c", "x/", 0, ["x/site-a", "x/b-c"]),
    ("1-3", "", 0, ["1", "2", "3"]),
    ("a,a", "", 3, ["00a", "00a"]),  # duplicates kept, as the original; zfill pads short ones
]


@pytest.mark.parametrize(("text", "prefix", "padding", "expected"), ITEMS)
def test_expand_items(text: str, prefix: str, padding: int, expected: list[str]) -> None:
    assert list(expand_items(text, prefix=prefix, padding=padding)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("5-3", "runs backwards"), ("", "no empty entry"), ("a,,b", "no empty entry")],
)
def test_bad_items_are_refused(text: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        expand_items(text)


def test_blank_lines_of_a_file_are_not_items() -> None:
    lines = io.StringIO("a\n\n  \nb\r\n c \n")
    assert list(read_items(lines, prefix="p/")) == ["p/a", "p/b", "p/c"]


def test_name_values_keep_every_equals_sign() -> None:
    assert parse_name_values(["B=x=y", "EMPTY=", "K=v"]) == {"B": "x=y", "EMPTY": "", "K": "v"}
    for bad in ("novalue", "=v", "1A=v", "A-B=v"):
        with pytest.raises(ParamsError, match="KEY=VALUE"):
            parse_name_values([bad])


def test_item_params_name_each_job_after_its_item() -> None:
    jobs = list(item_params(["a", "b"], base={"K": "v"}, item_var="SITE", mode="post"))
    assert jobs == [
        {"K": "v", "MODE_STR": "post", "SITE": "a", "JOB_NAME": "a"},
        {"K": "v", "MODE_STR": "post", "SITE": "b", "JOB_NAME": "b"},
    ]
    plain = list(item_params(["a"], base={}))
    assert plain == [{"WORK_ITEM": "a"}]
    assert [job_name(p) for p in (*jobs, *plain)] == ["a", "b", "a"]
    assert job_name({"work_item": "w", "X": 1}) == "w" and job_name({"X": 1}) is None
    assert job_name({"WORK_ITEM": "w", "JOB_NAME": "n"}) == "n"
