"""Flock configuration: `flock.toml`, validated with pydantic.

A flock folder holds `flock.toml`; relative paths inside it are resolved against that folder,
so a flock can be moved or shared as a whole.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shepard import backends
from shepard.errors import ConfigError, ParamsError, StorageError
from shepard.model import RetryPolicy
from shepard.params import validate_params
from shepard.storage import STORES
from shepard.storage import urls as storage_urls
from shepard.storage.base import StoreOptions

CONFIG_NAME = "flock.toml"
MAX_WORKERS = 4096  # worker slots of one process (backend.workers, init/up --workers)
MAX_ATTEMPTS = 100  # attempts of one job (retry.attempts, --attempts)
# The flock's object stores: folders or S3 prefixes under [storage] root, each overridable.
STORE_NAMES = (
    "inbox",
    "inputs",
    "outputs",
    "errors",
    "logs",
    "quick-deploy",
    "secrets",
    "manifests",
)
FOLDERS = (*STORE_NAMES, "work")  # work/ (job workspaces) is always a local folder


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    """`[storage]`: where the flock's stores live (docs/flock.md#storage)."""

    # a folder or s3://BUCKET[/PREFIX]; holds inbox/ inputs/ outputs/ errors/ logs/
    # quick-deploy/ secrets/ (and work/ when it is a folder)
    root: str = "."
    workspace: str | None = None  # job workspaces, always local; default <root>/work, or
    # <flock folder>/work when root is in S3
    endpoint_url: str | None = None  # S3 endpoint; default: boto3's (AWS_ENDPOINT_URL, ...)
    region: str | None = None  # S3 region; default: boto3's (AWS_REGION, profile, ...)
    stores: dict[str, str] = Field(
        default_factory=dict
    )  # one store elsewhere: outputs = "s3://b/o"

    @classmethod
    def at(cls, root: str) -> StorageConfig:
        """The storage config of `root` (a folder or an S3 URL); ConfigError when malformed."""
        try:
            return cls(root=root)
        except ValidationError as exc:
            messages = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError("; ".join(messages)) from exc

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        return _store_url(value)

    @field_validator("stores")
    @classmethod
    def _stores(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if name not in STORE_NAMES:
                raise ValueError(f"unknown store {name!r} (stores: {', '.join(STORE_NAMES)})")
            _store_url(url)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an endpoint URL (e.g. http://127.0.0.1:9000)")
        return value


def _store_url(url: str) -> str:
    """`url` if it names a folder or an S3 prefix, else ValueError saying what is accepted."""
    kind = storage_urls.scheme(url)
    if kind == "s3":
        try:
            storage_urls.parse_s3_url(url)
        except StorageError as exc:
            raise ValueError(str(exc)) from exc
    elif kind not in STORES or not url.strip():
        raise ValueError(f"{url!r}: use a folder, file://PATH or s3://BUCKET[/PREFIX]")
    return url


class CatalogConfig(_Strict):
    url: str | None = None  # default sqlite:///<flock>/catalog.db


class BackendConfig(BaseModel):
    """`[backend]`: the kind of backend, the settings every kind shares, and one section per
    kind (`[backend.slurm]`...), each validated by the class that kind registers
    (shepard.backends.KINDS). Read a section with `section(kind)`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = "local"
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=MAX_WORKERS)
    lease: float = Field(
        default=60.0,
        gt=1,
        allow_inf_nan=False,
        description="seconds a claim lasts without heartbeat",
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in backends.KINDS:
            raise ValueError(f"unknown backend {value!r}; known: {', '.join(backends.kinds())}")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _sections(cls, data: Any, handler: Any) -> Any:
        """Validate each `[backend.<kind>]` table with its kind's class (errors keep their
        place, e.g. `backend.slurm.memory`); a table of no known kind is an unknown key."""
        if isinstance(data, dict):
            data = dict(data)
            errors: list[Any] = []
            for key in [k for k in data if k not in cls.model_fields]:
                if key not in backends.KINDS:
                    errors.append({"type": "extra_forbidden", "loc": (key,), "input": data[key]})
                    continue
                try:
                    data[key] = backends.config_class(key).model_validate(data[key])
                except ValidationError as exc:
                    errors += [{**e, "loc": (key, *e["loc"])} for e in exc.errors()]
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
        return handler(data)

    def section(self, kind: str | None = None) -> BaseModel:
        """The `[backend.<kind>]` section (of `kind`, default this flock's), defaults filled."""
        kind = kind or self.kind
        found = (self.model_extra or {}).get(kind)
        return found if isinstance(found, BaseModel) else backends.config_class(kind)()


class PayloadConfig(_Strict):
    """`[payload]`: what runs for each job. `kind` names a payload kind (payloads/base.py,
    docs/payloads.md), which checks the other keys; a file without `kind` gets the one its
    keys meant before kinds existed (`infer_kind`)."""

    kind: str = ""  # "command" | "image" | "quick-deploy" | "tasks"; "" (unset): inferred
    command: str | None = None  # run through /bin/sh -c in the job's workspace
    # kind "tasks": the tasks.json document every job runs (docs/tasks.md), relative to the
    # flock's folder or absolute
    tasks: str | None = None
    # a container image to run each job in (docs/containers.md); `command` then runs inside
    # it, or the image's own entrypoint and command run when `command` is unset
    image: str | None = None
    # seconds per attempt; None = no limit
    timeout: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    env: dict[str, str] = Field(default_factory=dict)  # extra variables for every job

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        # the same names and values a job's parameters may have: the runtime sets the
        # reserved ones (PATH included) for every job, and a bad name breaks every start
        try:
            validate_params(value, source="payload.env")
        except ParamsError as exc:
            problems = [line.strip().removeprefix("- ") for line in str(exc).splitlines()[1:]]
            raise ValueError("; ".join(problems)) from None
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is not an image name (e.g. localhost/tool:1)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        """A section without `kind` gets the one its keys meant before kinds existed."""
        if isinstance(data, dict) and not data.get("kind"):
            from shepard.payloads.base import infer_kind  # payloads import this module

            return {**data, "kind": infer_kind(data.get("command"), data.get("image"))}
        return data

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        from shepard.payloads.base import kind_class

        kind_class(value)  # UnknownKind (a ValueError) lists the known kinds
        return value

    @model_validator(mode="after")
    def _check_kind(self) -> PayloadConfig:
        """The kind must be registered, and accept the other keys."""
        from shepard.payloads.base import kind_class

        if self.tasks is not None and self.kind != "tasks":
            raise ValueError('payload.tasks is set: set kind = "tasks", or remove payload.tasks')
        kind_class(self.kind).check(self)
        return self


class RetryConfig(_Strict):
    attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS)
    backoff: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    backoff_max: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    no_retry_exit_codes: list[int] = Field(default_factory=list)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.attempts, self.backoff, self.backoff_max, frozenset(self.no_retry_exit_codes)
        )


