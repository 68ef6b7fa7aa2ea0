"""Profiles through the real executable: configure, select, resolve the flock, aliases, errors."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Cli, Result

pytestmark = pytest.mark.acceptance


class ProfileCli(Cli):
    """`shepard` with its own profile folder, no SHEPARD_FLOCK and no SHEPARD_PROFILE."""

    def __init__(self, root: Path) -> None:
        super().__init__(root / "flock", root)
        self.config = root / "config"
        self.env["SHEPARD_CONFIG_DIR"] = str(self.config)
        for name in ("SHEPARD_FLOCK", "SHEPARD_PROFILE"):
            self.env.pop(name, None)

    def at(self, cwd: Path, *args: str, ok: bool | None = True, **env: str) -> Result:
        """Run in folder `cwd` with extra environment variables (NAME=value keywords)."""
        saved_cwd, saved_env = self.cwd, self.env
        cwd.mkdir(parents=True, exist_ok=True)
        self.cwd, self.env = cwd, {**self.env, **env}
        try:
            return self(*args, ok=ok)
        finally:
            self.cwd, self.env = saved_cwd, saved_env

    def make_flock(self, folder: Path, jobs: int = 0) -> Path:
        """A flock at `folder` holding `jobs` queued jobs, so each flock is recognisable."""
        self("init", str(folder), "--payload-command", "true", "--workers", "2")
        if jobs:
            self("submit", "--flock", str(folder), "--range", f"ITEM=1-{jobs}")
        return folder

    def total(self, *args: str, cwd: Path | None = None, **env: str) -> int:
        """How many jobs `query` sees: tells which flock it resolved."""
        result = self.at(cwd or self.cwd, "query", "--json", *args, ok=True, **env)
        return int(sum(result.json()["counts"].values()))

    def profiles(self) -> Any:
        """`check-profile --json`."""
        return self("check-profile", "--json").json()


@pytest.fixture
def pcli(tmp_path: Path) -> ProfileCli:
    return ProfileCli(tmp_path)


def test_relative_flock_is_resolved_where_configure_ran(pcli: ProfileCli, tmp_path: Path) -> None:
    pcli.make_flock(tmp_path / "projects" / "flock", jobs=2)
    made = pcli.at(tmp_path / "projects", "configure", "work", "--flock", "flock", "--workers", "3")
    assert "created profile work" in made.out
    stored = (pcli.config / "profiles" / "work.toml").read_text()
    assert f'flock = "{tmp_path / "projects" / "flock"}"' in stored
    assert "version = 1" in stored and "workers = 3" in stored
    elsewhere = tmp_path / "somewhere" / "else"
    assert pcli.at(elsewhere, "query", ok=False).code != 0, "no profile selected yet: uses '.'"
    pcli("set-profile", "work")
    assert pcli.total(cwd=elsewhere) == 2
    pcli.at(elsewhere, "submit", "--json", '{"A": 1}')
    assert pcli.total(cwd=tmp_path) == 3, "submit went to the profile's flock too"
    assert not list(elsewhere.iterdir()), "nothing was written in the working folder"


def test_set_check_delete_clear_and_where_am_i(pcli: ProfileCli, tmp_path: Path) -> None:
    empty = pcli("check-profile")
    assert "no profiles in" in empty.out
    flock = pcli.make_flock(tmp_path / "a")
    pcli("configure", "alpha", "--flock", str(flock), "--wait")
    pcli("configure", "beta", "--flock", str(tmp_path / "b"), "--workers", "5")
    listing = pcli.profiles()
    assert listing["current"] is None
    assert listing["directory"] == str(pcli.config / "profiles")
    rows = {r["name"]: r for r in listing["profiles"]}
    assert rows["alpha"]["flock"] == str(flock) and rows["alpha"]["wait"] is True
    assert rows["alpha"]["flock_ok"] is True and rows["beta"]["flock_ok"] is False
    assert rows["beta"]["workers"] == 5 and rows["beta"]["wait"] is None

    pcli("set-profile", "alpha")
    text = pcli("check-profile").out
    assert f"* alpha  flock={flock}  workers=-  wait=true" in text
    assert "  beta   flock=" in text and "(no flock.toml there)" in text
    where = pcli("where-am-i").out
    assert str(pcli.config / "profiles") in where
    assert "current profile    alpha" in where and f"{flock} (from profile 'alpha')" in where

    pcli("configure", "alpha", "--clear", "wait", "--workers", "2")
    rows = {r["name"]: r for r in pcli.profiles()["profiles"]}
    assert rows["alpha"]["wait"] is None and rows["alpha"]["workers"] == 2
    assert rows["alpha"]["flock"] == str(flock), "fields not named are kept"

    deleted = pcli("delete-profile", "alpha")
    assert "it was the current profile" in deleted.out
    assert pcli.profiles()["current"] is None
    assert not (pcli.config / "profiles" / "alpha.toml").exists()
    assert "no profile 'alpha'" in pcli("delete-profile", "alpha", ok=False).err

    pcli("set-profile", "beta")
    assert pcli.profiles()["current"] == "beta"
    assert "was beta" in pcli("clear-profile").out
    assert pcli.profiles()["current"] is None
    assert "current profile    (none)" in pcli("where-am-i").out
    assert "no profile 'gamma'" in pcli("set-profile", "gamma", ok=False).err


def test_precedence_flag_over_env_over_profile(pcli: ProfileCli, tmp_path: Path) -> None:
    one = pcli.make_flock(tmp_path / "one", jobs=1)
    two = pcli.make_flock(tmp_path / "two", jobs=2)
    three = pcli.make_flock(tmp_path / "three", jobs=3)
    pcli("configure", "p1", "--flock", str(one))
    pcli("configure", "p2", "--flock", str(two))
    pcli("set-profile", "p1")
    cwd = tmp_path / "cwd"
    assert pcli.total(cwd=cwd) == 1
    assert pcli.total(cwd=cwd, SHEPARD_PROFILE="p2") == 2, "SHEPARD_PROFILE beats the selection"
    assert pcli.total(cwd=cwd, SHEPARD_FLOCK=str(three)) == 3, "SHEPARD_FLOCK beats a profile"
    assert pcli.total("--flock", str(two), cwd=cwd, SHEPARD_FLOCK=str(three)) == 2
    assert pcli.total("-f", str(one), cwd=cwd, SHEPARD_PROFILE="p2") == 1
    pcli("clear-profile")
    assert pcli.total(cwd=three) == 3, "no profile: the current folder"


def test_profile_options_are_defaults(pcli: ProfileCli, tmp_path: Path) -> None:
    flock = pcli.make_flock(tmp_path / "flock")
    pcli("configure", "fast", "--flock", str(flock), "--workers", "3", "--wait")
    pcli("set-profile", "fast")
    done = pcli("submit", "--json", '{"A": 1}')
    assert "succeeded" in done.out and "outputs:" in done.out, "--wait came from the profile"
    assert pcli.total() == 1
    for args, expected in ((), "with 3 workers"), (("--workers", "1"), "with 1 workers"):
        proc = pcli.popen("up", *args)
        try:
            assert proc.stdout is not None
            assert expected in proc.stdout.readline()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)


def test_bad_names_are_refused(pcli: ProfileCli) -> None:
    for name in ("bad name", "../escape"):
        for args in (("configure", "--flock", "."), ("set-profile",), ("delete-profile",)):
            result = pcli(*args, "--", name, ok=False)
            assert f"profile name {name!r} is not valid: use 1 to 64 letters" in result.err
            assert "Traceback" not in result.err and result.code == 2
    assert not (pcli.config / "profiles").exists()
    assert not pcli.config.parent.joinpath("escape.toml").exists()
    bad_env = pcli.at(pcli.cwd, "query", ok=False, SHEPARD_PROFILE="no/such")
    assert "SHEPARD_PROFILE 'no/such' is not valid" in bad_env.err


def test_profile_pointing_at_a_deleted_flock(pcli: ProfileCli, tmp_path: Path) -> None:
    flock = pcli.make_flock(tmp_path / "doomed")
    pcli("configure", "doomed", "--flock", str(flock))
    pcli("set-profile", "doomed")
    shutil.rmtree(flock)
    result = pcli.at(tmp_path / "cwd", "query", ok=False)
    assert f"profile 'doomed' points at {flock}, which holds no flock.toml" in result.err
    assert "Traceback" not in result.err and result.code == 2
    assert "which holds no flock.toml" in pcli("where-am-i").out
    assert "(no flock.toml there)" in pcli("check-profile").out
    pcli.at(tmp_path / "cwd", "query", "--flock", str(pcli.make_flock(tmp_path / "other")))

    (pcli.config / "profiles" / "doomed.toml").unlink()
    gone = pcli("query", ok=False)
    assert "the current profile 'doomed' no longer exists" in gone.err
    assert "shepard clear-profile" in gone.err


def test_configure_without_options_prompts_for_the_flock(pcli: ProfileCli, tmp_path: Path) -> None:
    flock = pcli.make_flock(tmp_path / "here" / "flock")
    pcli.cwd = tmp_path / "here"
    asked = pcli("configure", "p", stdin="flock\n")
    assert "Flock folder [.]" in asked.out
    assert pcli.profiles()["profiles"] == [
        {
            "name": "p",
            "current": False,
            "flock": str(flock),
            "workers": None,
            "wait": None,
            "flock_ok": True,
        }
    ]
    again = pcli("configure", "p", stdin="\n")
    assert f"Flock folder [{flock}]" in again.out, "the current value is the default"
    assert pcli.profiles()["profiles"][0]["flock"] == str(flock)


def test_underscore_aliases(pcli: ProfileCli, tmp_path: Path) -> None:
    flock = pcli.make_flock(tmp_path / "flock")
    pcli("configure", "old", "--flock", str(flock))
    assert "current profile: old" in pcli("set_profile", "old").out
    assert "* old" in pcli("check_profile").out
    assert "current profile    old" in pcli("where_am_i").out
    assert "was old" in pcli("clear_profile_config").out
    pcli("set_profile", "old")
    assert "it was the current profile" in pcli("delete_profile", "old").out
    help_text = pcli("--help").out
    assert "set-profile" in help_text and "where-am-i" in help_text
    assert "set_profile" not in help_text and "clear_profile_config" not in help_text
