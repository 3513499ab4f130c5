"""Batching: when the files waiting for a table become one commit.

A batch closes on file count, bytes or age, whichever comes first. Pure: the committer
asks these questions and does the I/O itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["Batch", "BatchPolicy"]

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    """The three limits of one batch."""

    max_files: int = 200
    max_bytes: int = 512 * 1024**2
    max_age: float = 10.0


@dataclass
class Batch(Generic[T]):
    """Items waiting to be committed together, with their size and age."""

    items: list[T] = field(default_factory=list)
    size: int = 0
    opened: float | None = None

    def add(self, item: T, size: int, now: float | None = None) -> None:
        """Add one item of ``size`` bytes; the first item starts the clock."""
        if self.opened is None:
            self.opened = time.monotonic() if now is None else now

        self.items.append(item)
        self.size += size

    def is_full(self, policy: BatchPolicy) -> bool:
        """Whether the count or the bytes limit is reached."""
        return len(self.items) >= policy.max_files or self.size >= policy.max_bytes

    def seconds_left(self, policy: BatchPolicy, now: float | None = None) -> float:
        """Seconds until the batch is due by age (infinite while it is empty)."""
        if self.opened is None:
            return float("inf")

        now = time.monotonic() if now is None else now
        return max(0.0, self.opened + policy.max_age - now)

    def __len__(self) -> int:
        return len(self.items)
