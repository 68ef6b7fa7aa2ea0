"""The runtime contract, once, for every execution flavour (see flavours.py).

Each test drives the real `shepard` executable on a flock of the flavour under test and checks
what the payload saw and what the flock kept: environment, folders, output and error-bundle
names and contents, logs, secrets, quick deploy, timeouts. What the flock kept is read through
the store API (`Target.store`), so the same assertions hold for folders and for S3.
"""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shepard.flock import Flock
from shepard.model import JobStatus
from tests.acceptance.conftest import parse_env
from tests.conformance.conftest import Target
from tests.conformance.flavours import FlockDict

pytestmark = pytest.mark.conformance

ENV_DUMP = (
    'env -0 > "$ROOT_OUTPUT_NAME/env.txt"; ls -A "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/input.txt"'
)


def outputs(target: Target) -> list[str]:
    """The keys of the result zips in the outputs store, sorted."""
    return sorted(k for k in target.store("outputs").list() if k.endswith(".zip"))


def zip_names(target: Target, store: str, key: str) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(target.store(store).get_bytes(key))) as zf:
        return zf.namelist()


def zip_text(target: Target, store: str, key: str, name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(target.store(store).get_bytes(key))) as zf:
        return zf.read(name).decode()


def out_text(target: Target, key: str, name: str) -> str:
    return zip_text(target, "outputs", key, name)


def bundle_key(target: Target, url: str) -> str:
    """The key in the errors store of the error bundle `show` gives as `url`."""
    errors = target.store("errors")
    key = url.rsplit("/", 1)[-1]
    assert errors.url(key) == url
    return key


def submitted(text: str) -> str:
    return re.search(r"submitted job (\S+)", text).group(1)  # type: ignore[union-attr]


def test_environment_and_folders(target: Target) -> None:
    target.init(ENV_DUMP)
    done = target("submit", "--json", '{"test1":"test1","test4":0,"Flag":true}', "--wait")
    job_id = submitted(done.out)
    [zip_key] = outputs(target)
    info = target("show", job_id, "--json").json()
    start = info["start_time"]
    assert zip_key == f"result@{job_id}_{start}_root.zip"
    env = parse_env(out_text(target, zip_key, "env.txt"))
    assert env["test1"] == "test1" and env["test4"] == "0" and env["Flag"] == "True"
    assert env["UUID"] == job_id and env["START_TIME"] == str(start)
    stamp = time.strftime("%Y/%m/%d-%H:%M:%S", time.gmtime(start))
    assert env["JOB_STATUS"] == f"calling_payload_code {stamp} U.T.C."
    assert env["IS_INVOKED"] == "True" and env["INPUT_ZIP_NAME"] == "None"
    root = Path(env["ROOT_INPUT_NAME"]).parent
    assert root.parent == target.flock / "work"
    assert env["ROOT_INPUT_NAME"] == f"{root}/input"
    assert env["ROOT_OUTPUT_NAME"] == f"{root}/output"
    assert env["INPUTS_BUCKET"] == target.store("inputs").location
    assert env["OUTPUTS_BUCKET"] == target.store("outputs").location
    assert env["ERROR_BUCKET"] == target.store("errors").location
    assert env["USES_EFS"] == "False" and env["USES_LUSTRE"] == "False"
    assert "EFS_INPUT_NAME" not in env and "LUSTRE_INPUT_NAME" not in env
    assert "SHEPARD_SECRET_KEY" not in env
    assert env["ULIMIT_FILENO"].isdigit() and env["HOSTNAME"]
    assert out_text(target, zip_key, "input.txt").split() == ["secrets"]
    assert info["status"] == "succeeded" and info["exit_code"] == 0
    assert [h["status"] for h in info["history"]] == ["queued", "running", "succeeded"]
    assert not any((target.flock / "work").rglob("input")), "workspaces must be removed"


