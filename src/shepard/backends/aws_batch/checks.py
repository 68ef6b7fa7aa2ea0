"""Configuration checks said before anything is handed over (`init`, `deploy`, `up`): the
queue exists in the region and is usable, the credentials work, the actions are allowed."""

from __future__ import annotations

from shepard.backends.aws_batch.api import BatchApi, BatchError
from shepard.backends.aws_batch.config import BatchConfig
from shepard.errors import ConfigError


def check_queue(api: BatchApi, cfg: BatchConfig) -> None:
    """Raise ConfigError with the fix when the flock's queue cannot take its jobs."""
    if not cfg.queue:
        raise ConfigError("backend.aws-batch.queue is not set: give `--batch-queue QUEUE`")
    region = api.batch.meta.region_name
    if cfg.queue.startswith("arn:"):
        parts = cfg.queue.split(":")
        if len(parts) > 3 and parts[3] and parts[3] != region:
            raise ConfigError(
                f"the Batch queue {cfg.queue} is in region {parts[3]}, the flock uses "
                f"{region}: give `--region {parts[3]}` (backend.aws-batch.region)"
            )
    try:
        queues = api.call(api.batch, "DescribeJobQueues", jobQueues=[cfg.queue])["jobQueues"]
    except BatchError as exc:
        raise ConfigError(str(exc)) from None
    if not queues:
        try:
            known = [q["jobQueueName"] for q in
                     api.call(api.batch, "DescribeJobQueues")["jobQueues"]]  # fmt: skip
        except BatchError:
            known = []
        there = f"; queues there: {', '.join(sorted(known))}" if known else ""
        raise ConfigError(
            f"no Batch job queue {cfg.queue!r} in region {region}{there}: give an existing "
            "queue with `--batch-queue` (or the right `--region`)"
        )
    queue = queues[0]
    if queue.get("state") != "ENABLED" or queue.get("status") not in (None, "VALID"):
        raise ConfigError(
            f"the Batch job queue {cfg.queue!r} is {queue.get('state')}/{queue.get('status')}: "
            "enable it (aws batch update-job-queue --state ENABLED) or use another"
        )


def check_storage(root: str) -> None:
    """Batch tasks reach the flock's stores only through S3: refuse a folder."""
    if not root.startswith("s3://"):
        raise ConfigError(
            f"the aws-batch backend needs the flock's stores in S3 (its tasks run on other "
            f"machines), not {root}: give `--storage s3://BUCKET/PREFIX`"
        )


def check_settings(cfg: BatchConfig, storage_root: str) -> None:
    """What `init` and `up` check: S3 stores, then the queue (through AWS)."""
    from shepard.backends.aws_batch.api import RateLimiter, clients

    check_storage(storage_root)
    batch, logs = clients(cfg.region, cfg.endpoint_url)
    check_queue(BatchApi(batch, logs, RateLimiter(cfg.submit_rate)), cfg)
