"""ObjectStore on S3 or any S3-compatible service (MinIO, Ceph, moto), through boto3.

Needs the `aws` extra (`pip install 'shepard[aws]'`); this module alone imports boto3. The
endpoint, region and credentials come from boto3's standard chain (AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_PROFILE, instance roles, ...) unless StoreOptions sets the
endpoint or region. botocore retries throttling and transient errors ("standard" mode).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from shepard.errors import StorageError
from shepard.storage.base import NoSuchObject, ObjectInfo, ObjectStore, StoreOptions, check_key
from shepard.storage.urls import parse_s3_url

try:
    import boto3
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise StorageError(
        "S3 stores need boto3, which is not installed: pip install 'shepard[aws]'"
    ) from exc

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

MIN_PART = 5 << 20  # S3 refuses smaller parts (except the last)
_MISSING = {"404", "NoSuchKey", "NotFound"}
_EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
_REFUSED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}
_DENIED = {"AccessDenied", "403", "AllAccessDisabled", "Forbidden"}
_REGION = {
    "301",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}

# One client per process and settings: creating one costs tens of milliseconds, clients are
# thread-safe, and a client must not cross a fork (its pooled sockets would be shared). The
# environment that boto3's chain reads is part of the key, so changing it takes effect.
_CHAIN_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
)  # fmt: skip
_clients: dict[tuple[object, ...], Any] = {}
_sessions: dict[tuple[object, ...], Any] = {}  # a session caches the service models it loaded
_clients_lock = threading.Lock()


def client_for(options: StoreOptions) -> Any:
    """The S3 client of this process for these options (created once, then shared)."""
    pool = max(10, 2 * options.max_concurrency)
    chain = tuple(os.environ.get(name) for name in _CHAIN_ENV)
    ident = (options.endpoint_url, options.region, pool, os.getpid(), *chain)
    with _clients_lock:
        if ident not in _clients:
            config = Config(
                retries={"mode": "standard", "max_attempts": 5},
                max_pool_connections=pool,
                connect_timeout=10,
                read_timeout=60,
                # S3-compatible services (MinIO, Ceph, ...) may not know the checksums that
                # boto3 otherwise adds to every upload; AWS needs them only where required.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            session = _sessions.get(chain)
            if session is None:
                session = _sessions[chain] = boto3.session.Session()
            _clients[ident] = session.client(
                "s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config
            )
        return _clients[ident]


class S3Store:
    """Objects under `s3://bucket/prefix/` (see ObjectStore for the guarantees).

    Puts are atomic on S3 (a multipart upload appears only when completed); `put_if_absent`
    uses PutObject's `If-None-Match: *`, which AWS, MinIO and moto honour (a service that
    ignores it would let two claimers win). Keys ending with `/` (folder markers made by
    consoles) are not objects and are never listed.
    """

    def __init__(self, bucket: str, prefix: str = "", options: StoreOptions | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or StoreOptions()
        self._root = self.prefix + "/" if self.prefix else ""
        part = max(MIN_PART, self.options.part_size)
        self._transfer = TransferConfig(
            multipart_threshold=max(MIN_PART, self.options.multipart_threshold),
            multipart_chunksize=part,
            max_concurrency=self.options.max_concurrency,
            use_threads=self.options.max_concurrency > 1,
        )
        self._part_size = part

    def __reduce__(self) -> tuple[type[S3Store], tuple[str, str, StoreOptions]]:
        # rebuilt from its settings: a TransferConfig does not survive pickling (its
        # sentinels come back as bare objects), and a runner process may get the store so
        return (S3Store, (self.bucket, self.prefix, self.options))

    @classmethod
    def from_url(cls, url: str, options: StoreOptions | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, options)

    @property
    def client(self) -> Any:
        return client_for(self.options)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def __repr__(self) -> str:
        return f"S3Store({self.location!r})"

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def local_path(self, key: str) -> Path | None:
        return None

    def ensure(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            code = _code(exc)
            if code in _MISSING or code == "NoSuchBucket":
                raise self._no_bucket() from exc
            raise self._error("reach", "", exc) from exc

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("write", key):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        with self._errors("write", key):
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < self._transfer.multipart_threshold:
                    # one PutObject: a transfer manager costs about 1 ms of CPU more per
                    # file (bench/e2e_s3.py: a job stores its result zip and its logs)
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=fh)
                    return
            self.client.upload_file(str(path), self.bucket, self._key(key), Config=self._transfer)

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        with self._errors("write", key):
            self.client.upload_fileobj(stream, self.bucket, self._key(key), Config=self._transfer)

    def move_in(self, key: str, path: Path) -> None:
        self.put_file(key, path)
        path.unlink()

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        writer = _PartWriter(self, self._key(key), self._part_size)
        try:
            yield cast(BinaryIO, writer)
            with self._errors("write", key):
                writer.commit()
        except BaseException:
            writer.abort()
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        for _ in range(5):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
                )
                return True
            except ClientError as exc:
                code = _code(exc)
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # S3 asks to retry on this one
                    raise self._error("write", key, exc) from exc
            except BotoCoreError as exc:
                raise self._error("write", key, exc) from exc
        raise StorageError(f"cannot create {self.url(key)}: concurrent writes kept conflicting")

    def copy(self, src: str, dst: str) -> None:
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        with self._errors("copy", src):
            self.client.copy(source, self.bucket, self._key(dst), Config=self._transfer)

    def copy_from(self, src: ObjectStore, src_key: str, dst_key: str) -> None:
        if isinstance(src, S3Store) and src.client is self.client:  # one service: server-side
            source = {"Bucket": src.bucket, "Key": src._key(src_key)}
            with self._errors("copy", src_key):
                self.client.copy(source, self.bucket, self._key(dst_key), Config=self._transfer)
            return
        path = src.local_path(src_key)
        if path is not None:
            if not path.is_file():
                raise NoSuchObject(f"no object {src_key!r} in {src.location}")
            self.put_file(dst_key, path)
            return
        with src.open_read(src_key) as stream:
            self.put_stream(dst_key, stream)

    def move(self, src: str, dst: str) -> None:
        self.copy(src, dst)
        self.delete(src)

    def delete(self, key: str) -> None:
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def discard_partial(self, *, older_than: float) -> int:
        removed = 0
        with self._errors("list the unfinished uploads of", self.prefix or "/"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._root
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() < older_than:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: builtins.list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == 1000:  # S3's limit per DeleteObjects request
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        with self._errors("read", key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            with contextlib.closing(body):
                return cast(bytes, body.read())

    def get_file(self, key: str, dest: Path) -> None:
        with self._errors("read", key):
            self.client.download_file(self.bucket, self._key(key), str(dest), Config=self._transfer)

    def open_read(self, key: str, *, start: int = 0) -> BinaryIO:
        extra = {"Range": f"bytes={start}-"} if start else {}
        try:
            with self._errors("read", key):
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **extra)
        except StorageError as exc:
            if not isinstance(exc.__cause__, ClientError) or _code(exc.__cause__) != "InvalidRange":
                raise
            return io.BytesIO()  # start at or past the end: nothing to read
        return cast(BinaryIO, io.BufferedReader(_BodyReader(self, key, response["Body"])))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        with contextlib.closing(self._ranged(key, start, length)) as fh, self._errors("read", key):
            return cast(bytes, fh.read())

    def stat(self, key: str) -> ObjectInfo:
        with self._errors("read", key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        modified, etag = head["LastModified"].timestamp(), head.get("ETag", "").strip('"')
        return ObjectInfo(key, int(head["ContentLength"]), modified, etag)

    def size(self, key: str) -> int:
        return self.stat(key).size

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NoSuchObject:
            return False
        return True

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[str]:
        for info in self.scan(prefix, start_after=start_after, recursive=recursive):
            yield info.key

    def scan(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        for page in self._pages(prefix, start_after, delimiter=not recursive):
            for item in page.get("Contents", ()):
                key = item["Key"][len(self._root) :]
                if key and not key.endswith("/"):
                    modified, etag = item["LastModified"].timestamp(), item.get("ETag", "")
                    yield ObjectInfo(key, int(item["Size"]), modified, etag.strip('"'))

    def folders(self, prefix: str = "") -> Iterator[str]:
        for page in self._pages(prefix, "", delimiter=True):
            for item in page.get("CommonPrefixes", ()):
                yield item["Prefix"][len(self._root) :]

    # -- helpers ---------------------------------------------------------------------------

    def _key(self, key: str) -> str:
        return self._root + check_key(key)

    def _pages(self, prefix: str, start_after: str, *, delimiter: bool) -> Iterator[Any]:
        args: dict[str, str] = {"Bucket": self.bucket, "Prefix": self._root + prefix}
        if start_after:
            args["StartAfter"] = self._root + start_after
        if delimiter:
            args["Delimiter"] = "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(**args)
        with self._errors("list", prefix or "(all)"):
            yield from pages

    def _ranged(self, key: str, start: int, length: int) -> Any:
        span = f"bytes={start}-{start + length - 1}"
        try:
            with self._errors("read", key):
                obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key), Range=span)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and _code(exc.__cause__) == "InvalidRange":
                return io.BytesIO()  # past the end of the object
            raise
        return obj["Body"]

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        objects = [{"Key": key} for key in keys]
        with self._errors("delete", keys[0][len(self._root) :]):
            reply = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
        if reply.get("Errors"):
            first = reply["Errors"][0]
            raise StorageError(
                f"cannot delete {len(reply['Errors'])} objects from {self.location}, e.g. "
                f"{first.get('Key')!r}: {first.get('Message') or first.get('Code')}"
            )

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Turn boto3's exceptions into StorageErrors a user can act on."""
        try:
            yield
        except (ClientError, BotoCoreError, S3UploadFailedError) as exc:
            raise self._error(action, key, exc) from exc

    def _error(self, action: str, key: str, exc: Exception) -> StorageError:
        code = _code(exc)
        where = self.url(key) if key and not key.startswith("(") else self.location
        if code in _MISSING:
            return NoSuchObject(f"no object {key!r} in {self.location}")
        if code == "NoSuchBucket":
            return self._no_bucket()
        if code in _EXPIRED:
            return StorageError(
                f"cannot {action} {where}: the AWS credentials have expired; renew them "
                "(e.g. `aws sso login`, or new AWS_SESSION_TOKEN) and try again"
            )
        if code in _REFUSED:
            return StorageError(
                f"cannot {action} {where}: the S3 service refused the credentials ({code}); "
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        if code in _DENIED:
            return StorageError(
                f"cannot {action} {where}: access denied; the credentials in use (AWS_PROFILE, "
                "AWS_ACCESS_KEY_ID, instance role) need s3 permissions on this bucket and prefix"
            )
        if code in _REGION:
            return StorageError(
                f"cannot {action} {where}: the bucket is in another region than the one in use "
                f"({self.client.meta.region_name}); set AWS_REGION or [storage] region"
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"cannot {action} {where}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
        if isinstance(exc, ConnectionError):
            return StorageError(
                f"cannot {action} {where}: the S3 endpoint {self._endpoint()} cannot be reached "
                f"({exc}); check AWS_ENDPOINT_URL or [storage] endpoint_url, and the network"
            )
        return StorageError(f"cannot {action} {where}: {exc}")

    def _no_bucket(self) -> StorageError:
        return StorageError(
            f"the bucket {self.bucket!r} does not exist at {self._endpoint()}: create it "
            f"(e.g. `aws s3 mb s3://{self.bucket}`), or fix [storage] root / the store's URL "
            "and the endpoint (AWS_ENDPOINT_URL, [storage] endpoint_url)"
        )

    def _endpoint(self) -> str:
        return str(self.client.meta.endpoint_url)


def _code(exc: BaseException) -> str:
    """The S3 error code of `exc` ("NoSuchKey", "404", ...), or "" when it has none."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    if isinstance(exc, S3UploadFailedError):  # its message quotes the code: "(NoSuchBucket)"
        found = re.search(r"\((\w+)\)", str(exc))
        return found.group(1) if found else ""
    return ""


class _PartWriter(io.RawIOBase):
    """The writer of S3Store.open_write: sends a part as each `part_size` bytes fill (one
    PutObject when the whole object fits in one part); the object exists after `commit`."""

    def __init__(self, store: S3Store, key: str, part_size: int) -> None:
        super().__init__()
        self._store, self._key, self._part_size = store, key, part_size
        self._buf = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload: str | None = None
        self._written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data: ReadableBuffer) -> int:
        view = memoryview(data).cast("B")
        self._buf += view
        self._written += len(view)
        while len(self._buf) >= self._part_size:
            self._send(bytes(self._buf[: self._part_size]))
            del self._buf[: self._part_size]
        return len(view)

    def commit(self) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload is None:
            client.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buf))
            return
        if self._buf:
            self._send(bytes(self._buf))
        client.complete_multipart_upload(
            Bucket=bucket, Key=self._key, UploadId=self._upload,
            MultipartUpload={"Parts": self._parts},
        )  # fmt: skip

    def abort(self) -> None:
        """Drop the parts sent so far (best effort: a bucket lifecycle rule reaps the rest)."""
        if self._upload is not None:
            with contextlib.suppress(ClientError, BotoCoreError):
                self._store.client.abort_multipart_upload(
                    Bucket=self._store.bucket, Key=self._key, UploadId=self._upload
                )

    def _send(self, chunk: bytes) -> None:
        client, bucket = self._store.client, self._store.bucket
        if self._upload is None:
            self._upload = client.create_multipart_upload(Bucket=bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        reply = client.upload_part(
            Bucket=bucket, Key=self._key, UploadId=self._upload, PartNumber=number, Body=chunk
        )
        self._parts.append({"ETag": reply["ETag"], "PartNumber": number})


class _BodyReader(io.RawIOBase):
    """A GetObject body as a raw file, its network errors turned into StorageErrors."""

    def __init__(self, store: S3Store, key: str, body: Any) -> None:
        super().__init__()
        self._store, self._key, self._body = store, key, body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        with self._store._errors("read", self._key):
            data = self._body.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