def test_bundle_is_copied_in_and_tag_prefixes_the_outputs(target: Target, tmp_path: Path) -> None:
    target.init(ENV_DUMP)
    sample = tmp_path / "sample"
    (sample / "data").mkdir(parents=True)
    (sample / "inputs.json").write_text('{"TAG": "run 7/a", "N": 3}')
    (sample / "data" / "x.csv").write_text("1,2\n")
    job_id = submitted(target("batch", str(sample), "--wait").out)
    [zip_key] = outputs(target)
    assert zip_key.startswith(f"run_7_a_result@{job_id}_")
    env = parse_env(out_text(target, zip_key, "env.txt"))
    bundle = env["INPUT_ZIP_NAME"]
    assert bundle.endswith(".zip") and env["IS_INVOKED"] == "False"
    assert env["N"] == "3" and env["TAG"] == "run 7/a"
    assert sorted(out_text(target, zip_key, "input.txt").split()) == sorted([bundle, "secrets"])
    assert {"data/x.csv", "inputs.json"} <= set(zip_names(target, "inputs", bundle))


def test_failure_leaves_an_error_bundle_and_no_output(target: Target) -> None:
    target.init('echo to-out; echo to-err >&2; echo partial > "$ROOT_OUTPUT_NAME/p.txt"; exit 3')
    result = target("submit", "--json", '{"A": 1}', "--wait", ok=False)
    assert result.code == 1
    job_id = submitted(result.out)
    assert outputs(target) == []
    info = target("show", job_id, "--json").json()
    assert info["status"] == "failed" and info["exit_code"] == 3
    assert "exit code 3" in info["reason"]
    bundle = bundle_key(target, info["error_bundle"])
    assert bundle == f"log@{job_id}_{info['start_time']}.zip"
    names = zip_names(target, "errors", bundle)
    assert {"stdout.txt", "stderr.txt", "exit_status.txt", "workspace.txt"} <= set(names)
    assert "to-out" in zip_text(target, "errors", bundle, "stdout.txt")
    assert "to-err" in zip_text(target, "errors", bundle, "stderr.txt")
    assert "3" in zip_text(target, "errors", bundle, "exit_status.txt")
    assert "p.txt" in zip_text(target, "errors", bundle, "workspace.txt")
    retrieved = target.cwd / "got"
    target("retrieve", str(retrieved), "--errors")
    assert (retrieved / "errors" / bundle).is_file()


