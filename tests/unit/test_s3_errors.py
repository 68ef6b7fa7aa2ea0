"""S3Store turns each S3 failure into a StorageError saying what to do (no server needed:
botocore's Stubber answers in the service's place)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from botocore.stub import Stubber

from shepard.errors import StorageError
from shepard.storage import NoSuchObject, StoreOptions
from shepard.storage.s3 import S3Store


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[S3Store, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # a client of its own (clients are shared per settings), so the stub touches no other test
    options = StoreOptions(endpoint_url=f"http://{uuid.uuid4().hex}.invalid", region="us-east-1")
    store = S3Store("my-bucket", "flocks/f", options)
    with Stubber(store.client) as stub:
        yield store, stub


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("ExpiredToken", 400, r"credentials have expired; renew them"),
        ("InvalidAccessKeyId", 403, r"refused the credentials \(InvalidAccessKeyId\)"),
        ("AccessDenied", 403, r"access denied; the credentials in use .* need s3 permissions"),
        ("NoSuchBucket", 404, r"the bucket 'my-bucket' does not exist at http://.*aws s3 mb"),
        ("PermanentRedirect", 301, r"in another region than the one in use \(us-east-1\)"),
        ("SlowDown", 503, r"cannot write s3://my-bucket/flocks/f/k: .*SlowDown"),
    ],
)
def test_s3_failures_say_what_to_do(
    stubbed: tuple[S3Store, Stubber], code: str, status: int, message: str
) -> None:
    store, stub = stubbed
    stub.add_client_error("put_object", service_error_code=code, http_status_code=status)
    with pytest.raises(StorageError, match=message):
        store.put_bytes("k", b"x")


def test_missing_key_is_no_such_object(stubbed: tuple[S3Store, Stubber]) -> None:
    store, stub = stubbed
    stub.add_client_error("head_object", service_error_code="404", http_status_code=404)
    with pytest.raises(NoSuchObject, match=r"no object 'a.zip' in s3://my-bucket/flocks/f"):
        store.stat("a.zip")


def test_put_if_absent_retries_a_conflict_then_reports_the_loser(
    stubbed: tuple[S3Store, Stubber],
) -> None:
    store, stub = stubbed
    stub.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    stub.add_client_error("put_object", "PreconditionFailed", http_status_code=412)
    assert store.put_if_absent("claim", b"me") is False
    stub.assert_no_pending_responses()


def test_credentials_missing_entirely(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    options = StoreOptions(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    store = S3Store("my-bucket", "", options)
    with pytest.raises(StorageError, match=r"no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        store.put_bytes("k", b"x")
