"""Fixtures of the conformance suite: a `target` flock per execution flavour."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli
from tests.conformance.flavours import FLAVOURS, Flavour
from tests.services import require_service


class Target(Cli):
    """A Cli whose `init` makes a flock of one flavour."""

    def __init__(self, flock: Path, cwd: Path, flavour: Flavour) -> None:
        super().__init__(flock, cwd)
        self.flavour = flavour

    def init(self, command: str, *extra: str) -> None:
        super().init(command, *self.flavour.init_args(), *extra)
        if self.flavour.edit is not None:
            self.configure(self.flavour.edit)


@pytest.fixture(params=FLAVOURS, ids=[f.name for f in FLAVOURS])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    flavour: Flavour = request.param
    require_service(f"flavour {flavour.name}", flavour.problem())
    runner = Target(tmp_path / "flock", tmp_path, flavour)
    yield runner
    runner.kill_leftovers()
    if flavour.name.startswith("slurm"):
        from tests.slurm import cancel_tasks

        cancel_tasks(runner.flock)
