"""--json-file parsing: formats, defaults, every bad line reported, unreadable files."""

from __future__ import annotations

from pathlib import Path

import pytest

from shepard.errors import ParamsError
from shepard.model import ParamValue
from shepard.params import MAX_REPORTED, json_file_params


def jobs(path: Path, defaults: dict[str, ParamValue] | None = None) -> list[dict[str, object]]:
    return [dict(job) for job in json_file_params(path, defaults)]


@pytest.mark.parametrize(
    "text",
    [
        '{"A": 1}\n{"A": 2}\n',
        '\ufeff{"A": 1}\n\n{"A": 2}',
        '[{"A": 1}, {"A": 2}]',
        '\ufeff[\n  {"A": 1},\n  {"A": 2}\n]\n',
    ],
)
def test_lines_and_arrays_give_one_job_each(tmp_path: Path, text: str) -> None:
    path = tmp_path / "jobs"
    path.write_text(text, encoding="utf-8")
    assert jobs(path, {"B": "x", "A": 0}) == [{"B": "x", "A": 1}, {"B": "x", "A": 2}]


def test_one_object_over_several_lines_is_one_job(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    path.write_text('\ufeff{\n  "A": 1\n}\n', encoding="utf-8")
    assert jobs(path) == [{"A": 1}]


def test_every_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"A": 1}\n\n{bad\n{"A": [1]}\n{"UUID": 1}\n{"A": 2}\n')
    with pytest.raises(ParamsError) as info:
        jobs(path)
    message = str(info.value)
    assert "3 bad line(s)" in message
    assert all(f"line {n}" in message for n in (3, 4, 5))
    assert "line 1 " not in message and "line 6" not in message


def test_a_bad_first_line_does_not_hide_the_others(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{bad\n{"A": 1}\n{"x y": 2}\n')
    with pytest.raises(ParamsError, match=r"2 bad line\(s\)(.|\n)*line 1(.|\n)*line 3"):
        jobs(path)


def test_bad_items_of_an_array_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    path.write_text('[{"A": 1}, 3, {"B": [1]}]')
    with pytest.raises(ParamsError, match=r"2 bad item\(s\)(.|\n)*item 2(.|\n)*item 3"):
        jobs(path)


def test_a_long_list_of_bad_lines_is_cut_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text("{bad\n" * (MAX_REPORTED + 5))
    with pytest.raises(ParamsError) as info:
        jobs(path)
    assert f"{MAX_REPORTED + 5} bad line(s)" in str(info.value)
    assert "and 5 more" in str(info.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "No such file"),
        (b'{"A": "\xe9"}\n', "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"A": ' + b"[" * 100_000, "nested too deeply"),
        (b"", "is empty"),
    ],
)
def test_unusable_files_are_params_errors(
    tmp_path: Path, content: bytes | None, needle: str
) -> None:
    path = tmp_path / "jobs"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ParamsError, match=needle):
        jobs(path)


def test_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="is a folder"):
        jobs(tmp_path)


def test_stdin_is_read_line_by_line() -> None:
    lines = iter(['{"A": 1}\n', '{"A": 2}\n'])
    assert list(json_file_params(Path("-"), stdin=lines)) == [{"A": 1}, {"A": 2}]
