"""Triggers: things that turn outside events into jobs while `shepard up` runs."""

from shepard.triggers.inbox import InboxWatcher, Rejection, ScanResult, count_rejected, watching

__all__ = ["InboxWatcher", "Rejection", "ScanResult", "count_rejected", "watching"]