class SubmitConfig(_Strict):
    """`[submit]`: how submissions behave."""

    # submission by work items (`submit --items`) previews unless --apply is given; true
    # makes it submit at once (--preview then asks for the preview)
    apply_by_default: bool = False


class LimitsConfig(_Strict):
    max_bundle_bytes: int = Field(default=64 << 30, gt=0)  # uncompressed total of a bundle
    max_compression_ratio: float = Field(default=200.0, gt=1)
    max_entries: int = Field(default=100_000, gt=0)
    max_inputs_bytes: int = Field(default=1 << 20, gt=0)  # size of inputs.json itself


class FilesystemsConfig(_Strict):
    """Shared filesystems playing the roles of Shepard's EFS and Lustre (plain folders here)."""

    efs: str | None = None
    lustre: str | None = None


_MEMORY = re.compile(r"^(\d+)\s*([kmgt]?)i?b?$", re.IGNORECASE)
_ULIMIT = re.compile(r"^(-?\d+|unlimited)(?::(-?\d+|unlimited))?$")
ULIMIT_NAMES = frozenset(
    {
        "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
        "rss", "rtprio", "rttime", "sigpending", "stack",
    }
)  # fmt: skip


class ContainerConfig(_Strict):
    """`[container]`: how image payloads run (docs/containers.md). Used when payload.image is
    set; `gpus` is also checked at submission for any flock."""

    engine: str | None = None  # Docker Engine API URL; default DOCKER_HOST, else a local socket
    cpus: float | None = Field(default=None, gt=0, le=4096)
    memory: str | None = None  # bytes, or with a unit: 512m, 2g
    ulimits: dict[str, str] = Field(default_factory=dict)  # {nofile = "4096:8192"}
    gpus: int | Literal["all"] = 0  # NVIDIA GPUs per job: a number (0: none) or "all"
    allow_docker_access: bool = False  # mount the engine's socket into the container
    network: str | None = None  # engine network ("none", "host", a name); default: engine's
    pull: Literal["missing", "never", "always"] = "missing"
    user: str = Field(default="host", min_length=1)  # "host" | "image" | uid[:gid] | name

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpus(cls, value: object) -> object:
        if value == "all" or (type(value) is int and 0 <= value <= 1024):
            return value
        raise ValueError(f'{value!r}: give a number of GPUs (0 for none) or "all"')

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None and _MEMORY.match(value.strip()) is None:
            raise ValueError(f"{value!r} is not a size: use bytes or a unit, e.g. 512m or 2g")
        return value

    @field_validator("ulimits")
    @classmethod
    def _ulimits(cls, value: dict[str, str]) -> dict[str, str]:
        for name, limit in value.items():
            if name not in ULIMIT_NAMES:
                known = ", ".join(sorted(ULIMIT_NAMES))
                raise ValueError(f"unknown ulimit {name!r} (known: {known})")
            if _ULIMIT.match(str(limit).strip()) is None:
                raise ValueError(f"ulimit {name} = {limit!r}: use SOFT:HARD or one number")
        return value

    def memory_bytes(self) -> int | None:
        """`memory` in bytes (units are powers of 1024), or None for no limit."""
        if self.memory is None:
            return None
        match = _MEMORY.match(self.memory.strip())
        assert match is not None  # checked by the validator
        return int(match.group(1)) << (10 * "bkmgt".index(match.group(2).lower() or "b"))

    def ulimit_pairs(self) -> dict[str, tuple[int, int]]:
        """Each ulimit as (soft, hard); one number sets both, and -1 means unlimited."""
        pairs = {}
        for name, limit in self.ulimits.items():
            soft, _, hard = str(limit).strip().partition(":")
            number = [-1 if v == "unlimited" else int(v) for v in (soft, hard or soft)]
            pairs[name] = (number[0], number[1])
        return pairs


