"""Placements: the engine queue entry (e.g. a Slurm array task) a queued job was handed to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a plain ADD COLUMN (no table rebuild on SQLite), so upgrading a big catalog is quick
    op.add_column("jobs", sa.Column("placement", sa.String(), nullable=True))
    op.create_index(
        "ix_jobs_placement",
        "jobs",
        ["placement"],
        sqlite_where=sa.text("placement IS NOT NULL"),
        postgresql_where=sa.text("placement IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_placement", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("placement")
