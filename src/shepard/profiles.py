"""Profiles: named flocks with default options, kept in the user's configuration folder.

A profile is `<config dir>/profiles/<NAME>.toml`; the selected profile's name is in
`<config dir>/current-profile`. The config dir is `platformdirs.user_config_dir("shepard")`,
or `SHEPARD_CONFIG_DIR` when set. `SHEPARD_PROFILE` picks a profile for one command.

A profile's flock is stored as an absolute path, resolved when the profile is configured, so a
relative path means what it meant in the folder it was typed in.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from shepard.config import CONFIG_NAME
from shepard.errors import ConfigError

FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FIELDS = ("flock", "workers", "wait")
CONFIG_DIR_ENV = "SHEPARD_CONFIG_DIR"
PROFILE_ENV = "SHEPARD_PROFILE"
CURRENT_NAME = "current-profile"


class ProfileError(ConfigError):
    """A profile is missing, malformed or points at something that is not a flock."""


def validate_name(name: str, *, source: str = "profile name") -> str:
    """Return `name` if it is a valid profile name, else raise ProfileError saying why."""
    if not NAME_PATTERN.fullmatch(name):
        raise ProfileError(
            f"{source} {name!r} is not valid: use 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def default_config_dir(env: Mapping[str, str] | None = None) -> Path:
    """`SHEPARD_CONFIG_DIR` if set, else the platform's per-user configuration folder."""
    env = os.environ if env is None else env
    override = env.get(CONFIG_DIR_ENV, "")
    if override:
        return Path(os.path.abspath(Path(override).expanduser()))
    return Path(platformdirs.user_config_dir("shepard"))


def absolute_flock(path: str | Path, cwd: Path | None = None) -> Path:
    """`path` made absolute against `cwd` (default: the current folder), `..` folded.

    Symbolic links are kept as typed. A path to a `flock.toml` file means its folder.
    """
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (cwd or Path.cwd()) / p
    p = Path(os.path.abspath(p))
    if p.name == CONFIG_NAME and p.is_file():
        p = p.parent
    return p


