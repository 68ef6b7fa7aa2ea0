"""The AWS Batch and CloudWatch Logs calls of a flock, paced and retried.

Every call goes through one `RateLimiter` (a token bucket: at most `rate` calls a second on
average, bursts of at most `burst`), so a flock never comes near Batch's account-wide limit of
50 SubmitJob calls a second. A throttled call (TooManyRequestsException, ThrottlingException)
is retried after an exponential back-off with full jitter, a few times, then reported as
`BatchBusy` (the array template tries again later). Errors that will not pass (an unknown
queue, a missing permission, no credentials) become `BatchError` with the fix in the message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from shepard.backends.arrays import SchedulerBusy, SchedulerError, SchedulerRefused

THROTTLED = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})
EXPIRED = frozenset({"ExpiredTokenException", "ExpiredToken", "RequestExpired"})
IDS_PER_DESCRIBE = 100  # DescribeJobs takes at most 100 job ids
RETRIES = 5  # tries of one throttled call before giving up for this round


class BatchError(SchedulerError):
    """A Batch call failed in a way that will not pass by itself."""


class BatchBusy(BatchError, SchedulerBusy):
    """Batch could not answer now (throttled, unreachable): try again later."""


class BatchRefused(BatchError, SchedulerRefused):
    """Batch refused a submission as configured (queue, job definition, size)."""


class RateLimiter:
    """A token bucket: `acquire()` returns at once while tokens are left, else sleeps until
    one is (tokens come back at `rate` a second, up to `burst`). Clock and sleep are given, so
    tests run it on a fake clock."""

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock, self.sleep = clock, sleep
        self._tokens = self.burst
        self._at = clock()

    def acquire(self) -> float:
        """Take one token, waiting for it if need be; returns the seconds waited."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        wait = (1.0 - self._tokens) / self.rate
        self.sleep(wait)
        self._at = self.clock()
        self._tokens = 0.0
        return wait


def backoff(attempt: int, *, base: float = 0.2, cap: float = 20.0, rng: random.Random) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): full jitter, uniform in
    [0, min(cap, base * 2**attempt)] (so throttled callers spread out instead of retrying in
    step)."""
    return rng.uniform(0.0, min(cap, base * 2.0**attempt))


def code_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def message_of(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


class BatchApi:
    """The calls the backend makes, on boto3 clients it is given (real or stubbed)."""

    def __init__(
        self,
        batch: Any,
        logs: Any,
        limiter: RateLimiter,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        retries: int = RETRIES,
    ) -> None:
        self.batch, self.logs, self.limiter = batch, logs, limiter
        self.sleep, self.retries = sleep, retries
        self.rng = rng or random.Random()
        self.calls: dict[str, int] = {}  # operation -> calls made (for figures and tests)
        self.throttled = 0

    def call(self, client: Any, operation: str, **kwargs: Any) -> Any:
        """One API call: paced, retried while throttled, errors translated."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
        )

        attempt = 0
        while True:
            self.limiter.acquire()
            self.calls[operation] = self.calls.get(operation, 0) + 1
            try:
                return getattr(client, _snake(operation))(**kwargs)
            except ClientError as exc:
                code = code_of(exc)
                if code in THROTTLED and attempt < self.retries:
                    attempt += 1
                    self.throttled += 1
                    self.sleep(backoff(attempt, rng=self.rng))
                    continue
                raise translate(exc, operation) from None
            except NoCredentialsError:
                raise BatchError(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or run where an instance/task role applies"
                ) from None
            except NoRegionError:
                raise BatchError(
                    "no AWS region: give `--region` (backend.aws-batch.region) or set "
                    "AWS_DEFAULT_REGION"
                ) from None
            except EndpointConnectionError as exc:
                raise BatchBusy(f"cannot reach AWS Batch: {exc}") from None
            except BotoCoreError as exc:
                raise BatchBusy(f"AWS Batch call {operation} failed: {exc}") from None

    # -- Batch ----------------------------------------------------------------------------------

    def submit(self, **kwargs: Any) -> str:
        return str(self.call(self.batch, "SubmitJob", **kwargs)["jobId"])

    def describe(self, job_ids: Sequence[str]) -> list[dict[str, Any]]:
        """DescribeJobs, 100 ids a call; jobs Batch no longer knows are left out."""
        found: list[dict[str, Any]] = []
        ids = list(dict.fromkeys(job_ids))
        for start in range(0, len(ids), IDS_PER_DESCRIBE):
            chunk = ids[start : start + IDS_PER_DESCRIBE]
            found += self.call(self.batch, "DescribeJobs", jobs=chunk)["jobs"]
        return found

    def list_jobs(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """ListJobs, every page (nextToken)."""
        token: str | None = None
        while True:
            extra = {"nextToken": token} if token else {}
            page = self.call(self.batch, "ListJobs", **kwargs, **extra)
            yield from page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                return

    def terminate(self, job_id: str, reason: str) -> None:
        self.call(self.batch, "TerminateJob", jobId=job_id, reason=reason)

    def cancel(self, job_id: str, reason: str) -> None:
        self.call(self.batch, "CancelJob", jobId=job_id, reason=reason)

    # -- CloudWatch Logs ------------------------------------------------------------------------

    def log_lines(self, group: str, stream: str) -> Iterator[str]:
        """Every message of a log stream, oldest first."""
        token: str | None = None
        while True:
            extra = {"nextToken": token} if token else {}
            page = self.call(
                self.logs, "GetLogEvents", logGroupName=group, logStreamName=stream,
                startFromHead=True, **extra,
            )  # fmt: skip
            for event in page.get("events", []):
                yield str(event.get("message", ""))
            following = page.get("nextForwardToken")
            if not page.get("events") or not following or following == token:
                return
            token = following


def translate(exc: BaseException, operation: str) -> BatchError:
    """A ClientError as a BatchError whose message says what to do."""
    code, message = code_of(exc), message_of(exc)
    service = "logs" if operation in {"GetLogEvents", "DescribeLogStreams"} else "batch"
    if code in DENIED:
        return BatchError(
            f"AWS refused {service}:{operation} ({message}): grant that action to the "
            "credentials the head runs with"
        )
    if code in EXPIRED or code in {"UnrecognizedClientException", "InvalidClientTokenId"}:
        return BatchError(
            f"the AWS credentials were refused ({code}: {message}): renew them "
            "(aws sso login, new session keys) and try again"
        )
    if code in THROTTLED:
        return BatchBusy(f"AWS Batch throttled {operation}: {message}")
    if code in {"ServerException", "InternalFailure", "ServiceUnavailable"}:
        return BatchBusy(f"AWS Batch {operation} failed on its side: {message}")
    if operation == "SubmitJob":
        return BatchRefused(f"AWS Batch refused the submission: {message}")
    return BatchError(f"AWS Batch {operation} failed ({code}): {message}")


def _snake(operation: str) -> str:
    out = []
    for i, ch in enumerate(operation):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def clients(region: str | None, endpoint_url: str | None) -> tuple[Any, Any]:
    """boto3 clients of Batch and CloudWatch Logs (boto3 imported here, on first use)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=10,
                    read_timeout=60)  # fmt: skip
    session = boto3.session.Session(region_name=region)
    batch = session.client("batch", endpoint_url=endpoint_url, config=config)
    logs = session.client("logs", endpoint_url=endpoint_url, config=config)
    return batch, logs
