"""Object stores: where bundles, outputs, error bundles and logs live."""

from shepard.storage.base import ObjectStore, check_key
from shepard.storage.local import LocalStore

__all__ = ["LocalStore", "ObjectStore", "check_key", "open_store"]


def open_store(url: str) -> ObjectStore:
    """Open a store from a URL: a plain path or `file://...` (S3 comes with the AWS extra)."""
    if url.startswith("file://"):
        return LocalStore(url.removeprefix("file://"))
    if "://" in url:
        from shepard.errors import StorageError

        raise StorageError(f"unsupported store URL {url!r}: use a folder path or file://PATH")
    return LocalStore(url)