def holds_flock(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file()


@dataclass(frozen=True)
class Profile:
    """One profile: a flock and default options. A field that is None is blank (unset)."""

    name: str
    flock: Path | None = None
    workers: int | None = None  # default worker slots for `up`
    wait: bool | None = None  # default of --wait for `batch` and `submit`

    def values(self) -> dict[str, Any]:
        """Every field but the name, blank ones as None."""
        return {"flock": self.flock, "workers": self.workers, "wait": self.wait}

    def to_toml(self) -> str:
        data: dict[str, Any] = {"version": FORMAT_VERSION}
        for key, value in self.values().items():
            if value is not None:
                data[key] = str(value) if isinstance(value, Path) else value
        header = f"# Shepard profile {self.name!r}; edit with `shepard configure {self.name}`\n"
        return header + tomli_w.dumps(data)

    @classmethod
    def from_toml(cls, name: str, text: str, *, source: str) -> Profile:
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ProfileError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_dict(name, data, source=source)

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any], *, source: str) -> Profile:
        version = data.get("version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProfileError(f"{source}: version must be a positive integer, not {version!r}")
        if version > FORMAT_VERSION:
            raise ProfileError(
                f"{source}: format version {version} comes from a newer Shepard; "
                f"this one reads version {FORMAT_VERSION}"
            )
        unknown = sorted(set(data) - {"version", *FIELDS})
        if unknown:
            raise ProfileError(
                f"{source}: unknown key {unknown[0]!r} (known: version, {', '.join(FIELDS)})"
            )
        flock = data.get("flock")
        if flock is not None:
            if not isinstance(flock, str) or not flock or not Path(flock).is_absolute():
                raise ProfileError(f"{source}: flock must be an absolute path, not {flock!r}")
            flock = Path(flock)
        workers = data.get("workers")
        if workers is not None:
            workers = check_workers(workers, source=f"{source}: workers")
        wait = data.get("wait")
        if wait is not None and not isinstance(wait, bool):
            raise ProfileError(f"{source}: wait must be true or false, not {wait!r}")
        return cls(name=name, flock=flock, workers=workers, wait=wait)


def check_workers(value: object, *, source: str = "workers") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4096:
        raise ProfileError(f"{source} must be a whole number from 1 to 4096, not {value!r}")
    return value


@dataclass(frozen=True)
class Active:
    """The profile in effect for a command and where that choice came from."""

    profile: Profile
    source: str  # "SHEPARD_PROFILE" or "current-profile"


class ProfileStore:
    """The profiles under one configuration folder (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.profiles_dir = root / "profiles"
        self.current_file = root / CURRENT_NAME

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProfileStore:
        return cls(default_config_dir(env))

    def path(self, name: str) -> Path:
        return self.profiles_dir / f"{validate_name(name)}.toml"

    def names(self) -> list[str]:
        """Names of the stored profiles, sorted (files with other names are ignored)."""
        if not self.profiles_dir.is_dir():
            return []
        return sorted(
            p.stem
            for p in self.profiles_dir.glob("*.toml")
            if p.is_file() and NAME_PATTERN.fullmatch(p.stem)
        )

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> Profile:
        path = self.path(name)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ProfileError(self._missing(name)) from None
        return Profile.from_toml(name, text, source=str(path))

    def save(self, profile: Profile) -> Path:
        path = self.path(profile.name)
        _write_atomic(path, profile.to_toml())
        return path

    def configure(
        self,
        name: str,
        *,
        flock: str | Path | None = None,
        workers: int | None = None,
        wait: bool | None = None,
        clear: Iterable[str] = (),
        cwd: Path | None = None,
    ) -> tuple[Profile, bool]:
        """Create or update profile `name`; return it and whether it is new.

        Values that are None are left as they are; `clear` names fields to blank. A relative
        `flock` is resolved against `cwd` (default: the current folder) and stored absolute.
        """
        validate_name(name)
        cleared = set()
        for key in clear:
            if key not in FIELDS:
                raise ProfileError(f"cannot clear {key!r}: profile keys are {', '.join(FIELDS)}")
            cleared.add(key)
        given = {"flock": flock, "workers": workers, "wait": wait}
        both = sorted(k for k in cleared if given[k] is not None)
        if both:
            raise ProfileError(f"{both[0]!r} is both set and cleared; pick one")
        created = not self.exists(name)
        profile = Profile(name) if created else self.load(name)
        changes: dict[str, Any] = dict.fromkeys(cleared)
        if flock is not None:
            changes["flock"] = absolute_flock(flock, cwd)
        if workers is not None:
            changes["workers"] = check_workers(workers)
        if wait is not None:
            changes["wait"] = wait
        profile = replace(profile, **changes)
        self.save(profile)
        return profile, created

    def delete(self, name: str) -> bool:
        """Delete profile `name`; return True if it was the current one (now unselected)."""
        path = self.path(name)
        if not path.is_file():
            raise ProfileError(self._missing(name))
        was_current = self._current_raw() == name
        path.unlink()
        if was_current:
            self.current_file.unlink(missing_ok=True)
        return was_current

    def current(self) -> str | None:
        """The selected profile's name (which may have been deleted by hand), or None."""
        raw = self._current_raw()
        if raw is None:
            return None
        if not NAME_PATTERN.fullmatch(raw):
            raise ProfileError(
                f"{self.current_file} holds {raw!r}, which is not a profile name; "
                "run `shepard clear-profile` or `shepard set-profile NAME`"
            )
        return raw

    def select(self, name: str) -> Profile:
        profile = self.load(name)
        _write_atomic(self.current_file, name + "\n")
        return profile

    def clear_selection(self) -> str | None:
        """Forget the selection; return the name that was selected, if any."""
        raw = self._current_raw()
        self.current_file.unlink(missing_ok=True)
        return raw

    def active(self, env: Mapping[str, str] | None = None) -> Active | None:
        """The profile in effect: `SHEPARD_PROFILE` if set, else the selection, else None."""
        env = os.environ if env is None else env
        forced = env.get(PROFILE_ENV, "")
        if forced:
            validate_name(forced, source=PROFILE_ENV)
            if not self.exists(forced):
                raise ProfileError(
                    f"{PROFILE_ENV}={forced}: no such profile in {self.profiles_dir}{self._known()}"
                )
            return Active(self.load(forced), PROFILE_ENV)
        name = self.current()
        if name is None:
            return None
        if not self.exists(name):
            raise ProfileError(
                f"the current profile {name!r} no longer exists in {self.profiles_dir}; "
                "select another with `shepard set-profile NAME` or run `shepard clear-profile`"
            )
        return Active(self.load(name), CURRENT_NAME)

    def active_flock(self, env: Mapping[str, str] | None = None) -> tuple[Path, Profile] | None:
        """The flock folder the profile in effect names, checked to hold a flock.toml.

        None when no profile is in effect or it names no flock.
        """
        active = self.active(env)
        if active is None or active.profile.flock is None:
            return None
        folder = active.profile.flock
        if not holds_flock(folder):
            raise ProfileError(
                f"profile {active.profile.name!r} points at {folder}, which holds no {CONFIG_NAME} "
                f"(fix it with `shepard configure {active.profile.name} --flock PATH`)"
            )
        return folder, active.profile

    def _current_raw(self) -> str | None:
        try:
            raw = self.current_file.read_text().strip()
        except FileNotFoundError:
            return None
        return raw or None

    def _missing(self, name: str) -> str:
        return f"no profile {name!r} in {self.profiles_dir}{self._known()}"

    def _known(self) -> str:
        names = self.names()
        return f" (profiles: {', '.join(names)})" if names else " (there are no profiles)"


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
