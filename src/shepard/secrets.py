"""A flock's secrets: files every job finds in `$ROOT_INPUT_NAME/secrets/`, encrypted at rest.

The store is the flock's `secrets` store (a folder or S3, through the ObjectStore API): one
object `<name>.fernet` per secret, holding a Fernet token (AES-128-CBC with HMAC-SHA256, from
the `cryptography` package) of the secret's bytes, encrypted with the key from `shepard.keys`
(which never lives with the flock). Store writes are atomic, so a reader sees a whole token
or none. Nothing is ever stored in plain text; other objects in the store are ignored (with
a warning, once per process).

Names are plain file names: no `/`, no leading dot (so no `.` or `..`), no control characters.
"""

from __future__ import annotations

import builtins
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from shepard.errors import ShepardError
from shepard.keys import HINT, SecretKey, load_key
from shepard.storage import NoSuchObject, ObjectStore, open_store

SUFFIX = ".fernet"
MAX_SECRET_BYTES = 64 << 20  # every worker keeps the plaintext in memory
MAX_NAME_CHARS = 255 - len(SUFFIX)
_TMP_PREFIX = ".tmp-"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

log = logging.getLogger(__name__)

Stamp = tuple[float, int]
"""(last-write time, size) of a stored secret's object: a new token means a new stamp (S3
keeps whole seconds: a token replaced by one of the same size within the same second is seen
only at the next change)."""


class SecretError(ShepardError):
    """A secrets operation was refused (bad name, unknown secret, nothing to store, ...)."""


class SecretDecryptError(SecretError):
    """A stored secret does not decrypt with the key at hand. Never holds secret content."""


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    size: int  # bytes of the secret itself (not of its encrypted file)


@dataclass(frozen=True)
class FolderScan:
    """What `read_folder` found: the secrets to store and the entries it left out, with why."""

    secrets: dict[str, bytes]
    skipped: list[tuple[str, str]]


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a secret's name, or None when it can."""
    if not name:
        return "an empty name"
    if "/" in name or "\\" in name:
        return "a name holding a path separator"
    if name.startswith("."):
        return "a hidden name (names cannot start with '.')"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a name holding control characters"
    if len(name) > MAX_NAME_CHARS:
        return f"a name longer than {MAX_NAME_CHARS} characters"
    return None


def check_name(name: str) -> str:
    """`name` if it is a valid secret name; SecretError otherwise."""
    problem = name_problem(name)
    if problem:
        raise SecretError(f"invalid secret name {name!r}: {problem}; use a plain file name")
    return name


def read_folder(folder: Path, *, max_bytes: int = MAX_SECRET_BYTES) -> FolderScan:
    """Read every regular file directly in `folder` (symlinks to files are followed; nothing
    is recursed into). Entries that cannot be secrets are listed in `skipped` with the reason.

    Raises SecretError when `folder` is not a folder, holds no file to store, or a file is too
    large; OSError when a file cannot be read.
    """
    if not folder.is_dir():
        raise SecretError(f"{folder} is not a folder; nothing changed")
    secrets: dict[str, bytes] = {}
    skipped: list[tuple[str, str]] = []
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if entry.is_dir():
            skipped.append((entry.name + "/", "a folder (secretify does not recurse)"))
        elif not entry.is_file():
            why = "a broken symlink" if entry.is_symlink() else "not a regular file"
            skipped.append((entry.name, why))
        elif problem := name_problem(entry.name):
            skipped.append((entry.name, problem))
        else:
            size = entry.stat().st_size
            if size > max_bytes:
                raise SecretError(
                    f"{entry.path} is {size} bytes; a secret may hold at most {max_bytes} "
                    "bytes (every worker keeps its secrets in memory); nothing changed"
                )
            with open(entry.path, "rb") as fh:
                secrets[entry.name] = fh.read()
    if not secrets:
        found = "; ".join(f"{name}: {why}" for name, why in skipped) or "it is empty"
        raise SecretError(f"no file to store in {folder} ({found}); nothing changed")
    return FolderScan(secrets, skipped)


