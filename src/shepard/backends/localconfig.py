"""`[backend.local]`: the local backend's own section.

Empty today: the local backend's settings are the common `[backend] workers` and `lease`,
kept there so that flock.toml files stay as they are. New local-only settings go here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class LocalConfig(BaseModel):
    """`[backend.local]` (no keys yet)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
