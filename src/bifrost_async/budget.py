"""Lifetime: the limits that end a run cleanly, and the stop request.

A run ends itself after a number of passes, downloaded bytes, resident memory or wall
time, whichever comes first, or when a signal asks it to. The pass loop asks
:meth:`Budget.check` before it takes a new object, after every commit and after every
pass; the answer names the limit. Near ``max_rss`` the pipeline takes fewer downloads
at once (:meth:`Budget.download_share`, :func:`download_limit`), so memory stops
rising before the limit forces an exit. Arithmetic is plain and synchronous; only the
stop event is async.

A run always takes at least one object before the memory limit can stop it: a limit
below the resident size of an idle process then still moves one object per restart
instead of restarting without progress.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field

import anyio
import psutil
import pyarrow as pa

__all__ = [
    "Budget",
    "Limits",
    "current_rss",
    "download_limit",
    "release_arrow_memory",
]

logger = logging.getLogger(__name__)


def load_glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  # raises AttributeError on other C libraries
    except (OSError, AttributeError):
        return None

    return libc


_GLIBC = load_glibc()

# Below this share of --max-rss the ingester takes full concurrency; above it, new
# downloads are throttled so memory stops rising before the limit forces an exit.
PRESSURE_THRESHOLD = 0.8


def current_rss() -> int:
    """The resident set size of this process, in bytes."""
    return int(psutil.Process().memory_info().rss)


def release_arrow_memory() -> None:
    """Hand memory that allocators keep pooled back to the operating system.

    mimalloc and jemalloc (Arrow's pools) keep freed pages for reuse; after a batch of
    big files that is hundreds of MB the process no longer needs. glibc's malloc keeps
    freed memory below its heap top too, and the buffers of every commit grow with the
    table's metadata, so it is trimmed as well (``malloc_trim``, glibc only). Cheap
    when nothing is pooled.
    """
    pa.default_memory_pool().release_unused()
    if _GLIBC is not None:
        _GLIBC.malloc_trim(0)


def download_limit(concurrency: int, share: float) -> int:
    """How many downloads may be in flight at ``share`` of full concurrency (min 1)."""
    return max(1, min(concurrency, int(concurrency * share)))


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
    objects_taken: int = 0
    stop_reason: str | None = None
    stop_event: anyio.Event = field(default_factory=anyio.Event)

    def add_bytes(self, count: int) -> None:
        """Count the bytes of one object taken for download."""
        self.bytes_downloaded += count
        self.objects_taken += 1

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
        if rss is None:
            # A /proc read per object is moot without a limit.
            rss = current_rss() if self.limits.max_rss is not None else 0

        reason = self.exceeded(rss)
        if reason is not None:
            self.request_stop(reason)

        return self.stop_reason

    def exceeded(self, rss: int) -> str | None:
        """Name the first limit that is reached, or None.

        The memory limit counts only once this run has taken an object (see the module
        docstring).
        """
        limits = self.limits
        if limits.max_iterations is not None and self.passes >= limits.max_iterations:
            return "max-iterations"

        if limits.max_bytes is not None and self.bytes_downloaded >= limits.max_bytes:
            return "max-bytes"

        if limits.max_rss is not None and self.objects_taken and rss >= limits.max_rss:
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
            "uptime": None
            if limits.max_uptime is None
            else limits.max_uptime - self.uptime,
        }