_MODEL_KEY = re.compile(r"^[^:\s]+(:[^:\s]*)?$")


class ShepherdConfig(_Strict):
    """`[shepherd]`: settings of the shepherd-compatible routes (`shepard serve --shepherd`).

    `models` gives a model its own payload: `[shepherd.models."NAME:VERSION"]` (or `"NAME"`
    for every version of NAME) holds the keys of a `[payload]` table (`command`, `image`,
    `kind`, `timeout`, `env`). A model without a table runs the flock's own payload; either
    way MODEL_NAME and MODEL_VERSION are set from the request (docs/shepherd.md).
    """

    models: dict[str, PayloadConfig] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _model_keys(cls, value: dict[str, PayloadConfig]) -> dict[str, PayloadConfig]:
        for key in value:
            if not _MODEL_KEY.match(key):
                raise ValueError(f'{key!r} is not a model: write "NAME:VERSION" or "NAME"')
        return value

    def payload_for(self, name: str, version: str) -> PayloadConfig | None:
        """The payload table of model `name:version` (else of `name`), None if neither."""
        return self.models.get(f"{name}:{version}") or self.models.get(name)


class AwsConfig(_Strict):
    """`[aws]`: set on a serverless flock (`shepard aws deploy`, `configure --aws-stack`):
    the stack that holds it. Its functions are then the flock's head (docs/aws.md)."""

    stack: str | None = None  # the flock's stack (and name) on AWS
    region: str | None = None  # the stack's region


