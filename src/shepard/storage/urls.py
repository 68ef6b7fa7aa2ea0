"""Store URLs: a folder path, `file://PATH` or `s3://BUCKET[/PREFIX]` (no library needed)."""

from __future__ import annotations

import re

from shepard.errors import StorageError
from shepard.storage.base import check_key

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def scheme(url: str) -> str:
    """The URL's scheme, lower-case; "file" for a plain path."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def is_folder_url(url: str) -> bool:
    """Whether `url` names a local folder (a plain path or file://PATH)."""
    return scheme(url) == "file"


def folder_of(url: str) -> str:
    """The path of a folder URL (`file://` removed)."""
    return url.removeprefix("file://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://BUCKET[/PREFIX]`; StorageError naming what is wrong."""
    if scheme(url) != "s3":
        raise StorageError(f"{url!r} is not an S3 URL: use s3://BUCKET[/PREFIX]")
    bucket, _, prefix = url.partition("://")[2].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(
            f"{url!r}: {bucket!r} is not a bucket name (3-63 lower-case letters, digits, "
            "dots and hyphens): use s3://BUCKET[/PREFIX]"
        )
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def child_url(url: str, name: str) -> str:
    """The URL of `name` inside the store or folder `url`."""
    return url.rstrip("/") + "/" + name
