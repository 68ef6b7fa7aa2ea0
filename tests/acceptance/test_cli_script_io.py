"""Hardening through the real executable: environment limits at submission, retrieval of odd
outputs, following logs across attempts, and output meant for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.acceptance


def test_a_job_whose_environment_cannot_exist_is_refused_at_submission(
    cli: Cli, tmp_path: Path
) -> None:
    cli.init("true")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"DATA": "x" * (130 << 10)}))
    result = cli("submit", "--json-file", str(big), ok=False)
    assert result.code == 2 and "128 KiB" in result.err and "Traceback" not in result.err
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "inputs.json").write_text(json.dumps({"DATA": "x" * (130 << 10)}))
    result = cli("batch", str(folder), ok=False)
    assert result.code == 2 and "128 KiB" in result.err
    assert cli("query", "--json").json()["counts"]["queued"] == 0


def test_logs_follow_a_job_waiting_for_its_retry_to_its_end(cli: Cli, tmp_path: Path) -> None:
    from tests.acceptance.test_cli_ops import Lines, configure, eventually, job, stop

    gate = tmp_path / "go"
    cli.init(f"if [ -e {gate} ]; then echo second; exit 0; fi; echo first; exit 3")
    configure(cli, "retry", "backoff = 3")
    job_id = cli("submit", "--json", "{}", "--attempts", "2", "--ids").out.strip()
    sheep = cli.popen("up")
    try:
        eventually(
            lambda: (info := job(cli, job_id))["status"] == "queued" and info["attempt"] == 1,
            what="attempt 1 failed, retry pending",
        )
        follower = cli.popen("logs", job_id, "-f")
        assert follower.stdout is not None and follower.stderr is not None
        lines, notes = Lines(follower.stdout), Lines(follower.stderr)
        assert "queued for attempt 2 after attempt 1" in notes.next()
        gate.touch()
        assert follower.wait(timeout=30) == 0, "the job succeeded at attempt 2"
        assert lines.rest() == "second\n", "attempt 1 is not repeated"
        said = notes.rest()
        assert f"--- job {job_id}: attempt 2 ---" in said and "succeeded (attempt 2)" in said
    finally:
        assert stop(sheep) == 0
    cancelled = cli("submit", "--json", "{}", "--ids").out.strip()
    cli("cancel", cancelled)
    assert cli("logs", cancelled, "-f", ok=False).code == 1


ODD_OUTPUTS = (
    'cd "$ROOT_OUTPUT_NAME" && echo "$ITEM" > n.txt && ln -s n.txt inside && '
    "ln -s /etc/passwd outside && ln -s gone dangling && echo x > 'back\\slash.txt' && "
    '[ "$ITEM" -le 4 ]'
)


def test_retrieve_unzips_odd_outputs_and_one_bad_zip_stops_nothing(
    cli: Cli, tmp_path: Path
) -> None:
    cli.init(ODD_OUTPUTS)
    cli("submit", "--range", "ITEM=1-6", "--attempts", "1", "--wait", ok=None)
    jobs = {j["params"]["ITEM"]: j for j in cli("query", "--json").json()["jobs"]}
    assert sorted(i for i, j in jobs.items() if j["status"] == "succeeded") == [1, 2, 3, 4]
    stderr_log = cli("logs", jobs[1]["id"], "--stderr").out
    assert "left out 'outside', a symbolic link to '/etc/passwd'" in stderr_log
    assert "left out 'dangling'" in stderr_log

    outputs = cli.flock / "outputs"
    (outputs / "result@hostile_1_root.zip").write_bytes(hostile_zip())
    (outputs / "result@broken_1_root.zip").write_bytes(b"PK\x03\x04 not really a zip")
    dest = tmp_path / "r"
    result = cli("retrieve", str(dest), "--unzip", "--errors", ok=False)
    assert result.code == 1 and "Traceback" not in result.err
    assert "result@broken_1_root.zip: copied but not unzipped" in result.err
    assert "1 item(s) could not be retrieved" in result.err
    assert "'../escape.txt': left out" in result.err and "'/abs.txt': left out" in result.err
    assert "'link': left out: it is a symbolic link" in result.err
    assert not (tmp_path / "escape.txt").exists()
    assert len(list((dest / "errors").glob("*.zip"))) == 2, "error bundles are copied too"
    for item in (1, 2, 3, 4):
        [folder] = dest.glob(f"result@{jobs[item]['id']}_*_root")
        assert (folder / "n.txt").read_text() == f"{item}\n"
        assert (folder / "inside").read_text() == f"{item}\n" and not (
            folder / "inside"
        ).is_symlink()
        assert (folder / "back_slash.txt").is_file()
        assert not (folder / "outside").exists() and not (folder / "dangling").exists()
    hostile = dest / "result@hostile_1_root"
    assert (hostile / "fine.txt").read_text() == "fine" and (hostile / "a_b.txt").exists()

    again = cli("retrieve", str(dest), "--json", "--job", jobs[1]["id"])
    report = again.json()
    assert report["failed"] == [] and len(report["files"]) == 1


def hostile_zip() -> bytes:
    import io
    import stat
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("fine.txt", "fine")
        zf.writestr("../escape.txt", "out")
        zf.writestr("/abs.txt", "abs")
        zf.writestr("a\\b.txt", "backslash")
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    return buf.getvalue()


def test_output_for_scripts_is_plain_unwrapped_and_never_markup(cli: Cli) -> None:
    cli.env["COLUMNS"] = "40"  # ignored when stdout is not a terminal
    cli.init('echo hi > "$ROOT_OUTPUT_NAME/some-long-result-name-for-grep.txt"')
    job_id = cli("submit", "--json", '{"A": "[red]kept[/red] [b]"}', "--ids").out.strip()
    cli("submit", "--range", "ITEM=1-2", "--wait")
    shown = cli("show", job_id).out
    assert "A = '[red]kept[/red] [b]'" in shown, shown
    listed = cli("query").out
    assert all(len(line) > 40 for line in listed.splitlines() if job_id in line)
    assert any(job_id in line for line in listed.splitlines()), "ids are never split"
    assert "┃" not in listed and "━" not in listed, "no box drawing in a pipe"
    done = [j["id"] for j in cli("query", "--json").json()["jobs"] if j["status"] == "succeeded"]
    zips = [line for line in cli("show", done[0]).out.splitlines() if ".zip" in line]
    [line] = zips
    path = Path(line.split()[-1])
    assert path.is_file() and path.parent == cli.flock / "outputs"
    missing = cli("show", "[bold]nope", ok=False)
    assert "[bold]nope" in missing.err
    batch = cli.cwd / "b"
    batch.mkdir()
    (batch / "inputs.json").write_text('{"X": 1}')
    submitted = cli("batch", str(batch), "--json").json()
    assert submitted["bundle"] and submitted["id"]


def test_query_watch_streams_lines_when_piped(cli: Cli) -> None:
    from tests.acceptance.test_cli_ops import Lines, stop

    cli.init("true")
    cli("submit", "--range", "ITEM=1-3")
    watcher = cli.popen("query", "--watch")
    assert watcher.stdout is not None
    lines = Lines(watcher.stdout)
    first = lines.next(timeout=20)
    assert first.startswith("queued 3  running 0") and "total 3" in first, first
    stop(watcher)
