"""The secrets store (encrypted at rest), its key, and how the runtime places secrets."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet, MultiFernet

from shepard import keys
from shepard.keys import ENV_VAR, SecretKeyError, key_file_path, load_key
from shepard.runtime.secrets import forget_secrets, place_secrets
from shepard.runtime.workspace import SetupError
from shepard.secrets import (
    SecretCache,
    SecretDecryptError,
    SecretError,
    SecretInfo,
    SecretStore,
    check_name,
    read_folder,
)
from shepard.storage import LocalStore

SECRET = b"hunter2-5d0a9c1e-TOPSECRET"
OTHER = b"pa55word-8b7e36f2-TOPSECRET"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No key from the real environment or user config; a fresh runtime cache."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_VAR, value)
    return value


@pytest.fixture
def store(tmp_path: Path, key: str) -> SecretStore:
    return SecretStore(tmp_path / "flock" / "secrets")


def folder(store: SecretStore) -> Path:
    """The folder of a store kept in one (these tests look at its files)."""
    found = store.local_folder
    assert found is not None
    return found


def all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the store ------------------------------------------------------------------------------


def test_round_trip(store: SecretStore, tmp_path: Path) -> None:
    assert store.put_all({"a.txt": SECRET, "b.bin": b"\0\xff" * 10}) == []
    assert store.names() == ["a.txt", "b.bin"]
    assert store.read("a.txt") == SECRET
    assert store.list() == [SecretInfo("a.txt", len(SECRET)), SecretInfo("b.bin", 20)]
    dest = tmp_path / "job" / "secrets"
    dest.parent.mkdir()
    assert sorted(store.materialise(dest)) == ["a.txt", "b.bin"]
    assert (dest / "a.txt").read_bytes() == SECRET
    assert (dest / "b.bin").read_bytes() == b"\0\xff" * 10
    assert mode(dest) == 0o700
    assert {mode(p) for p in dest.iterdir()} == {0o600}


def test_nothing_in_plain_text_at_rest(store: SecretStore, tmp_path: Path) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    flock = tmp_path / "flock"
    data = all_bytes(flock)
    assert SECRET not in data and OTHER not in data
    files = sorted(p.name for p in folder(store).iterdir())
    assert files == ["a.txt.fernet", "b.txt.fernet"]  # no temporary file left behind
    assert {mode(p) for p in folder(store).iterdir()} == {0o600}
    assert not (flock / "secret.key").exists()
    assert not any(p.name == keys.KEY_FILE_NAME for p in flock.rglob("*"))


def test_put_all_replaces_the_whole_set(store: SecretStore) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    assert store.put_all({"b.txt": SECRET, "c.txt": OTHER}) == ["a.txt"]
    assert store.names() == ["b.txt", "c.txt"]
    assert store.read("b.txt") == SECRET


def test_add_merges(store: SecretStore) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    store.add({"b.txt": b"new", "c.txt": b"c"})
    assert store.names() == ["a.txt", "b.txt", "c.txt"]
    assert store.read("a.txt") == SECRET and store.read("b.txt") == b"new"


def test_add_refuses_to_mix_keys(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_all({"a.txt": SECRET})
    monkeypatch.setenv(ENV_VAR, Fernet.generate_key().decode())
    with pytest.raises(SecretDecryptError):
        SecretStore(store.store).add({"b.txt": OTHER})
    assert store.names() == ["a.txt"]


def test_empty_set_is_refused(store: SecretStore) -> None:
    store.put_all({"a.txt": SECRET})
    with pytest.raises(SecretError, match="nothing changed"):
        store.put_all({})
    with pytest.raises(SecretError, match="nothing changed"):
        store.add({})
    assert store.names() == ["a.txt"]


def test_remove(store: SecretStore) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER, "c.txt": b"c"})
    with pytest.raises(SecretError, match=r"no secret named 'nope'.*stored: a.txt, b.txt, c.txt"):
        store.remove(["a.txt", "nope"])
    assert store.names() == ["a.txt", "b.txt", "c.txt"]  # all or nothing
    store.remove(["a.txt", "c.txt"])
    assert store.names() == ["b.txt"]


@pytest.mark.parametrize("name", ["", "a/b", "../x", "..", ".", ".env", "a\\b", "x\ny", "n" * 300])
def test_bad_names_are_refused(store: SecretStore, name: str) -> None:
    with pytest.raises(SecretError, match="invalid secret name"):
        check_name(name)
    with pytest.raises(SecretError, match="invalid secret name"):
        store.put_all({"ok.txt": SECRET, name: OTHER})
    with pytest.raises(SecretError, match="invalid secret name"):
        store.remove([name])
    assert store.names() == []
    assert not folder(store).exists() or not any(folder(store).iterdir())


@pytest.mark.parametrize("name", ["a.txt", "id_rsa", "token", "x..y", "café.pem", "a b"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


def test_foreign_files_are_ignored_with_one_warning(
    store: SecretStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.put_all({"a.txt": SECRET})
    (folder(store) / "plain.txt").write_bytes(OTHER)
    (folder(store) / "sub.fernet").mkdir()  # a folder is no object of the store: unseen
    (folder(store) / "sub.fernet" / "x.fernet").write_bytes(OTHER)  # nor what is in it
    caplog.set_level(logging.WARNING, "shepard.secrets")
    for n in range(3):
        dest = tmp_path / f"dest{n}"
        assert store.materialise(dest) == ["a.txt"]
        assert sorted(os.listdir(dest)) == ["a.txt"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "plain.txt" in warnings[0]
    assert not any(OTHER.decode() in w for w in warnings)


def test_rotation(store: SecretStore, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_all({"a.txt": SECRET})
    new = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_VAR, f"{new}, {key}")
    assert SecretStore(store.store).read("a.txt") == SECRET  # either key decrypts
    assert SecretStore(store.store).rotate() == 1
    monkeypatch.setenv(ENV_VAR, new)
    assert SecretStore(store.store).read("a.txt") == SECRET  # the old key is not needed
    monkeypatch.setenv(ENV_VAR, key)
    with pytest.raises(SecretDecryptError):
        SecretStore(store.store).read("a.txt")


# --- the key --------------------------------------------------------------------------------


def test_wrong_key_is_a_clear_error(store: SecretStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_all({"a.txt": SECRET})
    wrong = Fernet.generate_key().decode()
    monkeypatch.setenv(ENV_VAR, wrong)
    with pytest.raises(SecretDecryptError) as info:
        SecretStore(store.store).read("a.txt")
    message = str(info.value)
    assert "'a.txt' does not decrypt with the key from SHEPARD_SECRET_KEY" in message
    assert keys.fingerprint(wrong) in message and wrong not in message
    assert SECRET.decode() not in message


def test_no_key_at_all(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="SHEPARD_SECRET_KEY is not set") as info:
        load_key()
    assert str(key_file_path()) in str(info.value)
    assert key_file_path() == tmp_path / "config" / "shepard" / "secret.key"


def test_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    first = load_key(create=True)
    path = key_file_path()
    assert first.created and first.source == str(path)
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    again = load_key(create=True)
    assert not again.created and again.fingerprint == first.fingerprint
    token = first.fernet.encrypt(SECRET)
    assert load_key().fernet.decrypt(token) == SECRET
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]


def test_environment_wins_over_the_key_file(key: str) -> None:
    assert load_key(create=True).source == ENV_VAR
    assert not key_file_path().exists()


@pytest.mark.parametrize("value", ["not-a-key", "abcdef,ghijkl", " ,, "])
def test_invalid_env_key(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(SecretKeyError, match="SHEPARD_SECRET_KEY does not hold a valid") as info:
        load_key(create=True)
    assert not any(part in str(info.value) for part in value.split(",") if part.strip())


def test_invalid_key_file() -> None:
    path = key_file_path()
    path.parent.mkdir(parents=True)
    path.write_text("garbage\n")
    with pytest.raises(SecretKeyError, match="does not hold a valid Fernet key"):
        load_key(create=True)
    assert path.read_text() == "garbage\n"  # never replaced


# --- the runtime ----------------------------------------------------------------------------


def test_place_secrets(store: SecretStore, tmp_path: Path) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    dest = tmp_path / "secrets-dest"
    place_secrets(store.store, dest)
    assert (dest / "a.txt").read_bytes() == SECRET and (dest / "b.txt").read_bytes() == OTHER
    assert mode(dest) == 0o700 and {mode(p) for p in dest.iterdir()} == {0o600}


def test_reused_empty_dest_is_narrowed(store: SecretStore, tmp_path: Path) -> None:
    store.put_all({"a.txt": SECRET})
    dest = tmp_path / "slot-secrets"
    dest.mkdir(mode=0o755)
    os.chmod(dest, 0o755)
    place_secrets(store.store, dest)
    assert mode(dest) == 0o700 and (dest / "a.txt").read_bytes() == SECRET


def test_no_secrets_needs_no_key(tmp_path: Path) -> None:
    """A flock with an empty (or missing) store: no key, no decryption, an empty folder."""
    for source in (tmp_path / "missing", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        dest = tmp_path / f"dest-{source.name}"
        place_secrets(LocalStore(source), dest)
        assert mode(dest) == 0o700 and not any(dest.iterdir())


def test_an_unchanged_empty_store_is_not_listed_again(
    store: SecretStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a settled store was found empty, jobs skip listing it until it changes; a secret
    added later is placed at once (the folder's mtime moves)."""
    folder(store).mkdir(parents=True, exist_ok=True)
    os.utime(folder(store), (time.time() - 60, time.time() - 60))
    listed = []
    real_scan = SecretStore._scan

    def scan(self: SecretStore) -> list[tuple[str, tuple[float, int]]]:
        listed.append(self.store.location)
        return real_scan(self)

    monkeypatch.setattr(SecretStore, "_scan", scan)
    for n in range(3):
        place_secrets(store.store, tmp_path / f"empty-{n}")
        assert mode(tmp_path / f"empty-{n}") == 0o700
    assert len(listed) == 1
    store.put_all({"a.txt": SECRET})
    place_secrets(store.store, tmp_path / "after")
    assert (tmp_path / "after" / "a.txt").read_bytes() == SECRET


