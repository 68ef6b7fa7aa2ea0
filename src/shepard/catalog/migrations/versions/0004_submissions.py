"""Streamed submissions (whose STAGED rows are not visible yet); finding a bundle's job.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("batch", sa.String(), primary_key=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("committed", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.create_index(
        "ix_jobs_bundle_key",
        "jobs",
        ["bundle_key"],
        sqlite_where=sa.text("bundle_key IS NOT NULL"),
        postgresql_where=sa.text("bundle_key IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_bundle_key", table_name="jobs")
    op.drop_table("submissions")
