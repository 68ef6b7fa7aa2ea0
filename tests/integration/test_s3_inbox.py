"""The object inbox on S3 (moto's server): objects put under inbox/ become exactly one job each,
whatever is in the inbox and however many watchers race for it."""

from __future__ import annotations

import io
import json
import os
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard.config import FlockConfig, PayloadConfig, StorageConfig
from shepard.flock import Flock
from shepard.model import Job
from shepard.storage import StoreOptions
from shepard.triggers import ObjectInbox, count_rejected
from tests.services import s3_endpoint


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    from shepard.storage.s3 import client_for

    endpoint = s3_endpoint()
    bucket = f"inbox-{uuid.uuid4().hex[:20]}"
    client_for(StoreOptions(endpoint_url=endpoint)).create_bucket(Bucket=bucket)
    storage = StorageConfig(root=f"s3://{bucket}/flocks/f", endpoint_url=endpoint)
    cfg = FlockConfig(name="s3-inbox", payload=PayloadConfig(command="true"), storage=storage)
    f = Flock.create(tmp_path / "flock", cfg)
    yield f
    f.close()


def client(flock: Flock) -> Any:
    from shepard.storage.s3 import client_for

    return client_for(flock.dir.store_options())


def bucket_and_prefix(flock: Flock) -> tuple[str, str]:
    location = flock.store("inbox").location.removeprefix("s3://")
    bucket, _, prefix = location.partition("/")
    return bucket, prefix + "/"


def put(flock: Flock, key: str, data: bytes) -> None:
    """As `aws s3 cp` does: a plain PutObject under the inbox prefix."""
    bucket, prefix = bucket_and_prefix(flock)
    client(flock).put_object(Bucket=bucket, Key=prefix + key, Body=data)


def bundle(params: object, *, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if params is not None:
            zf.writestr("inputs.json", json.dumps(params))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def jobs(flock: Flock) -> list[Job]:
    return flock.catalog.page(limit=10_000, newest_first=False)


def raw_keys(flock: Flock) -> list[str]:
    bucket, prefix = bucket_and_prefix(flock)
    pages = client(flock).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", ())]


def test_nothing_in_the_inbox_stops_it(flock: Flock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shepard.triggers.object_inbox.SMALL", 64 << 10)
    big = bundle({"ITEM": 3}, extra={"blob.bin": os.urandom(200 << 10)})
    put(flock, "a//double-slash.zip", bundle({"ITEM": 0}))  # no store API key: left alone
    put(flock, "folder/", b"")  # a console's folder marker: not an object
    put(flock, "empty.zip", b"")
    put(flock, "with space é 日本.zip", bundle({"ITEM": 1}))
    put(flock, "deep/er/x.zip", bundle({"ITEM": 2}))
    put(flock, "big.zip", big)  # read by ranges, copied server-side
    put(flock, ".staging.zip", bundle({"ITEM": 4}))
    put(flock, "rejected/old.zip", b"old")
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
        assert sorted(j.params["ITEM"] for j in jobs(flock)) == [1, 2, 3]  # type: ignore[type-var]
        assert [r.name for r in result.rejected] == ["empty.zip"]
        assert inbox.scan_once().registered == 0
    assert sorted(raw_keys(flock)) == [
        ".staging.zip",
        "a//double-slash.zip",
        "folder/",
        "rejected/empty.zip",
        "rejected/empty.zip.reason.txt",
        "rejected/old.zip",
    ]
    (copied,) = [j for j in jobs(flock) if j.params["ITEM"] == 3]
    assert copied.bundle_key is not None
    assert flock.store("inputs").get_bytes(copied.bundle_key) == big
    assert count_rejected(flock) == 1


def test_two_watchers_racing_over_200_objects_make_200_jobs(flock: Flock) -> None:
    for i in range(200):
        put(flock, f"race/{i:03}.zip", bundle({"ITEM": i}))
    heads = [flock, Flock.open(flock.dir.folder)]  # two catalog handles, as two processes
    start = threading.Barrier(2)
    results: list[Any] = []

    def watch(f: Flock) -> None:
        with ObjectInbox(f, chunk=20) as inbox:
            start.wait()
            while True:
                result = inbox.scan_once()
                results.append(result)
                if not (result.registered or result.recovered):
                    return

    threads = [threading.Thread(target=watch, args=(f,)) for f in heads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    heads[1].close()
    found = jobs(flock)
    assert sorted(j.params["ITEM"] for j in found) == list(range(200))  # type: ignore[type-var]
    assert len({j.bundle_key for j in found}) == 200
    assert sum(r.registered for r in results) == 200
    assert raw_keys(flock) == []
    assert len(list(flock.store("inputs").list())) == 200


def test_a_multipart_upload_is_taken_only_once_completed(flock: Flock) -> None:
    bucket, prefix = bucket_and_prefix(flock)
    s3 = client(flock)
    key = prefix + "uploading.zip"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    part = s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=bundle({"ITEM": 5})
    )
    with ObjectInbox(flock) as inbox:
        first = inbox.scan_once()
        assert first.registered == 0 and not first.rejected and not first.waiting
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload,
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )  # fmt: skip
        assert inbox.scan_once().registered == 1
    assert [j.params["ITEM"] for j in jobs(flock)] == [5]
    assert raw_keys(flock) == []
