"""Flock configuration: `flock.toml`, validated with pydantic.

A flock folder holds `flock.toml`; relative paths inside it are resolved against that folder,
so a flock can be moved or shared as a whole.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shepard.errors import ConfigError
from shepard.model import RetryPolicy

CONFIG_NAME = "flock.toml"
FOLDERS = ("inbox", "inputs", "outputs", "errors", "logs", "quick-deploy", "secrets", "work")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    root: str = "."  # holds inbox/ inputs/ outputs/ errors/ logs/ quick-deploy/ secrets/ work/
    workspace: str | None = None  # job workspaces; default <root>/work


class CatalogConfig(_Strict):
    url: str | None = None  # default sqlite:///<flock>/catalog.db


class BackendConfig(_Strict):
    kind: Literal["local"] = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=4096)
    lease: float = Field(default=60.0, gt=1, description="seconds a claim lasts without heartbeat")


class PayloadConfig(_Strict):
    command: str | None = None  # run through /bin/sh -c in the job's workspace
    timeout: float | None = Field(default=None, gt=0)  # seconds per attempt; None = no limit
    env: dict[str, str] = Field(default_factory=dict)  # extra variables for every job


class RetryConfig(_Strict):
    attempts: int = Field(default=1, ge=1, le=100)
    backoff: float = Field(default=5.0, ge=0)
    backoff_max: float = Field(default=300.0, ge=0)
    no_retry_exit_codes: list[int] = Field(default_factory=list)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.attempts, self.backoff, self.backoff_max, frozenset(self.no_retry_exit_codes)
        )


class LimitsConfig(_Strict):
    max_bundle_bytes: int = Field(default=64 << 30, gt=0)  # uncompressed total of a bundle
    max_compression_ratio: float = Field(default=200.0, gt=1)
    max_entries: int = Field(default=100_000, gt=0)
    max_inputs_bytes: int = Field(default=1 << 20, gt=0)  # size of inputs.json itself


class FilesystemsConfig(_Strict):
    """Shared filesystems playing the roles of Shepard's EFS and Lustre (plain folders here)."""

    efs: str | None = None
    lustre: str | None = None


class FlockConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    backend: BackendConfig = Field(default_factory=BackendConfig)
    payload: PayloadConfig = PayloadConfig()
    retry: RetryConfig = RetryConfig()
    limits: LimitsConfig = LimitsConfig()
    filesystems: FilesystemsConfig = FilesystemsConfig()


class Flockdir:
    """A loaded flock: its folder, its validated config and the paths derived from them."""

    def __init__(self, folder: Path, config: FlockConfig) -> None:
        self.folder = folder.resolve()
        self.config = config

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.folder / path).resolve()

    @property
    def storage_root(self) -> Path:
        return self.resolve(self.config.storage.root)

    def store_path(self, name: str) -> Path:
        """Folder of one of the flock's stores (inbox, inputs, outputs, errors, logs, ...)."""
        if name == "work" and self.config.storage.workspace:
            return self.resolve(self.config.storage.workspace)
        return self.storage_root / name

    @property
    def catalog_url(self) -> str:
        return self.config.catalog.url or f"sqlite:///{self.folder / 'catalog.db'}"

    def filesystem(self, kind: Literal["efs", "lustre"]) -> Path | None:
        value = getattr(self.config.filesystems, kind)
        return None if value is None else self.resolve(value)


def load(folder: str | Path) -> Flockdir:
    """Load and validate `<folder>/flock.toml`; raise ConfigError naming the bad key."""
    folder = Path(folder).expanduser()
    path = folder / CONFIG_NAME if folder.is_dir() or not folder.suffix else folder
    if path.name == CONFIG_NAME:
        folder = path.parent
    if not path.is_file():
        raise ConfigError(
            f"no flock at {folder}: {path} does not exist "
            "(create one with `shepard init`, or point --flock / SHEPARD_FLOCK at a flock folder)"
        )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return Flockdir(folder, parse(data, source=str(path)))


def parse(data: dict[str, Any], source: str = CONFIG_NAME) -> FlockConfig:
    try:
        return FlockConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: " + "; ".join(_describe(e) for e in exc.errors())) from exc


def _describe(err: Any) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if err["type"] == "missing":
        return f"missing required key {key!r}"
    return f"{key}: {err['msg']}"


def write(folder: Path, config: FlockConfig) -> Path:
    """Write `config` as `<folder>/flock.toml` (only the keys that differ from defaults)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    data = config.model_dump(exclude_defaults=True, exclude_none=True)
    data = {"name": config.name, **data}
    if "backend" not in data or "workers" not in data["backend"]:
        data.setdefault("backend", {})["workers"] = config.backend.workers
    path.write_text(tomli_w.dumps(data))
    return path
