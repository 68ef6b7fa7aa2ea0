"""The aws-batch backend's API layer, on botocore's Stubber: the rate limiter, back-off on
throttling, pagination of ListJobs and DescribeJobs, messages of refused calls."""

from __future__ import annotations

import random
from typing import Any

import pytest

pytest.importorskip("boto3")

from botocore.stub import Stubber

from shepard.backends.aws_batch.api import (
    BatchApi,
    BatchBusy,
    BatchError,
    BatchRefused,
    RateLimiter,
    backoff,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _client(service: str) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    ).client(service)


def _api(clock: FakeClock, *, rate: float = 1000.0, retries: int = 5) -> BatchApi:
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    return BatchApi(_client("batch"), _client("logs"), limiter, sleep=clock.sleep,
                    rng=random.Random(7), retries=retries)  # fmt: skip


def test_rate_limiter_keeps_to_its_rate_after_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10.0, burst=5, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(105):
        limiter.acquire()
        times.append(clock.now)
    assert times[4] == 0.0  # the burst goes at once
    assert times[5] > 0.0
    assert clock.now == pytest.approx(10.0)  # 100 calls past the burst at 10 a second
    for start in range(0, 100):  # never more than rate + burst calls within one second
        window = [t for t in times if times[start] <= t < times[start] + 1.0]
        assert len(window) <= 15


def test_rate_limiter_refills_while_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, burst=2, clock=clock, sleep=clock.sleep)
    assert [limiter.acquire() for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire() == pytest.approx(0.5)
    clock.now += 10.0  # idle: the bucket fills up to its burst, no further
    assert [limiter.acquire() for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire() > 0


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(1)
    waits = [backoff(n, base=0.2, cap=5.0, rng=rng) for n in range(1, 12)]
    assert all(0 <= w <= min(5.0, 0.2 * 2**n) for n, w in zip(range(1, 12), waits, strict=True))
    assert len(set(waits)) == len(waits)


def test_throttled_submit_is_retried_with_backoff() -> None:
    clock = FakeClock()
    api = _api(clock)
    with Stubber(api.batch) as stub:
        for _ in range(3):
            stub.add_client_error("submit_job", "TooManyRequestsException", "slow down", 429)
        stub.add_response("submit_job", {"jobId": "j-1", "jobName": "n"})
        assert api.submit(jobName="n", jobQueue="q", jobDefinition="d") == "j-1"
        stub.assert_no_pending_responses()
    assert api.throttled == 3
    assert api.calls["SubmitJob"] == 4
    assert len(clock.slept) == 3 and all(s >= 0 for s in clock.slept)


def test_throttled_too_long_is_busy_not_an_error() -> None:
    clock = FakeClock()
    api = _api(clock, retries=2)
    with Stubber(api.batch) as stub:
        for _ in range(3):
            stub.add_client_error("submit_job", "TooManyRequestsException", "slow down", 429)
        with pytest.raises(BatchBusy, match="throttled"):
            api.submit(jobName="n", jobQueue="q", jobDefinition="d")


def test_list_jobs_follows_every_page() -> None:
    api = _api(FakeClock())
    pages = [[f"a:{i}" for i in range(s, s + 100)] for s in (0, 100)] + [["a:200"]]
    with Stubber(api.batch) as stub:
        for n, ids in enumerate(pages):
            response: dict[str, Any] = {
                "jobSummaryList": [{"jobId": i, "jobName": "n", "status": "RUNNING"}
                                   for i in ids]}  # fmt: skip
            expected: dict[str, Any] = {"arrayJobId": "a", "jobStatus": "RUNNING"}
            if n < 2:
                response["nextToken"] = f"t{n + 1}"
            if n:
                expected["nextToken"] = f"t{n}"
            stub.add_response("list_jobs", response, expected)
        found = list(api.list_jobs(arrayJobId="a", jobStatus="RUNNING"))
    assert [j["jobId"] for j in found] == [f"a:{i}" for i in range(201)]
    assert api.calls["ListJobs"] == 3


def test_describe_asks_100_ids_a_call() -> None:
    api = _api(FakeClock())
    ids = [f"a:{i}" for i in range(250)]
    with Stubber(api.batch) as stub:
        for start in (0, 100, 200):
            chunk = ids[start : start + 100]
            stub.add_response("describe_jobs", {"jobs": [
                {"jobId": i, "jobName": "n", "jobQueue": "q", "status": "SUCCEEDED",
                 "startedAt": 1, "jobDefinition": "d"} for i in chunk]},
                {"jobs": chunk})  # fmt: skip
        found = api.describe(ids)
    assert len(found) == 250
    assert api.calls["DescribeJobs"] == 3


def test_refusals_say_the_fix() -> None:
    api = _api(FakeClock())
    with Stubber(api.batch) as stub:
        stub.add_client_error("submit_job", "AccessDeniedException", "not allowed", 403)
        stub.add_client_error("submit_job", "ClientException", "bad queue", 400)
        stub.add_client_error("describe_jobs", "ExpiredTokenException", "expired", 400)
        with pytest.raises(BatchError, match=r"batch:SubmitJob.*grant that action"):
            api.submit(jobName="n", jobQueue="q", jobDefinition="d")
        with pytest.raises(BatchRefused, match="bad queue"):
            api.submit(jobName="n", jobQueue="q", jobDefinition="d")
        with pytest.raises(BatchError, match="renew them"):
            api.describe(["x"])


def test_missing_credentials_are_named() -> None:
    import boto3
    from botocore import UNSIGNED  # noqa: F401

    session = boto3.session.Session(region_name="us-east-1")
    client = session.client("batch")
    client._request_signer._credentials = None  # as when no credentials are found
    api = BatchApi(client, None, RateLimiter(100.0))
    with pytest.raises(BatchError, match="no AWS credentials"):
        api.describe(["x"])
