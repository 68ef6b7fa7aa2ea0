"""What an S3 server allows at most: raw boto3 request rates against it, for the S3 benches.

    .venv/bin/python bench/s3ceiling.py [--endpoint URL] [--threads 8] [--count 300]

bench/e2e_s3.py and bench/inbox_s3.py call `measure` in the same run as their own figures, so
each figure reads against what the server takes at all: small PutObject, GetObject,
CopyObject followed by DeleteObject (a move), and keys listed by ListObjectsV2 (pages of 1,000;
moto renders each key in Python, so a listed key costs it about as much as a request), each from
1 thread and from N threads sharing one client (as Shepard's processes share one). Nothing of
Shepard is in the way: one boto3 client, its pool sized to the threads, the checksums off as in
`shepard.storage.s3`.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

BODY = b"x" * 300  # what a trivial job's result zip or a small inbox bundle weighs
LISTED = 1000  # keys in the listed prefix: one full ListObjectsV2 page


@dataclass
class Ceiling:
    """Requests per second the server answered, by operation and thread count."""

    threads: int
    rates: dict[tuple[str, int], float]

    def rate(self, op: str, threads: int | None = None) -> float:
        return self.rates[(op, threads or self.threads)]

    def lines(self) -> list[str]:
        """A table: the header, then one line per operation measured."""
        ops = sorted({op for op, _ in self.rates}, key=list(OPS).index)
        out = [f"  {'server alone':<26}{'1 thread':>12}{f'{self.threads} threads':>14}"]
        for op in ops:
            one, many = self.rates.get((op, 1), 0.0), self.rates[(op, self.threads)]
            out.append(f"  {OPS[op]:<26}{one:10.0f}/s{many:12.0f}/s")
        return out


OPS = {
    "put": "PutObject (300 B)",
    "get": "GetObject (300 B)",
    "move": "CopyObject + DeleteObject",
    "list": "ListObjectsV2, keys",
}


def client(endpoint: str, pool: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=max(10, pool),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)


def measure(
    endpoint: str,
    threads: int,
    count: int = 300,
    *,
    ops: tuple[str, ...] = tuple(OPS),
    single: bool = True,
) -> Ceiling:
    """Rates of each operation from 1 and from `threads` threads (`count` requests each;
    LIST's rate in keys listed per second, pages of 1,000), in a new bucket at `endpoint`;
    only `ops`, and without `single` only from `threads` threads."""
    s3 = client(endpoint, threads)
    bucket = f"ceiling-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    if "list" in ops or "get" in ops:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"l/{i:05}", Body=BODY),
                          range(LISTED)))  # fmt: skip
    rates: dict[tuple[str, int], float] = {}
    for n in sorted({1, threads} if single else {threads}):
        tag = f"{n}-{uuid.uuid4().hex[:6]}"
        steps = _steps(s3, bucket, tag)
        for op in ops:
            step = steps[op]
            many = count if op != "list" else 3
            with ThreadPoolExecutor(n) as pool:
                began = time.perf_counter()
                list(pool.map(step, range(many)))
                rates[(op, n)] = many / (time.perf_counter() - began)
        if "list" in ops:
            rates[("list", n)] *= LISTED  # keys listed per second
    return Ceiling(threads, rates)


def _steps(s3: Any, bucket: str, tag: str) -> dict[str, Callable[[int], object]]:
    """One request (a move: two) of each operation, the i-th of a run tagged `tag`."""

    def put(i: int) -> object:
        return s3.put_object(Bucket=bucket, Key=f"p{tag}/{i}", Body=BODY)

    def get(i: int) -> object:
        return s3.get_object(Bucket=bucket, Key=f"l/{i % LISTED:05}")["Body"].read()

    def move(i: int) -> object:  # moves what `put` stored
        _move(s3, bucket, f"p{tag}/{i}", f"m{tag}/{i}")
        return None

    def listing(i: int) -> object:
        return s3.list_objects_v2(Bucket=bucket, Prefix="l/")

    return {"put": put, "get": get, "move": move, "list": listing}


def _move(s3: Any, bucket: str, src: str, dst: str) -> None:
    s3.copy_object(Bucket=bucket, Key=dst, CopySource={"Bucket": bucket, "Key": src})
    s3.delete_object(Bucket=bucket, Key=src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=os.environ.get("SHEPARD_TEST_S3"))
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    if not args.endpoint:
        parser.error('no S3 endpoint: eval "$(scripts/services-s3)" or give --endpoint URL')
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print("\n".join(measure(args.endpoint, args.threads, args.count).lines()))
    print("  (a move is 2 requests: its rate is moves/s)")


if __name__ == "__main__":
    main()
