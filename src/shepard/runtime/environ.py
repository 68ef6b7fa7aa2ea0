"""The environment a payload inherits, read from os.environ once while it is unchanged.

Reading os.environ item by item decodes every name and value on each access: some 55 us for
the 44 variables of a test machine, once per job. `inherited_env` compares the raw dict
behind os.environ (`os.environ._data`, which CPython does not document) with a saved copy
instead, about 1 us, and hands out the same read-only mapping while nothing changed, so that
the runtime contract can cache what it derives from it by identity (runtime/contract.py).
Measured here with timeit (20,000 calls, best of 5): 1.2 us against 55 us per job, about a
tenth of a local runner's CPU per trivial job (bench/runner_phases.py). Where os.environ has
no such dict (another Python), it falls back to copying; the test that a second call returns
the very same mapping (tests/unit/test_runtime_fast_paths.py) then fails, which is the sign
to look again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar


class _EnvSnapshot:
    """(copy of os.environ's raw dict, os.environ decoded) as last read."""

    current: ClassVar[tuple[dict[Any, Any], Mapping[str, str]] | None] = None


def inherited_env() -> Mapping[str, str]:
    """The current os.environ as a read-only mapping, the same object for as long as
    os.environ does not change (so what is derived from it can be cached by identity)."""
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):  # not CPython's os.environ: no shortcut
        return MappingProxyType(dict(os.environ))
    snapshot = _EnvSnapshot.current
    if snapshot is None or snapshot[0] != raw:
        # raw first: a change in between shows next time
        snapshot = (dict(raw), MappingProxyType(dict(os.environ)))
        _EnvSnapshot.current = snapshot
    return snapshot[1]