def test_a_range_of_jobs_each_publish_their_output(target: Target) -> None:
    target.init('echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    target("submit", "--range", "ITEM=1-6", "--wait")
    flock = Flock.open(target.flock)  # `query` also counts the inbox's rejects: not ours here
    try:
        counts = flock.counts()
    finally:
        flock.close()
    assert counts[JobStatus.SUCCEEDED] == 6 and counts[JobStatus.QUEUED] == 0
    zips = outputs(target)
    assert all(re.fullmatch(r"result@\S+_\d+_root\.zip", z) for z in zips)
    assert sorted(int(out_text(target, z, "o.txt")) for z in zips) == list(range(1, 7))


def test_shared_filesystems_get_job_folders_and_their_own_outputs(
    target: Target, tmp_path: Path
) -> None:
    if target.flavour.aws:
        pytest.skip("Batch containers see no folder of this host: EFS volumes are mounted "
                    "through the job definition (backend.aws-batch.efs)")  # fmt: skip
    efs, lustre = tmp_path / "efs", tmp_path / "lustre"
    efs.mkdir()
    lustre.mkdir()
    target.init(
        'env -0 > "$ROOT_OUTPUT_NAME/env.txt"; echo e > "$EFS_OUTPUT_NAME/e.txt"; '
        'echo l > "$LUSTRE_OUTPUT_NAME/l.txt"'
    )

    def shared(data: FlockDict) -> None:
        data["filesystems"] = {"efs": str(efs), "lustre": str(lustre)}

    target.configure(shared)
    job_id = submitted(target("submit", "--json", "{}", "--wait").out)
    kinds = {z.rsplit("_", 1)[1]: z for z in outputs(target)}
    assert sorted(kinds) == ["efs.zip", "lustre.zip", "root.zip"]
    env = parse_env(out_text(target, kinds["root.zip"], "env.txt"))
    assert env["USES_EFS"] == "True" and env["USES_LUSTRE"] == "True"
    assert env["EFS_INPUT_NAME"] == str(efs / job_id / "input")
    assert env["EFS_OUTPUT_NAME"] == str(efs / job_id / "output")
    assert env["LUSTRE_READ_ONLY_PATH"] == str(lustre)
    assert out_text(target, kinds["efs.zip"], "e.txt") == "e\n"
    assert out_text(target, kinds["lustre.zip"], "l.txt") == "l\n"
    assert not (efs / job_id).exists() and not (lustre / job_id).exists()


def test_quick_deploy_runs_run_sh_from_the_input_folder(target: Target) -> None:
    target.init("echo the flock command must not run; exit 9")
    tools = target.store("quick-deploy")
    tools.put_bytes(
        "tool/run.sh", b'pwd > "$ROOT_OUTPUT_NAME/where"; cat note > "$ROOT_OUTPUT_NAME/n"\n'
    )
    tools.put_bytes("tool/note", b"from the tool\n")
    params = '{"QUICK_DEPLOY_DIRECTORY": "tool"}'
    job_id = submitted(target("submit", "--json", params, "--wait").out)
    [zip_key] = outputs(target)
    assert out_text(target, zip_key, "n") == "from the tool\n"
    where = Path(out_text(target, zip_key, "where").strip())
    assert where.name == "tool" and where.parent.name == "input"
    assert target("show", job_id, "--json").json()["status"] == "succeeded"


def test_timeout_stops_the_payload_and_says_so(target: Target) -> None:
    target.init("echo started; sleep 30", "--timeout", "1")
    began = time.monotonic()
    result = target("submit", "--json", "{}", "--wait", ok=False)
    assert time.monotonic() - began < 25
    info = target("show", submitted(result.out), "--json").json()
    assert info["status"] == "failed" and info["reason"] == "timeout after 1s"
    bundle = bundle_key(target, info["error_bundle"])
    assert "timeout" in zip_text(target, "errors", bundle, "exit_status.txt")
    assert "started" in zip_text(target, "errors", bundle, "stdout.txt")


def test_logs_keep_the_payloads_streams(target: Target) -> None:
    target.init('echo "out $UUID"; echo "err $UUID" >&2')
    job_id = submitted(target("submit", "--json", "{}", "--wait").out)
    assert target("logs", job_id).out == f"out {job_id}\n"
    assert target("logs", job_id, "--stderr").out == f"err {job_id}\n"
    logs, key = target.store("logs"), f"{job_id[:8]}/{job_id}.1.stdout"
    assert logs.get_bytes(key) == f"out {job_id}\n".encode()  # kept in the logs store
    [shown] = target("show", job_id, "--json").json()["logs"]
    assert shown["stdout"] == logs.url(key)


def test_secrets_reach_the_payload_and_nothing_else(target: Target, tmp_path: Path) -> None:
    target.env["SHEPARD_SECRET_KEY"] = Fernet.generate_key().decode()
    target.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    target.init('cat "$ROOT_INPUT_NAME/secrets/token" > "$ROOT_OUTPUT_NAME/seen"')
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "token").write_text("s3cr3t-value")
    target("secretify", str(folder))
    target("submit", "--json", "{}", "--wait")
    [zip_key] = outputs(target)
    assert out_text(target, zip_key, "seen") == "s3cr3t-value"
    stored = target.store("secrets")
    assert list(stored.list()) == ["token.fernet"]  # in the flock's secrets store
    assert b"s3cr3t-value" not in stored.get_bytes("token.fernet")  # encrypted


def test_workspace_is_gone_after_success_and_failure(target: Target) -> None:
    target.init('echo x > "$ROOT_OUTPUT_NAME/x"; [ "$FAIL" = 0 ]')
    target("submit", "--json", '{"FAIL": 0}', "--wait")
    target("submit", "--json", '{"FAIL": 1}', "--wait", ok=False)
    leftovers = [p for p in (target.flock / "work").rglob("*") if p.is_file()]
    assert leftovers == []
