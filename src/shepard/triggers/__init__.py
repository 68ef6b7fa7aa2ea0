"""Triggers: things that turn outside events into jobs while `shepard up` runs."""

from shepard.triggers.folder_inbox import FolderInbox
from shepard.triggers.inbox import count_rejected, open_inbox, watching
from shepard.triggers.object_inbox import ObjectInbox
from shepard.triggers.scan import Inbox, Rejection, ScanResult

__all__ = [
    "FolderInbox",
    "Inbox",
    "ObjectInbox",
    "Rejection",
    "ScanResult",
    "count_rejected",
    "open_inbox",
    "watching",
]