class FlockConfig(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    storage: StorageConfig = StorageConfig()
    catalog: CatalogConfig = CatalogConfig()
    backend: BackendConfig = Field(default_factory=BackendConfig)
    payload: PayloadConfig = PayloadConfig()
    retry: RetryConfig = RetryConfig()
    submit: SubmitConfig = SubmitConfig()
    limits: LimitsConfig = LimitsConfig()
    filesystems: FilesystemsConfig = FilesystemsConfig()
    container: ContainerConfig = ContainerConfig()
    shepherd: ShepherdConfig = ShepherdConfig()
    aws: AwsConfig = AwsConfig()


def check_job_limits(max_attempts: int | None, timeout: float | None) -> None:
    """Refuse per-submission attempts and timeout outside what `[retry]` and `[payload]`
    accept (None leaves the flock's own value), with the accepted range in the message."""
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS:
        raise ConfigError(f"attempts {max_attempts}: give a number from 1 to {MAX_ATTEMPTS}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"timeout {timeout:g}: give a finite number of seconds > 0")


class Flockdir:
    """A loaded flock: its folder, its validated config and the paths derived from them."""

    def __init__(self, folder: Path, config: FlockConfig) -> None:
        self.folder = folder.resolve()
        self.config = config

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.folder / path).resolve()

    @property
    def storage_url(self) -> str:
        """`[storage] root` as an absolute folder path or an `s3://` URL."""
        return self._absolute(self.config.storage.root)

    @property
    def storage_root(self) -> Path:
        """The folder under which the stores live; ConfigError when `root` is not a folder."""
        root = self.config.storage.root
        if not storage_urls.is_folder_url(root):
            raise ConfigError(f"[storage] root is {root}, not a folder: this needs a folder")
        return self.resolve(storage_urls.folder_of(root))

    def store_url(self, name: str) -> str:
        """URL of the store `name` (one of STORE_NAMES): its `[storage.stores]` entry, else
        `<root>/<name>`. Folders come as absolute paths, S3 stores as `s3://bucket/prefix`."""
        if name not in STORE_NAMES:
            raise ConfigError(f"unknown store {name!r} (stores: {', '.join(STORE_NAMES)})")
        url = self.config.storage.stores.get(name)
        if url is not None:
            return self._absolute(url)
        return storage_urls.child_url(self.storage_url, name)

    def store_options(self) -> StoreOptions:
        """What every store of the flock is opened with (`[storage] endpoint_url`, `region`)."""
        storage = self.config.storage
        return StoreOptions(endpoint_url=storage.endpoint_url, region=storage.region)

    def store_path(self, name: str) -> Path:
        """Folder of `work` (always local) or of a store kept in a folder; ConfigError for a
        store elsewhere (open it with `Flock.store(name)`, which works for every kind)."""
        if name == "work":
            if self.config.storage.workspace:
                return self.resolve(self.config.storage.workspace)
            if not storage_urls.is_folder_url(self.config.storage.root):
                return self.folder / "work"
            return self.storage_root / "work"
        url = self.store_url(name)
        if not storage_urls.is_folder_url(url):
            raise ConfigError(f"the {name} store is {url}, not a folder: this needs a folder")
        return Path(storage_urls.folder_of(url))

    def _absolute(self, url: str) -> str:
        if storage_urls.is_folder_url(url):
            return str(self.resolve(storage_urls.folder_of(url)))
        return url.rstrip("/")

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
    sections = data.get("backend", {})
    for key in [k for k, v in sections.items() if v == {}]:  # a section left at its defaults
        del sections[key]
    if "backend" not in data or "workers" not in data["backend"]:
        data.setdefault("backend", {})["workers"] = config.backend.workers
    data["payload"] = {"kind": config.payload.kind, **data.get("payload", {})}
    path.write_text(tomli_w.dumps(data))
    return path
