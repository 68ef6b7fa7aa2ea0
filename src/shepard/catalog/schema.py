"""The catalog's tables (SQLAlchemy Core). Migrations in `migrations/versions` build exactly this.

Indexes are kept to the minimum the queries need, because every index slows the bulk insert
of a million-job submission: `id` is unique (lookups by id), `(status, seq)` serves claiming
(oldest queued first) and status-filtered paging, `(batch, status)` serves the progress of one
submission, `job_events.job_id` serves `events()`, and a partial index on `placement` serves
the engine backends' bookkeeping.

A large submission is streamed (see staging.py): its rows are written with status STAGED, in
many short transactions, under a `submissions` row; the jobs become visible (QUEUED) only once
the submission is marked committed. STAGED rows are never claimed, counted or listed.
"""

from __future__ import annotations

import sqlalchemy as sa

HEAD_REVISION = "0005"
"""The newest migration; opening a catalog whose version table holds it skips Alembic."""

VERSION_TABLE = "shepard_alembic_version"

# seq must be SQLite's rowid alias (INTEGER PRIMARY KEY): a BIGINT key would be a second index.
_SEQ_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", _SEQ_TYPE, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(36), nullable=False, unique=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.Text(), nullable=False),  # JSON object
    sa.Column("bundle_key", sa.Text(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("timeout", sa.Float(), nullable=True),
    sa.Column("batch", sa.String(), nullable=True),
    sa.Column("submitted_at", sa.Float(), nullable=False),
    sa.Column("not_before", sa.Float(), nullable=True),
    sa.Column("started_at", sa.BigInteger(), nullable=True),
    sa.Column("finished_at", sa.Float(), nullable=True),
    sa.Column("lease_until", sa.Float(), nullable=True),
    sa.Column("worker", sa.String(), nullable=True),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("outputs", sa.Text(), nullable=True),  # JSON list of output keys
    sa.Column("error_bundle", sa.Text(), nullable=True),
    # attempts that ended because their worker vanished (they do not count as attempts)
    sa.Column("lost", sa.Integer(), nullable=False, server_default=sa.text("0")),
    # the engine queue entry (e.g. Slurm array) a queued job was handed to; see placing.py
    sa.Column("placement", sa.String(), nullable=True),
    sa.Index("ix_jobs_status_seq", "status", "seq"),
    # progress of one submission (`counts(batch=...)`) without scanning the table; batch
    # labels grow with time, so bulk inserts append at the index's right edge
    sa.Index("ix_jobs_batch_status", "batch", "status"),
    # partial: jobs of in-process backends never carry a placement, so it costs their
    # bulk inserts nothing
    sa.Index("ix_jobs_placement", "placement", sqlite_where=sa.text("placement IS NOT NULL")),
    # partial, like ix_jobs_placement: finds the job of a stored bundle (leftovers.py), free
    # for parameter-only jobs
    sa.Index("ix_jobs_bundle_key", "bundle_key", sqlite_where=sa.text("bundle_key IS NOT NULL")),
)


def complete_metadata() -> sa.MetaData:
    """`metadata` with its PostgreSQL-only options too, for the migrations and the tests that
    compare them with this module. The catalog itself never needs them (the migrations create
    the tables), and naming them at import would load SQLAlchemy's PostgreSQL dialect in every
    process, some 25 ms of each CLI start on a slow machine."""
    for name, column in (("ix_jobs_placement", "placement"), ("ix_jobs_bundle_key", "bundle_key")):
        index = next(i for i in jobs.indexes if i.name == name)
        if "postgresql_where" not in index.dialect_kwargs:
            index.dialect_kwargs["postgresql_where"] = sa.text(f"{column} IS NOT NULL")
    return metadata


job_events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", _SEQ_TYPE, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(36), nullable=False, index=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=True),
)


STAGED = "staged"
"""Status of the rows of a submission still being written: invisible to every query."""

submissions = sa.Table(
    "submissions",
    metadata,
    sa.Column("batch", sa.String(), primary_key=True),  # one submission in flight per label
    sa.Column("started_at", sa.Float(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),  # each transaction of it moves it on
    sa.Column("host", sa.String(), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    # 1 once every row is written: the rows are then made visible (rolled forward), never removed
    sa.Column("committed", sa.Integer(), nullable=False, server_default=sa.text("0")),
)


# Client-supplied idempotency keys of submissions (`Flock.submit_request`): a retried request
# finds its key here and gets the first answer back instead of registering its jobs again.
idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),  # sha256 of the request
    sa.Column("batch", sa.String(), nullable=False),
    sa.Column("ids", sa.Text(), nullable=False),  # JSON list of the job ids registered
    sa.Column("created_at", sa.Float(), nullable=False),
)


# API tokens (`shepard token`, `shepard serve`): only a hash of each secret is kept; the secret
# itself is shown once, when it is made.
api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),  # sha256 hex of the secret
    sa.Column("read_only", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("last_used_at", sa.Float(), nullable=True),
)
