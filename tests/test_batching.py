"""Batching: a batch closes on file count, bytes or age, whichever comes first."""

from __future__ import annotations

import math

from bifrost_async.batching import Batch, BatchPolicy


def test_batch_is_full_by_count() -> None:
    """The file-count limit closes a batch."""
    batch: Batch[str] = Batch()
    policy = BatchPolicy(max_files=3, max_bytes=10**9, max_age=60)
    for name in ("a", "b"):
        batch.add(name, 10, now=0.0)

    assert not batch.is_full(policy)
    batch.add("c", 10, now=0.0)
    assert batch.is_full(policy)


def test_batch_is_full_by_bytes() -> None:
    """The byte limit closes a batch even with one file."""
    batch: Batch[str] = Batch()
    batch.add("big", 600, now=0.0)

    assert batch.is_full(BatchPolicy(max_files=100, max_bytes=500, max_age=60))
    assert batch.size == 600


def test_batch_age_starts_with_the_first_item() -> None:
    """An empty batch never comes due; the clock starts at the first item."""
    batch: Batch[str] = Batch()
    policy = BatchPolicy(max_files=100, max_bytes=10**9, max_age=5.0)

    assert math.isinf(batch.seconds_left(policy, now=100.0))
    batch.add("a", 1, now=100.0)
    batch.add("b", 1, now=103.0)
    assert batch.seconds_left(policy, now=103.0) == 2.0
    assert batch.seconds_left(policy, now=110.0) == 0.0
    assert len(batch) == 2
