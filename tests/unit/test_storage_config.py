"""Where a flock's stores live: `[storage]` in flock.toml, store URLs, the store registry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shepard import config
from shepard.config import STORE_NAMES, Flockdir, StorageConfig
from shepard.errors import ConfigError, StorageError
from shepard.flock import Flock
from shepard.storage import LocalStore, StoreOptions, open_store


def flockdir(tmp_path: Path, **storage: object) -> Flockdir:
    cfg = config.parse({"name": "f", "storage": storage})
    return Flockdir(tmp_path, cfg)


def test_folder_stores_live_under_the_root(tmp_path: Path) -> None:
    d = flockdir(tmp_path, root="data")
    assert d.storage_url == str(tmp_path / "data")
    assert d.store_url("outputs") == str(tmp_path / "data" / "outputs")
    assert d.store_path("quick-deploy") == tmp_path / "data" / "quick-deploy"
    assert d.store_path("work") == tmp_path / "data" / "work"


def test_s3_stores_live_under_the_prefix_and_work_stays_local(tmp_path: Path) -> None:
    d = flockdir(tmp_path, root="s3://my-bucket/flocks/f/", endpoint_url="http://127.0.0.1:9000")
    assert d.storage_url == "s3://my-bucket/flocks/f"
    assert [d.store_url(n) for n in ("inbox", "secrets")] == [
        "s3://my-bucket/flocks/f/inbox",
        "s3://my-bucket/flocks/f/secrets",
    ]
    assert d.store_path("work") == tmp_path / "work"
    assert d.store_options() == StoreOptions(endpoint_url="http://127.0.0.1:9000")
    with pytest.raises(ConfigError, match="the inbox store is s3://my-bucket/flocks/f/inbox"):
        d.store_path("inbox")
    with pytest.raises(ConfigError, match="not a folder"):
        _ = d.storage_root


def test_each_store_can_live_elsewhere(tmp_path: Path) -> None:
    d = flockdir(
        tmp_path,
        root="s3://in-bucket",
        stores={"outputs": "s3://out-bucket/results", "logs": "local-logs"},
    )
    assert d.store_url("inputs") == "s3://in-bucket/inputs"
    assert d.store_url("outputs") == "s3://out-bucket/results"
    assert d.store_url("logs") == str(tmp_path / "local-logs")
    assert d.store_path("logs") == tmp_path / "local-logs"


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"root": "gs://bucket"}, r"storage.root: .*use a folder, file://PATH or s3://"),
        ({"root": "s3://Bad_Bucket"}, r"storage.root: .*'Bad_Bucket' is not a bucket name"),
        ({"stores": {"output": "s3://b-1/x"}}, r"unknown store 'output' \(stores: inbox, "),
        ({"stores": {"outputs": "ftp://x"}}, r"storage.stores: .*use a folder"),
        ({"endpoint_url": "127.0.0.1:9000"}, r"storage.endpoint_url: .*not an endpoint URL"),
    ],
)
def test_bad_storage_settings_are_refused_by_name(storage: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse({"name": "f", "storage": storage})


def test_storage_at_gives_a_plain_message() -> None:
    assert StorageConfig.at("s3://b-1/p").root == "s3://b-1/p"
    with pytest.raises(ConfigError, match=r"^'s3://x': 'x' is not a bucket name"):
        StorageConfig.at("s3://x")


def test_flock_opens_each_store_once_by_url(tmp_path: Path) -> None:
    flock = Flock.create(tmp_path / "f", config.FlockConfig(name="f"))
    store = flock.store("outputs")
    assert isinstance(store, LocalStore) and store.root == tmp_path / "f" / "outputs"
    assert flock.store("outputs") is store
    assert all((tmp_path / "f" / name).is_dir() for name in (*STORE_NAMES, "work"))


def test_a_store_in_s3_is_no_folder(tmp_path: Path) -> None:
    cfg = config.parse({"name": "f", "storage": {"root": "s3://my-bucket/f"}})
    flock = Flock(Flockdir(tmp_path, cfg))
    assert flock.store("errors").location == "s3://my-bucket/f/errors"
    assert flock.store("errors").local_path("x.zip") is None


def test_registry_refuses_unknown_schemes() -> None:
    with pytest.raises(StorageError, match=r"unsupported store URL 'gs://b/x'.*s3://"):
        open_store("gs://b/x")
    assert isinstance(open_store("file:///tmp/x"), LocalStore)


def test_s3_without_boto3_names_the_extra() -> None:
    code = (
        "import sys; sys.modules['boto3'] = None\n"
        "from shepard.storage import open_store\n"
        "try:\n    open_store('s3://my-bucket/x')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("StorageError S3 stores need boto3")
    assert "pip install 'shepard[aws]'" in out.stdout


def test_a_flock_on_memory_stores_has_no_folders(tmp_path: Path) -> None:
    cfg = config.parse({"name": "f", "storage": {"root": "memory://flock-f"}})
    flock = Flock.create(tmp_path / "f", cfg)
    flock.store("outputs").put_bytes("r.zip", b"zip")
    assert Flock.open(tmp_path / "f").store("outputs").get_bytes("r.zip") == b"zip"
    assert sorted(p.name for p in (tmp_path / "f").iterdir() if p.is_dir()) == ["work"]
    flock.close()


def test_init_help_shows_the_storage_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shepard.cli import main as cli_main

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr("sys.argv", ["shepard", "init", "--help"])
    assert cli_main.app_main() == 0  # brackets in the help are not taken for markup
    assert "a folder or s3://BUCKET[/PREFIX]" in capsys.readouterr().out
