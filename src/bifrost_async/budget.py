"""Lifetime: the limits that end a run cleanly, and the stop request.

A run ends itself after a number of passes, downloaded bytes, resident memory or wall
time, whichever comes first, or when a signal asks it to. The pass loop asks
:meth:`Budget.check` before taking new work; the answer names the limit. Arithmetic is
plain and synchronous; only the stop event is async.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import anyio
import psutil

__all__ = ["Budget", "Limits", "current_rss"]

logger = logging.getLogger(__name__)

# Below this share of --max-rss the ingester takes full concurrency; above it, new
# downloads are throttled so memory stops rising before the limit forces an exit.
PRESSURE_THRESHOLD = 0.8


def current_rss() -> int:
    """The resident set size of this process, in bytes."""
    return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class Limits:
    """The four limits; ``None`` means unlimited."""

    max_iterations: int | None = None
    max_bytes: int | None = None
    max_rss: int | None = None
    max_uptime: float | None = None


@dataclass
class Budget:
    """What the run has used so far, and why it stops (``stop_reason``)."""

    limits: Limits
    started: float = field(default_factory=time.monotonic)
    passes: int = 0
    bytes_downloaded: int = 0
    stop_reason: str | None = None
    stop_event: anyio.Event = field(default_factory=anyio.Event)

    def add_bytes(self, count: int) -> None:
        """Count downloaded bytes."""
        self.bytes_downloaded += count

    def add_pass(self) -> None:
        """Count a finished pass."""
        self.passes += 1

    def request_stop(self, reason: str) -> None:
        """Ask the run to stop; the first reason given is kept."""
        if self.stop_reason is None:
            self.stop_reason = reason
            logger.info("budget.stop reason=%s", reason)

        self.stop_event.set()

    @property
    def is_stopping(self) -> bool:
        """Whether a limit was reached or a stop was requested."""
        return self.stop_reason is not None

    def check(self, rss: int | None = None) -> str | None:
        """Check every limit; on the first one reached, request a stop and name it."""
        reason = self.exceeded(rss if rss is not None else current_rss())
        if reason is not None:
            self.request_stop(reason)

        return self.stop_reason

    def exceeded(self, rss: int) -> str | None:
        """Name the first limit that is reached, or None."""
        limits = self.limits
        if limits.max_iterations is not None and self.passes >= limits.max_iterations:
            return "max-iterations"

        if limits.max_bytes is not None and self.bytes_downloaded >= limits.max_bytes:
            return "max-bytes"

        if limits.max_rss is not None and rss >= limits.max_rss:
            return "max-rss"

        if limits.max_uptime is not None and self.uptime >= limits.max_uptime:
            return "max-uptime"

        return None

    @property
    def uptime(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    def download_share(self, rss: int) -> float:
        """The share of full download concurrency to use at this RSS (0.1 to 1)."""
        if self.limits.max_rss is None:
            return 1.0

        used = rss / self.limits.max_rss
        if used <= PRESSURE_THRESHOLD:
            return 1.0

        headroom = max(0.0, 1.0 - used) / (1.0 - PRESSURE_THRESHOLD)
        return max(0.1, headroom)

    def remaining(self) -> dict[str, float | None]:
        """What is left of each limit (for metrics and the status line)."""
        limits = self.limits
        return {
            "iterations": None
            if limits.max_iterations is None
            else limits.max_iterations - self.passes,
            "bytes": None
            if limits.max_bytes is None
            else limits.max_bytes - self.bytes_downloaded,
            "uptime": None if limits.max_uptime is None else limits.max_uptime - self.uptime,
        }
