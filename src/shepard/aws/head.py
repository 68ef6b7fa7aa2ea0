"""The CLI's side of a serverless flock's head (its functions, docs/aws.md).

- `kick`: after `submit` / `batch` registered jobs, a `{"shepard": "dispatch"}` message on the
  events queue makes the scheduler hand them to Batch at once;
- `reconcile_soon`: while `--wait` waits, the reconciler is invoked asynchronously every few
  seconds, so outcomes arrive even where its schedule is slow (or, in an emulator, never fires);
- `dead_letters`: the dead-letter queue's depth, which `query` shows when it is not zero.

The names come from the flock's `[aws]` table: the template names the queues
`<flock>-events` and `<flock>-events-dlq` and the functions `<flock>-<role>`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shepard.aws.clients import Aws, aws_errors
from shepard.config import AwsConfig
from shepard.errors import ConfigError

DISPATCH = {"shepard": "dispatch"}
RECONCILE_EVERY_S = 5.0

log = logging.getLogger(__name__)


def serverless(cfg: AwsConfig) -> bool:
    """Whether a flock is a deployed serverless one (its `[aws] stack` is set)."""
    return bool(cfg.stack)


@dataclass
class Head:
    """The functions of serverless flock `cfg.stack`, as the CLI reaches them."""

    cfg: AwsConfig
    clock: Callable[[], float] = time.monotonic
    _aws: Aws | None = None
    _urls: dict[str, str] = field(default_factory=dict)
    _last_reconcile: float | None = None

    @property
    def name(self) -> str:
        if not self.cfg.stack:
            raise ConfigError("this flock is not a serverless one: its flock.toml has no [aws]")
        return self.cfg.stack

    @property
    def aws(self) -> Aws:
        if self._aws is None:
            self._aws = Aws(self.cfg.region or "us-east-1")
        return self._aws

    def queue_url(self, name: str) -> str:
        if name not in self._urls:
            with aws_errors(f"find queue {name}"):
                self._urls[name] = self.aws.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]
        return self._urls[name]

    def kick(self) -> None:
        """Ask the scheduler for a dispatch round (jobs were just registered)."""
        url = self.queue_url(f"{self.name}-events")
        with aws_errors("ask the flock's scheduler to dispatch"):
            self.aws.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(DISPATCH))

    def reconcile_soon(self) -> bool:
        """Invoke the reconciler asynchronously, at most every RECONCILE_EVERY_S seconds;
        True if it was invoked now."""
        now = self.clock()
        if self._last_reconcile is not None and now - self._last_reconcile < RECONCILE_EVERY_S:
            return False
        self._last_reconcile = now
        with aws_errors("invoke the flock's reconciler"):
            self.aws.client("lambda").invoke(
                FunctionName=f"{self.name}-reconciler", InvocationType="Event", Payload=b"{}"
            )
        return True

    def dead_letters(self) -> int:
        """Messages waiting in the dead-letter queue (events no function could handle)."""
        url = self.queue_url(f"{self.name}-events-dlq")
        with aws_errors("read the dead-letter queue"):
            found = self.aws.client("sqs").get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(found["Attributes"].get("ApproximateNumberOfMessages", 0))
