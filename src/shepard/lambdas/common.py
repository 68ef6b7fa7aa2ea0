"""What the serverless flock's functions share: the flock, opened from the stack's names and
the settings in the state bucket; one-line logs; the dispatch kick.

A function's container lives on between invocations (a warm start), so the opened flock is
kept: it is opened again only when `flock.toml` changed in the state bucket (its ETag, read
with one HEAD per invocation) or the function's environment did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from shepard.aws.stackflock import FLOCK_KEY, StackFlock, flock_table
from shepard.errors import ConfigError
from shepard.flock import Flock
from shepard.storage import NoSuchObject, open_store

log = logging.getLogger("shepard.lambdas")

KICK = {"shepard": "dispatch"}
"""The body of the events queue's message that makes the scheduler run a dispatch round."""

MARGIN = 10.0
"""Seconds of an invocation left unused by a round (to report and return in time)."""


@dataclass
class _Opened:
    key: tuple[str, str]  # (digest of the stack's names, flock.toml's ETag)
    flock: Flock


_lock = threading.Lock()
_opened: dict[str, _Opened] = {}  # one per warm container; keyed by state bucket


def open_flock(env: Mapping[str, str]) -> Flock:
    """The flock this function serves: the stack's names from `env` (StackFlock) put over
    the settings in `flock.toml` of its state bucket, written to a folder under the temporary
    directory (a function's only writable place) and opened from there. Kept while neither
    changes. StackError when `env` lacks a name the stack gives every function."""
    stack = StackFlock.from_environment(env)
    state = open_store(f"s3://{stack.state_bucket}")
    try:
        etag = state.stat(FLOCK_KEY).etag
    except NoSuchObject:
        etag = ""
    key = (_digest(repr(stack)), etag)
    with _lock:
        known = _opened.get(stack.state_bucket)
        if known is not None and known.key == key:
            return known.flock
        settings: dict[str, Any] = {}
        if etag:
            settings = tomllib.loads(state.get_bytes(FLOCK_KEY).decode("utf-8"))
        else:
            log.warning("no %s in s3://%s: the flock's defaults apply", FLOCK_KEY,
                        stack.state_bucket)  # fmt: skip
        folder = Path(tempfile.gettempdir()) / "shepard" / stack.name
        folder.mkdir(parents=True, exist_ok=True)
        text = tomli_w.dumps(flock_table(stack, settings))
        (folder / "flock.toml").write_text(text, encoding="utf-8")
        try:
            flock = Flock.open(folder)
        except ConfigError as exc:
            raise ConfigError(f"{FLOCK_KEY} of s3://{stack.state_bucket}: {exc}") from None
        if known is not None:
            known.flock.close()
        _opened[stack.state_bucket] = _Opened(key, flock)
        return flock


def forget_flocks() -> None:
    """Close and forget the flocks kept (tests; a container never needs it)."""
    with _lock:
        for opened in _opened.values():
            opened.flock.close()
        _opened.clear()


def kick(queue_url: str, *, endpoint_url: str | None = None) -> None:
    """Ask the scheduler for a dispatch round: the KICK message on the events queue."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=endpoint_url)
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(KICK))


def deadline(flock: Flock, context: Any, *, limit: float | None = None) -> float:
    """When a round of this invocation must stop, on the flock's clock: MARGIN before the
    function's time is up (`context.get_remaining_time_in_millis`), and no more than `limit`
    seconds from now; with no context (a call by hand) `limit`, or 60 s."""
    now = flock.clock()
    left = float(limit) if limit is not None else 60.0
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is not None:
        left = min(left, remaining() / 1000.0 - MARGIN)
    return now + max(0.0, left)


class OneLineFormatter(logging.Formatter):
    """Every record as one JSON line (CloudWatch Logs makes each line an event, so a
    traceback stays with its message)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


_logging_set = False


def setup_logging(level: int = logging.INFO) -> None:
    """Inside Lambda (AWS_LAMBDA_FUNCTION_NAME set), send every log record to stdout as one
    line (OneLineFormatter), once per process: a function's process is its handler's (the
    entry point). Called by a handler elsewhere (tests, a call by hand), it leaves the
    caller's logging alone."""
    global _logging_set
    with _lock:
        if _logging_set or not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            return
        root = logging.getLogger()
        for handler in list(root.handlers):  # Lambda's runtime adds its own
            root.removeHandler(handler)
        out = logging.StreamHandler(sys.stdout)
        out.setFormatter(OneLineFormatter())
        root.addHandler(out)
        root.setLevel(level)
        for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _logging_set = True


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
