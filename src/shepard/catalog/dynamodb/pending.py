"""What the DynamoDB catalog does not keep yet: API tokens and the dashboard's statistics.

`shepard serve` (its tokens) and the dashboard (throughput, live counts, recent batches,
filters by parameter or text) need them; on a DynamoDB catalog they are refused with one
message saying so (docs/dynamodb.md), rather than failing later in a less clear way.
"""

from __future__ import annotations

from shepard.catalog.base import StoredToken
from shepard.errors import CatalogError
from shepard.model import JobStatus

NOT_YET = (
    "the DynamoDB catalog does not keep {what} yet: `shepard serve` and the dashboard need a "
    "SQLite or PostgreSQL catalog for now (docs/dynamodb.md)"
)


def refuse(what: str) -> CatalogError:
    return CatalogError(NOT_YET.format(what=what))


class Pending:
    """The TokenStore and dashboard methods of the Catalog contract, refused."""

    def add_token(self, token: StoredToken) -> None:
        raise refuse("API tokens")

    def tokens(self) -> list[StoredToken]:
        raise refuse("API tokens")

    def find_token(self, digest: str, *, now: float) -> StoredToken | None:
        raise refuse("API tokens")

    def revoke_token(self, name: str) -> bool:
        raise refuse("API tokens")

    def ended_per_minute(self, *, since: float) -> dict[int, dict[JobStatus, int]]:
        raise refuse("a throughput history")

    def count_marks(self) -> tuple[int, int]:
        raise refuse("live count marks")

    def count_changes(self, *, after_event: int, after_seq: int) -> dict[JobStatus, int]:
        raise refuse("live count marks")

    def recent_batches(self, *, limit: int = 8) -> list[str]:
        raise refuse("a list of recent batches")
