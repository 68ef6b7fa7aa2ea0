"""Tests of profiles (shepard.profiles) and of how the CLI resolves the flock from them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import platformdirs
import pytest
import typer
from typer.testing import CliRunner

import shepard
from shepard.cli.common import FlockOption, apply_profile_defaults
from shepard.profiles import (
    FORMAT_VERSION,
    Profile,
    ProfileError,
    ProfileStore,
    absolute_flock,
    default_config_dir,
    validate_name,
)


@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    return ProfileStore(tmp_path / "config")


def make_flock(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flock.toml").write_text('name = "x"\n')
    return folder


@pytest.mark.parametrize("name", ["dev", "a", "A.b_c-9", "0", "x" * 64, "prod.eu-west-1"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", ".", "..", "-x", "_x", ".hidden", "a b", "a/b", "../x", "x" * 65, "é", "a\n"]
)
def test_invalid_names_are_refused_clearly(name: str, store: ProfileStore) -> None:
    with pytest.raises(ProfileError, match="is not valid: use 1 to 64 letters"):
        validate_name(name)
    with pytest.raises(ProfileError, match="is not valid"):
        store.configure(name, flock="/x")
    assert not store.profiles_dir.exists()


def test_config_dir_honours_the_environment(tmp_path: Path) -> None:
    assert default_config_dir({"SHEPARD_CONFIG_DIR": str(tmp_path)}) == tmp_path
    assert default_config_dir({}) == Path(platformdirs.user_config_dir("shepard"))
    assert default_config_dir({"SHEPARD_CONFIG_DIR": ""}) == default_config_dir({})
    relative = default_config_dir({"SHEPARD_CONFIG_DIR": "rel"})
    assert relative.is_absolute() and relative.name == "rel"


def test_profiles_never_live_inside_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHEPARD_CONFIG_DIR", raising=False)
    package = Path(shepard.__file__).parent.resolve()
    root = ProfileStore.from_env().root.resolve()
    assert package not in root.parents and root != package


def test_relative_flock_is_stored_absolute(tmp_path: Path, store: ProfileStore) -> None:
    cwd = tmp_path / "here"
    cwd.mkdir()
    profile, created = store.configure("dev", flock="../flocks/one", cwd=cwd)
    assert created
    assert profile.flock == tmp_path / "flocks" / "one"
    assert store.load("dev").flock == tmp_path / "flocks" / "one"


def test_absolute_flock(tmp_path: Path) -> None:
    assert absolute_flock("a/./b/../c", tmp_path) == tmp_path / "a" / "c"
    assert absolute_flock("/x/y") == Path("/x/y")
    flock = make_flock(tmp_path / "f")
    assert absolute_flock(flock / "flock.toml") == flock, "a path to flock.toml means its folder"
    home = absolute_flock("~/f")
    assert home.is_absolute() and "~" not in str(home)


def test_file_format(store: ProfileStore) -> None:
    store.configure("dev", flock="/srv/flock", workers=4, wait=True)
    text = store.path("dev").read_text()
    assert store.path("dev") == store.root / "profiles" / "dev.toml"
    assert f"version = {FORMAT_VERSION}" in text
    assert 'flock = "/srv/flock"' in text and "workers = 4" in text and "wait = true" in text
    store.configure("bare")
    assert "flock" not in store.path("bare").read_text(), "blank fields are not written"


def test_update_keeps_other_fields_and_clear_blanks(store: ProfileStore) -> None:
    store.configure("dev", flock="/a", workers=4, wait=True)
    profile, created = store.configure("dev", workers=8)
    assert not created
    assert profile == Profile("dev", flock=Path("/a"), workers=8, wait=True)
    profile, _ = store.configure("dev", wait=False, clear=["flock", "workers"])
    assert profile == Profile("dev", wait=False)
    assert store.load("dev") == profile


def test_configure_refuses_bad_requests(store: ProfileStore) -> None:
    with pytest.raises(ProfileError, match="cannot clear 'colour'"):
        store.configure("dev", clear=["colour"])
    with pytest.raises(ProfileError, match="'workers' is both set and cleared"):
        store.configure("dev", workers=2, clear=["workers"])
    with pytest.raises(ProfileError, match="workers must be a whole number from 1 to 4096"):
        store.configure("dev", workers=0)
    assert store.names() == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = 99\n", "format version 99 comes from a newer Shepard"),
        ('version = "1"\n', "version must be a positive integer"),
        ("version = 1\ncolour = 'red'\n", "unknown key 'colour'"),
        ("flock = 'relative/path'\n", "flock must be an absolute path"),
        ("flock = 3\n", "flock must be an absolute path"),
        ("workers = 0\n", "workers must be a whole number"),
        ("workers = true\n", "workers must be a whole number"),
        ("wait = 'yes'\n", "wait must be true or false"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_malformed_files_are_refused_with_the_reason(
    store: ProfileStore, text: str, message: str
) -> None:
    store.profiles_dir.mkdir(parents=True)
    store.path("dev").write_text(text)
    with pytest.raises(ProfileError, match=message) as info:
        store.load("dev")
    assert str(store.path("dev")) in str(info.value)


def test_missing_version_reads_as_the_current_format(store: ProfileStore) -> None:
    store.profiles_dir.mkdir(parents=True)
    store.path("dev").write_text("workers = 2\n")
    assert store.load("dev") == Profile("dev", workers=2)


def test_names_ignore_other_files(store: ProfileStore) -> None:
    assert store.names() == []
    store.configure("b")
    store.configure("a")
    (store.profiles_dir / "notes.txt").write_text("x")
    (store.profiles_dir / ".hidden.toml").write_text("")
    (store.profiles_dir / ".b.toml.tmp").write_text("")
    assert store.names() == ["a", "b"]


def test_select_current_and_clear(store: ProfileStore) -> None:
    assert store.current() is None
    with pytest.raises(ProfileError, match=r"no profile 'dev'.*there are no profiles"):
        store.select("dev")
    store.configure("dev", flock="/a")
    assert store.select("dev").flock == Path("/a")
    assert store.current() == "dev"
    assert store.current_file == store.root / "current-profile"
    assert store.clear_selection() == "dev"
    assert store.current() is None
    assert store.clear_selection() is None


def test_delete(store: ProfileStore) -> None:
    store.configure("dev")
    store.configure("prod")
    store.select("prod")
    assert store.delete("dev") is False
    assert store.current() == "prod"
    assert store.delete("prod") is True
    assert store.current() is None
    with pytest.raises(ProfileError, match="no profile 'prod'"):
        store.delete("prod")


def test_garbage_selection_is_reported(store: ProfileStore) -> None:
    store.root.mkdir(parents=True)
    store.current_file.write_text("../../etc/passwd\n")
    with pytest.raises(ProfileError, match="not a profile name; run `shepard clear-profile`"):
        store.current()
    assert store.clear_selection() == "../../etc/passwd"


def test_active_profile_env_beats_selection(store: ProfileStore) -> None:
    store.configure("dev")
    store.configure("prod")
    assert store.active({}) is None
    store.select("dev")
    active = store.active({})
    assert active is not None and (active.profile.name, active.source) == ("dev", "current-profile")
    active = store.active({"SHEPARD_PROFILE": "prod"})
    assert active is not None
    assert (active.profile.name, active.source) == ("prod", "SHEPARD_PROFILE")
    with pytest.raises(ProfileError, match="SHEPARD_PROFILE=nope: no such profile"):
        store.active({"SHEPARD_PROFILE": "nope"})
    with pytest.raises(ProfileError, match=re.escape("SHEPARD_PROFILE '../x' is not valid")):
        store.active({"SHEPARD_PROFILE": "../x"})


def test_active_flock(tmp_path: Path, store: ProfileStore) -> None:
    flock = make_flock(tmp_path / "flock")
    assert store.active_flock({}) is None
    store.configure("bare", workers=2)
    store.select("bare")
    assert store.active_flock({}) is None, "a profile without a flock leaves the default"
    store.configure("dev", flock=flock)
    store.select("dev")
    found = store.active_flock({})
    assert found is not None and found[0] == flock and found[1].name == "dev"


def test_active_flock_errors_are_clear(tmp_path: Path, store: ProfileStore) -> None:
    gone = tmp_path / "gone"
    store.configure("x", flock=gone)
    store.select("x")
    with pytest.raises(ProfileError) as info:
        store.active_flock({})
    assert str(info.value).startswith(f"profile 'x' points at {gone}, which holds no flock.toml")
    store.path("x").unlink()
    with pytest.raises(ProfileError, match="the current profile 'x' no longer exists"):
        store.active_flock({})


# -- the CLI side: --flock > SHEPARD_FLOCK > profile > '.', and profile option defaults --------

probe = typer.Typer()


@probe.callback()
def _root(ctx: typer.Context) -> None:
    apply_profile_defaults(ctx)


@probe.command()
def up(
    flock: FlockOption = Path("."),
    workers: Annotated[int | None, typer.Option()] = None,
) -> None:
    typer.echo(f"{flock}|{workers}")


@probe.command()
def other(flock: FlockOption = Path(".")) -> None:
    typer.echo(f"{flock}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProfileStore:
    monkeypatch.setenv("SHEPARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("SHEPARD_FLOCK", raising=False)
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    return ProfileStore(tmp_path / "config")


def run(*args: str, env: dict[str, str] | None = None) -> str:
    result = CliRunner().invoke(probe, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return str(result.output.strip())


def test_flock_precedence(tmp_path: Path, env: ProfileStore) -> None:
    assert run("up") == ".|None", "no profile: the current folder"
    flock = make_flock(tmp_path / "profiled")
    env.configure("dev", flock=flock, workers=3)
    env.select("dev")
    assert run("up") == f"{flock}|3"
    assert run("other") == str(flock)
    assert run("up", env={"SHEPARD_FLOCK": "envflock"}) == "envflock|3"
    assert run("up", "--flock", "cli", env={"SHEPARD_FLOCK": "envflock"}) == "cli|3"
    assert run("up", "-f", ".", "--workers", "1") == ".|1", "an explicit '.' is honoured"


def test_shepard_profile_picks_for_one_command(tmp_path: Path, env: ProfileStore) -> None:
    env.configure("dev", flock=make_flock(tmp_path / "a"))
    env.configure("prod", flock=make_flock(tmp_path / "b"), workers=7)
    env.select("dev")
    assert run("up", env={"SHEPARD_PROFILE": "prod"}) == f"{tmp_path / 'b'}|7"
    assert run("up") == f"{tmp_path / 'a'}|None"


def test_unusable_profile_only_matters_when_its_flock_is_needed(
    tmp_path: Path, env: ProfileStore
) -> None:
    env.configure("x", flock=tmp_path / "nothing")
    env.select("x")
    assert run("up", "--flock", "given") == "given|None"
    with pytest.raises(ProfileError, match=r"points at .*nothing, which holds no flock\.toml"):
        CliRunner().invoke(probe, ["up"], catch_exceptions=False)
