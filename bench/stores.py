"""Benchmark: the store operations jobs and the inbox lean on, on a folder and on S3.

    SHEPARD_TEST_S3=http://127.0.0.1:PORT .venv/bin/python bench/stores.py [--objects N]

For each store kind (a folder in a temporary directory; a fresh bucket on the S3 server named
by SHEPARD_TEST_S3, e.g. moto's from scripts/services-s3), in one run:
- put: N small objects (1 KiB) with `put_bytes`, from 8 threads (one shared client);
- claim: `put_if_absent` of N new keys, 8 threads (what an atomic inbox claim costs);
- list: `scan` of the N objects (S3: 1,000 keys a page);
- range: N `read_range` of 64 KiB (how the runner reads a bundle's central directory);
- big: one 64 MiB file up (`put_file`, multipart on S3) and down (`get_file`), MB/s.
Prints ops/s per kind and the S3/folder ratio. No target: it says where S3 time goes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shepard.storage import ObjectStore, StoreOptions, open_store

THREADS = 8


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def measure(store: ObjectStore, n: int, scratch: Path) -> dict[str, float]:
    """ops/s (MB/s for big_up and big_down) of each operation on `store`."""
    keys = [f"bench/{i:06d}.zip" for i in range(n)]
    small = os.urandom(1024)
    store.put_bytes("range.bin", os.urandom(1 << 20))
    with ThreadPoolExecutor(THREADS) as pool:
        put = timed(lambda: list(pool.map(lambda k: store.put_bytes(k, small), keys)))
        claim = timed(
            lambda: list(pool.map(lambda k: store.put_if_absent("claims/" + k, small), keys))
        )
        offsets = [(i * 4096) % (1 << 20) for i in range(n)]
        ranged = timed(
            lambda: list(pool.map(lambda at: store.read_range("range.bin", at, 65536), offsets))
        )
    listed = timed(lambda: sum(1 for _ in store.scan("bench/")))
    big = scratch / "big.bin"
    big.write_bytes(os.urandom(64 << 20))
    up = timed(lambda: store.put_file("big.bin", big))
    down = timed(lambda: store.get_file("big.bin", scratch / "back.bin"))
    return {
        "put": n / put, "claim": n / claim, "list": n / listed, "range": n / ranged,
        "big_up": 64 / up, "big_down": 64 / down,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    args = parser.parse_args()
    endpoint = os.environ.get("SHEPARD_TEST_S3")
    if not endpoint:
        print('set SHEPARD_TEST_S3 (eval "$(scripts/services-s3)")', file=sys.stderr)
        return 2
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(name, value)
    options = StoreOptions(endpoint_url=endpoint, region="us-east-1")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        from shepard.storage.s3 import client_for

        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client_for(options).create_bucket(Bucket=bucket)
        results = {
            "folder": measure(open_store(str(scratch / "store")), args.objects, scratch),
            "s3": measure(open_store(f"s3://{bucket}/b", options=options), args.objects, scratch),
        }
    print(f"{'operation':<10} {'folder':>12} {'s3':>12} {'s3/folder':>10}")
    for op in results["folder"]:
        unit = "MB/s" if op.startswith("big") else "ops/s"
        folder, s3 = results["folder"][op], results["s3"][op]
        print(f"{op:<10} {folder:>9,.0f} {unit:<4} {s3:>7,.0f} {unit:<4} {s3 / folder:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
