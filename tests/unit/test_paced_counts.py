"""`Flock.wait` counts its batch often while counting is cheap and seldom when it is not."""

from __future__ import annotations

import time

from shepard.flock import PacedCounts
from shepard.model import JobStatus

COUNTS = {status: 0 for status in JobStatus}


def test_cheap_counts_are_always_due() -> None:
    counter = PacedCounts(lambda: COUNTS)
    assert counter.due()
    assert counter.count() == COUNTS
    assert counter.spacing() < 0.01


def test_a_dear_count_spaces_the_next_ones_out() -> None:
    def slow() -> dict[JobStatus, int]:
        time.sleep(0.05)
        return COUNTS

    counter = PacedCounts(slow)
    counter.count()
    assert counter.spacing() >= PacedCounts.SHARE * 0.05
    assert not counter.due()  # ~0.05 s since the count began, ten times that needed
    time.sleep(counter.spacing())
    assert counter.due()