def test_a_store_changed_just_now_is_listed_every_time(store: SecretStore, tmp_path: Path) -> None:
    """Within SETTLED seconds of a change the mtime may not move again: no shortcut then."""
    folder(store).mkdir(parents=True, exist_ok=True)
    before = os.stat(folder(store))
    place_secrets(store.store, tmp_path / "first")
    store.put_all({"a.txt": SECRET})
    # as if the secret had come within the same clock tick: the folder's mtime did not move
    os.utime(folder(store), ns=(before.st_atime_ns, before.st_mtime_ns))
    place_secrets(store.store, tmp_path / "second")
    assert (tmp_path / "second" / "a.txt").read_bytes() == SECRET


def test_wrong_key_fails_the_attempt_for_good(
    store: SecretStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_all({"a.txt": SECRET})
    monkeypatch.setenv(ENV_VAR, Fernet.generate_key().decode())
    with pytest.raises(SetupError) as info:
        place_secrets(store.store, tmp_path / "dest")
    assert not info.value.retryable
    message = str(info.value)
    assert message.startswith("cannot decrypt the flock's secrets: ")
    assert "set SHEPARD_SECRET_KEY" in message and SECRET.decode() not in message
    assert not any((tmp_path / "dest").iterdir())


def test_missing_key_fails_the_attempt_for_good(store: SecretStore, tmp_path: Path) -> None:
    store.put_all({"a.txt": SECRET})
    os.environ.pop(ENV_VAR)
    with pytest.raises(SetupError, match="cannot decrypt the flock's secrets: no secret key"):
        place_secrets(store.store, tmp_path / "dest")


class CountingDecrypt:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = MultiFernet.decrypt

        def decrypt(fernet: MultiFernet, token: bytes, ttl: int | None = None) -> bytes:
            self.calls += 1
            return real(fernet, token, ttl)

        monkeypatch.setattr(MultiFernet, "decrypt", decrypt)


def test_each_secret_is_decrypted_once_per_process(
    store: SecretStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    counter = CountingDecrypt(monkeypatch)
    for n in range(50):
        dest = tmp_path / "jobs" / str(n)
        dest.parent.mkdir(exist_ok=True)
        place_secrets(store.store, dest)
        assert (dest / "a.txt").read_bytes() == SECRET
    assert counter.calls == 2

    # cached plaintext is served without the key; a changed file is decrypted again
    monkeypatch.setenv(ENV_VAR, "not-a-key")
    place_secrets(store.store, tmp_path / "cached")
    assert (tmp_path / "cached" / "b.txt").read_bytes() == OTHER
    assert counter.calls == 2
    os.utime(folder(store) / "a.txt.fernet", ns=(1, 1))
    with pytest.raises(SetupError, match="SHEPARD_SECRET_KEY does not hold a valid"):
        place_secrets(store.store, tmp_path / "changed")


def test_cache_follows_replacements(store: SecretStore, tmp_path: Path) -> None:
    store.put_all({"a.txt": SECRET, "b.txt": OTHER})
    cache = SecretCache()
    store.materialise(tmp_path / "one", cache)
    store.put_all({"a.txt": b"rotated", "c.txt": b"c"})
    store.materialise(tmp_path / "two", cache)
    assert sorted(os.listdir(tmp_path / "two")) == ["a.txt", "c.txt"]
    assert (tmp_path / "two" / "a.txt").read_bytes() == b"rotated"
    assert set(cache.get(store.store.location)) == {"a.txt", "c.txt"}  # b.txt forgotten


# --- reading a folder -----------------------------------------------------------------------


def test_read_folder_skips_what_cannot_be_a_secret(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "deep.txt").write_bytes(OTHER)
    (folder / "a.txt").write_bytes(SECRET)
    (folder / ".hidden").write_bytes(OTHER)
    (folder / "dangling").symlink_to(tmp_path / "nowhere")
    (folder / "link.txt").symlink_to(folder / "a.txt")
    scan = read_folder(folder)
    assert scan.secrets == {"a.txt": SECRET, "link.txt": SECRET}
    skipped = dict(scan.skipped)
    assert set(skipped) == {"sub/", ".hidden", "dangling"}
    assert "does not recurse" in skipped["sub/"]
    assert "hidden" in skipped[".hidden"] and "broken symlink" in skipped["dangling"]


def test_read_folder_refuses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SecretError, match=r"no file to store .*it is empty.*nothing changed"):
        read_folder(tmp_path / "empty")
    (tmp_path / "empty" / "sub").mkdir()
    with pytest.raises(SecretError, match="sub/: a folder"):
        read_folder(tmp_path / "empty")
    with pytest.raises(SecretError, match="is not a folder"):
        read_folder(tmp_path / "missing")


def test_read_folder_refuses_huge_files(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big").write_bytes(b"x" * 101)
    with pytest.raises(SecretError, match="at most 100 bytes"):
        read_folder(tmp_path / "in", max_bytes=100)
