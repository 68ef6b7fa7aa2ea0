"""The key that encrypts a flock's secrets at rest. It never lives in the flock folder.

Where it comes from, first match wins:
1. the environment variable SHEPARD_SECRET_KEY: one Fernet key, or several separated by commas
   (the first encrypts, every one decrypts: that is how keys are rotated);
2. a serverless flock's Secrets Manager secret (`shepard aws deploy` makes it and its key):
   the one named by SHEPARD_SECRET_NAME (set in its functions and Batch tasks), or the one
   the CLI passes for a flock with `[aws]` (`<stack>/secrets`); its SecretString is the JSON
   object {"shepard_secret_key": "KEY[,OLDER...]"};
3. the file `secret.key` in the user's config folder (`platformdirs.user_config_dir("shepard")`,
   e.g. `~/.config/shepard/secret.key`), one key a line, same rules. `shepard secretify`
   creates it (mode 0600) the first time it needs a key and finds none.

Workers on other machines get the key through SHEPARD_SECRET_KEY. Nothing here ever puts a key
into a message; a fingerprint (a short hash) identifies it instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs

from shepard.errors import ShepardError

if TYPE_CHECKING:  # cryptography is imported where a key is loaded: most commands need none
    from cryptography.fernet import MultiFernet

ENV_VAR = "SHEPARD_SECRET_KEY"
SECRET_NAME_VAR = "SHEPARD_SECRET_NAME"
SECRET_FIELD = "shepard_secret_key"
KEY_FILE_NAME = "secret.key"
HINT = f"set {ENV_VAR} to the key the flock's secrets were stored with"

log = logging.getLogger(__name__)

_SEPARATORS = re.compile(r"[\s,]+")


class SecretKeyError(ShepardError):
    """No usable key: missing, unreadable or malformed. The message never holds key material."""


@dataclass(frozen=True)
class SecretKey:
    """A loaded key (or key ring): `fernet` encrypts with the first key and decrypts with any.

    `source` says where it came from (ENV_VAR or the key file's path), `fingerprint` is a short
    hash of the first key, safe to show; `created` is True when this call wrote the key file.
    """

    fernet: MultiFernet
    source: str
    fingerprint: str
    created: bool = False


def key_file_path() -> Path:
    """The per-user key file (which need not exist)."""
    return Path(platformdirs.user_config_dir("shepard")) / KEY_FILE_NAME


@dataclass(frozen=True)
class AwsSecret:
    """A Secrets Manager secret holding a flock's key (a serverless flock's)."""

    name: str
    region: str | None = None


def load_key(*, create: bool = False, secret: AwsSecret | None = None) -> SecretKey:
    """The key from SHEPARD_SECRET_KEY, else from `secret` (or the secret SHEPARD_SECRET_NAME
    names), else from the key file.

    With `create`, a missing key file (or a secret without a key) gets a new key (a key
    file: mode 0600, its folder 0700). Raises SecretKeyError when no key is usable.
    """
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return _parse(env, ENV_VAR, f"{ENV_VAR} does not hold a valid Fernet key")
    named = os.environ.get(SECRET_NAME_VAR, "").strip()
    if secret is None and named:
        secret = AwsSecret(named)
    if secret is not None:
        return aws_key(secret, create=create)
    path = key_file_path()
    try:
        text = _read_key_file(path)
    except FileNotFoundError:
        if not create:
            raise SecretKeyError(
                f"no secret key: {ENV_VAR} is not set and {path} does not exist; {HINT}"
            ) from None
        return _create_key_file(path)
    return _parse(text, str(path), f"{path} does not hold a valid Fernet key")


def fingerprint(key: bytes | str) -> str:
    """8 hex digits identifying `key` without revealing it."""
    raw = key.encode() if isinstance(key, str) else key
    return hashlib.sha256(raw.strip()).hexdigest()[:8]


def _parse(text: str, source: str, invalid: str) -> SecretKey:
    from cryptography.fernet import Fernet, MultiFernet

    tokens = [t for t in _SEPARATORS.split(text) if t]
    try:
        fernets = [Fernet(t) for t in tokens]
    except (ValueError, TypeError):
        fernets = []
    if not fernets:
        raise SecretKeyError(
            f"{invalid} (a key is 44 characters of URL-safe base64, as made by "
            f"Fernet.generate_key(); several keys are separated by commas); {HINT}"
        )
    return SecretKey(MultiFernet(fernets), source, fingerprint(tokens[0]))


def _read_key_file(path: Path) -> str:
    """The key file's text; FileNotFoundError when there is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise SecretKeyError(f"cannot read {path}: {exc.strerror or exc}; {HINT}") from exc
    with os.fdopen(fd, "rb") as fh:
        if os.fstat(fd).st_mode & 0o077:
            log.warning("%s can be read by other users: run `chmod 600 %s`", path, path)
        data = fh.read(1 << 16)
    return data.decode("ascii", errors="replace")


def _create_key_file(path: Path) -> SecretKey:
    """Write a new key to `path` without ever replacing an existing file (if another process
    created it meanwhile, that key is used)."""
    from cryptography.fernet import Fernet, MultiFernet

    key = Fernet.generate_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(key + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # atomic, and fails rather than replace
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    except FileExistsError:
        return load_key()
    except OSError as exc:
        raise SecretKeyError(
            f"cannot create the key file {path}: {exc.strerror or exc}; "
            f"set {ENV_VAR} to a key made by Fernet.generate_key() instead"
        ) from exc
    return SecretKey(MultiFernet([Fernet(key)]), str(path), fingerprint(key), created=True)


def aws_key(
    secret: AwsSecret, *, create: bool = False, tags: dict[str, str] | None = None
) -> SecretKey:
    """The key held by a Secrets Manager secret. With `create`, a missing secret is created
    (with `tags`) and a secret without a key gets one; `created` then says so."""
    import json

    from botocore.exceptions import BotoCoreError, ClientError

    where = f"the Secrets Manager secret {secret.name!r}"
    try:
        client = _secrets_client(secret.region)
        try:
            text = client.get_secret_value(SecretId=secret.name).get("SecretString") or "{}"
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            text = None
        value = json.loads(text).get(SECRET_FIELD) if text else None
        if isinstance(value, str) and value.strip():
            return _parse(value, where, f"{where} does not hold a valid Fernet key")
        if not create:
            raise SecretKeyError(f"{where} holds no key yet: run `shepard aws deploy` again")
        from cryptography.fernet import Fernet, MultiFernet

        key = Fernet.generate_key()
        body = json.dumps({SECRET_FIELD: key.decode()})
        if text is None:
            tagged = [{"Key": k, "Value": v} for k, v in (tags or {}).items()]
            client.create_secret(Name=secret.name, SecretString=body, Tags=tagged)
        else:
            client.put_secret_value(SecretId=secret.name, SecretString=body)
    except (ClientError, BotoCoreError, ValueError) as exc:
        raise SecretKeyError(f"cannot read {where}: {exc}") from None
    return SecretKey(MultiFernet([Fernet(key)]), where, fingerprint(key), created=True)


def _secrets_client(region: str | None) -> Any:
    import boto3

    return boto3.session.Session().client("secretsmanager", region_name=region)
