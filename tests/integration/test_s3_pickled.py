"""An S3 store handed to another process (pickled, as the runner processes get their runtime
context when they cannot be forked) still uploads: see S3Store.__reduce__."""

from __future__ import annotations

import pickle
import uuid
from pathlib import Path

from shepard.storage import StoreOptions, open_store
from shepard.storage.s3 import client_for
from tests.services import s3_endpoint


def test_a_pickled_s3_store_still_uploads_files(tmp_path: Path) -> None:
    options = StoreOptions(endpoint_url=s3_endpoint(), region="us-east-1")
    bucket = f"pickled-{uuid.uuid4().hex[:16]}"
    client_for(options).create_bucket(Bucket=bucket)
    store = pickle.loads(pickle.dumps(open_store(f"s3://{bucket}/p", options=options)))
    source = tmp_path / "f.txt"
    source.write_bytes(b"payload")
    store.put_file("k", source)  # failed with AttributeError on a pickled TransferConfig
    assert store.get_bytes("k") == b"payload" and store.location == f"s3://{bucket}/p"