def private_folder(path: Path) -> None:
    """Create the folder `path` with mode 0700, or set an existing one back to 0700."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        os.chmod(path, 0o700)


class SecretCache:
    """Decrypted secrets kept in memory, per store (its location) and per object stamp, so a worker
    decrypts each secret once rather than once per job. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._folders: dict[str, dict[str, tuple[Stamp, bytes]]] = {}

    def get(self, folder: str) -> Mapping[str, tuple[Stamp, bytes]]:
        with self._lock:
            return self._folders.get(folder, {})

    def put(self, folder: str, current: dict[str, tuple[Stamp, bytes]]) -> None:
        """Remember exactly `current` for `folder` (so removed secrets are forgotten)."""
        with self._lock:
            self._folders[folder] = current

    def clear(self) -> None:
        with self._lock:
            self._folders.clear()


_warned: set[str] = set()


class SecretStore:
    """The encrypted secrets in an object store (a flock's `flock.store("secrets")`): one
    object `<name>.fernet` per secret, at the top of the store.

    `store` is an ObjectStore, or a folder path / store URL opened with `open_store`. `key`
    defaults to `shepard.keys.load_key()`, loaded the first time a secret is encrypted or
    decrypted (so a flock without secrets never needs a key).
    """

    def __init__(self, store: ObjectStore | Path | str, key: SecretKey | None = None) -> None:
        self.store = open_store(str(store)) if isinstance(store, (Path, str)) else store
        self._key = key

    @property
    def key(self) -> SecretKey:
        if self._key is None:
            self._key = load_key()
        return self._key

    @property
    def local_folder(self) -> Path | None:
        """The folder holding the secrets when the store is one (a fast path: its mtime says
        whether anything changed), else None."""
        path = self.store.local_path("x" + SUFFIX)
        return None if path is None else path.parent

    # -- reading ----------------------------------------------------------------------------

    def names(self) -> builtins.list[str]:
        """The stored secrets' names, sorted (no key needed)."""
        return [name for name, _ in self._scan()]

    def read(self, name: str) -> bytes:
        """The decrypted content of secret `name`."""
        try:
            token = self.store.get_bytes(check_name(name) + SUFFIX)
        except NoSuchObject:
            raise self._unknown(name) from None
        return self._decrypt(name, token)

    def list(self) -> builtins.list[SecretInfo]:
        """Every secret's name and size (decrypting them: this also proves the key works)."""
        return [SecretInfo(name, len(self.read(name))) for name in self.names()]

    # -- writing ----------------------------------------------------------------------------

    def put_all(self, secrets: Mapping[str, bytes]) -> builtins.list[str]:
        """Make `secrets` the whole set: store them, then delete every other stored secret.
        Returns the names deleted."""
        if not secrets:
            raise SecretError("no secrets given; nothing changed (remove secrets by name)")
        before = self.names()
        self._write(secrets)
        gone = [name for name in before if name not in secrets]
        self.store.delete_many(name + SUFFIX for name in gone)
        return gone

    def add(self, secrets: Mapping[str, bytes]) -> None:
        """Store `secrets` next to the stored ones (same names are replaced).

        The stored secrets must decrypt with the current key first, so one store never mixes
        keys."""
        if not secrets:
            raise SecretError("no secrets given; nothing changed")
        for name in self.names():
            self.read(name)
        self._write(secrets)

    def remove(self, names: Iterable[str]) -> None:
        """Delete the named secrets; all must exist (else nothing is deleted)."""
        wanted = [check_name(n) for n in names]
        stored = set(self.names())
        for name in wanted:
            if name not in stored:
                raise self._unknown(name)
        self.store.delete_many(name + SUFFIX for name in wanted)

    def rotate(self) -> int:
        """Re-encrypt every secret with the key ring's first key (MultiFernet.rotate): after
        this, older keys can be dropped. Returns how many secrets were rewritten."""
        from cryptography.fernet import InvalidToken

        tokens = {}
        for name in self.names():
            token = self.store.get_bytes(name + SUFFIX)
            try:
                tokens[name] = self.key.fernet.rotate(token)
            except InvalidToken:
                raise self._undecryptable(name) from None
        self._store_tokens(tokens)
        return len(tokens)

    # -- jobs -------------------------------------------------------------------------------

    def materialise(self, dest: Path, cache: SecretCache | None = None) -> builtins.list[str]:
        """Decrypt every secret into `dest` (created mode 0700, or an existing empty folder
        set back to 0700); each file is created with O_EXCL and mode 0600, so it is never
        readable by others, not even for a moment. Returns the names written.

        With `cache`, secrets whose object has not changed (same size and last-write time)
        since an earlier call are taken from it instead of being read and decrypted again.
        Raises SecretKeyError / SecretDecryptError when a secret cannot be decrypted (the
        messages never include secret content), StorageError / OSError otherwise.
        """
        private_folder(dest)
        stored = self._scan()
        if not stored:
            return []
        where = self.store.location
        known = cache.get(where) if cache is not None else {}
        current: dict[str, tuple[Stamp, bytes]] = {}
        for name, stamp in stored:
            hit = known.get(name)
            if hit is not None and hit[0] == stamp:
                current[name] = hit
                continue
            try:
                token = self.store.get_bytes(name + SUFFIX)
            except NoSuchObject:  # removed since the store was listed
                continue
            # the stamp listed before the read: a change in between is seen next time
            current[name] = (stamp, self._decrypt(name, token))
        if cache is not None:
            cache.put(where, current)
        for name, (_, data) in current.items():
            _write_private(os.path.join(dest, name), data)
        return list(current)

    # -- internals --------------------------------------------------------------------------

    def _scan(self) -> builtins.list[tuple[str, Stamp]]:
        """(name, stamp) of every stored secret, sorted by name; other objects are ignored,
        with a warning the first time each is seen."""
        found = []
        for info in self.store.scan(recursive=False):
            key = info.key
            if key.startswith(_TMP_PREFIX):
                continue  # a write in progress
            stem = key[: -len(SUFFIX)] if key.endswith(SUFFIX) else None
            if stem and name_problem(stem) is None:
                found.append((stem, (info.modified, info.size)))
            elif (where := self.store.url(key)) not in _warned:
                _warned.add(where)
                log.warning(
                    "ignoring %s: the secrets store holds only <name>%s objects written by "
                    "`shepard secretify`",
                    where,
                    SUFFIX,
                )
        found.sort()
        return found

    def _decrypt(self, name: str, token: bytes) -> bytes:
        from cryptography.fernet import InvalidToken  # loaded with the key, so cheap here

        key = self.key
        try:
            return key.fernet.decrypt(token)
        except InvalidToken:
            raise self._undecryptable(name) from None

    def _undecryptable(self, name: str) -> SecretDecryptError:
        key = self.key
        return SecretDecryptError(
            f"secret {name!r} does not decrypt with the key from {key.source} "
            f"(fingerprint {key.fingerprint}): it was stored with another key, or its file "
            f"is damaged; {HINT}"
        )

    def _unknown(self, name: str) -> SecretError:
        stored = ", ".join(self.names()) or "none"
        return SecretError(f"no secret named {name!r} (stored: {stored}); nothing changed")

    def _write(self, secrets: Mapping[str, bytes]) -> None:
        for name, data in secrets.items():
            check_name(name)
            if len(data) > MAX_SECRET_BYTES:
                raise SecretError(
                    f"secret {name!r} is {len(data)} bytes; at most {MAX_SECRET_BYTES} allowed"
                )
        fernet = self.key.fernet
        self._store_tokens({name: fernet.encrypt(data) for name, data in secrets.items()})

    def _store_tokens(self, tokens: Mapping[str, bytes]) -> None:
        """Store every token (each write atomic: a reader sees a whole token or none; a
        folder store writes mode 0600 files)."""
        self.store.ensure()
        for name, token in tokens.items():
            self.store.put_bytes(name + SUFFIX, token)


def _write_private(path: str, data: bytes) -> None:
    """Create the new file `path` with mode 0600 (never widened) holding `data`."""
    fd = os.open(path, _CREATE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
