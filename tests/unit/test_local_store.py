"""LocalStore behaviour the shared store suite cannot provoke (tests/integration/test_stores.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from shepard.storage import LocalStore


def test_put_if_absent_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    store = LocalStore(tmp_path)
    monkeypatch.setattr(os, "link", refuse)  # as on a filesystem without hard links
    assert store.put_if_absent("claims/a", b"one")
    assert not store.put_if_absent("claims/a", b"two")
    assert store.get_bytes("claims/a") == b"one"
    assert list(store.list()) == ["claims/a"]
