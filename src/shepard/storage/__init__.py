"""Object stores: where bundles, outputs, error bundles and logs live.

Stores are opened by URL through `open_store`; code above this package speaks the
`ObjectStore` protocol only. A new kind of store is one module with a class that has
`from_url(url, options)` and one line in STORES.
"""

from __future__ import annotations

import importlib

from shepard.errors import StorageError
from shepard.storage.base import (
    NoSuchObject,
    ObjectInfo,
    ObjectStore,
    StoreOptions,
    check_key,
    join_key,
)
from shepard.storage.local import LocalStore
from shepard.storage.urls import is_folder_url, parse_s3_url, scheme

__all__ = [
    "STORES",
    "LocalStore",
    "NoSuchObject",
    "ObjectInfo",
    "ObjectStore",
    "StoreOptions",
    "check_key",
    "is_folder_url",
    "join_key",
    "open_store",
    "parse_s3_url",
    "scheme",
]

# URL scheme -> "module:class"; imported on first use, so boto3 loads only for S3 stores.
STORES: dict[str, str] = {
    "file": "shepard.storage.local:LocalStore",
    "memory": "shepard.storage.memory:MemoryStore",  # a fake for tests, this process only
    "s3": "shepard.storage.s3:S3Store",
}


def open_store(url: str, *, options: StoreOptions | None = None) -> ObjectStore:
    """Open the store named by `url`: a folder path, `file://PATH` or `s3://BUCKET[/PREFIX]`.

    Raises StorageError for an unknown scheme or a malformed URL, and when the store's
    library is missing (S3 needs `pip install 'shepard[aws]'`). Opening does not touch the
    store: `ensure()` checks that it is usable.
    """
    target = STORES.get(scheme(url))
    if target is None:
        known = ", ".join(f"{s}://" for s in STORES)
        raise StorageError(f"unsupported store URL {url!r}: use a folder path or one of {known}")
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    store: ObjectStore = cls.from_url(url, options or StoreOptions())
    return store
