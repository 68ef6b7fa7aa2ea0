"""Receiving an uploaded bundle: streamed to a file, never held in memory whole.

The file is written in a private folder of the flock's work folder (`Flock.upload_folder`);
the service layer then validates it and copies it into the inputs store exactly as
`shepard batch BUNDLE.zip` does. Writes go through the thread pool, one chunk at a time, so
the event loop never waits on the disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread
from starlette.datastructures import UploadFile

FILE_NAME = "bundle.zip"
CHUNK = 1 << 20


async def save_stream(chunks: AsyncIterator[bytes], folder: Path) -> Path:
    """Write a request body (`Request.stream()`) to `folder`/bundle.zip."""
    path = folder / FILE_NAME
    fh = await to_thread.run_sync(_open, path)
    try:
        async for chunk in chunks:
            if chunk:
                await to_thread.run_sync(fh.write, chunk)
    finally:
        await to_thread.run_sync(fh.close)
    return path


async def save_upload(upload: UploadFile, folder: Path) -> Path:
    """Copy a multipart file (spooled by the form parser) to `folder`/bundle.zip."""
    path = folder / FILE_NAME
    fh = await to_thread.run_sync(_open, path)
    try:
        while chunk := await upload.read(CHUNK):
            await to_thread.run_sync(fh.write, chunk)
    finally:
        await to_thread.run_sync(fh.close)
    return path


def _open(path: Path) -> BinaryIO:
    return open(path, "wb")
