"""Downloads: one object's bytes, retried with backoff, under a budget of bytes.

This module owns the byte budget and the rule that every response body is read or closed
on every path. It must not decide what the bytes mean; ``process.py`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .discovery import ObjectRef
from .errors import TransientError, TruncatedBodyError, first_line
from .s3 import translate_s3_errors

__all__ = [
    "ByteBudget",
    "Reservation",
    "RetryPolicy",
    "fetch_object",
    "fetch_range",
    "log_retry",
    "read_body",
]

logger = logging.getLogger(__name__)


class ByteBudget:
    """A counting limit on bytes in flight, shared by every download of a process.

    An object larger than the whole budget is admitted once nothing else is in flight,
    so a single big file never waits forever. Capacity may be lowered at run time (under
    memory pressure); holders keep what they have and new work waits.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.peak = 0
        self._changed = anyio.Event()

    async def acquire(self, size: int) -> int:
        """Wait until ``size`` bytes fit, take them, return the amount to release."""
        amount = max(1, min(size, self.capacity))
        while self.used and self.used + amount > self.capacity:
            await self._changed.wait()

        self.used += amount
        self.peak = max(self.peak, self.used)
        return amount

    def release(self, amount: int) -> None:
        """Give back what :meth:`acquire` returned; safe in a cancelled scope."""
        self.used -= amount
        self.wake_waiters()

    def set_capacity(self, capacity: int) -> None:
        """Change the capacity; waiters re-check at once."""
        self.capacity = max(1, capacity)
        self.wake_waiters()

    def wake_waiters(self) -> None:
        """Let every waiter re-check whether its bytes fit now."""
        changed, self._changed = self._changed, anyio.Event()
        changed.set()


class Reservation:
    """The bytes one download holds in a :class:`ByteBudget`; it may grow.

    Growing gives back what is held before it waits for the larger amount, so two
    growing downloads never wait on each other's bytes.
    """

    def __init__(self, budget: ByteBudget, amount: int) -> None:
        self.budget = budget
        self.amount = amount

    async def grow(self, size: int) -> None:
        """Hold ``size`` bytes (capped like any acquisition) instead of fewer."""
        if size <= self.amount:
            return

        self.release()
        self.amount = await self.budget.acquire(size)

    def release(self) -> None:
        """Give back everything held; safe to call again and in a cancelled scope."""
        self.budget.release(self.amount)
        self.amount = 0


class RetryPolicy:
    """How transient failures are retried: attempts and the cap on one wait."""

    def __init__(
        self,
        attempts: int = 5,
        max_wait: float = 10.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.attempts = attempts
        self.max_wait = max_wait
        self.on_retry = on_retry

    def retrying(self, kind: str) -> AsyncRetrying:
        """A tenacity loop for one operation of the given kind (``fetch``, ``list``)."""
        return AsyncRetrying(
            retry=retry_if_exception_type(TransientError),
            wait=wait_random_exponential(multiplier=0.2, max=self.max_wait),
            stop=stop_after_attempt(self.attempts),
            before_sleep=lambda state: self.note_retry(kind, state),
            reraise=True,
        )

    def note_retry(self, kind: str, state: RetryCallState) -> None:
        """Log one WARNING per scheduled retry and tell the metrics hook."""
        log_retry(kind, state)
        if self.on_retry is not None:
            self.on_retry(kind)


def log_retry(kind: str, state: RetryCallState) -> None:
    """Log a scheduled retry with its attempt number, wait and cause."""
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    logger.warning(
        "retry.scheduled kind=%s attempt=%d wait=%.2fs error=%s",
        kind,
        state.attempt_number,
        wait,
        first_line(error),
    )


async def fetch_object(client: Any, obj: ObjectRef, policy: RetryPolicy) -> bytes:
    """Download one object whole, retrying transient failures.

    The ETag is pinned with ``IfMatch``, so an object rewritten while it is read fails
    instead of mixing two versions. A body shorter than the listed size raises
    :class:`TruncatedBodyError` once retries are spent. Cancellation is safe: the body
    is closed on every path.
    """
    async for attempt in policy.retrying("fetch"):
        with attempt:
            return await fetch_once(client, obj)

    raise AssertionError("unreachable: tenacity re-raises the last error")


async def fetch_once(client: Any, obj: ObjectRef) -> bytes:
    """One GET of the object, checked against the listed size."""
    data = await read_body(client, obj)
    if len(data) != obj.size:
        raise TruncatedBodyError(
            f"{obj.uri}: body has {len(data)} bytes but the listing said {obj.size}"
        )

    logger.debug("fetch.complete uri=%s bytes=%d", obj.uri, len(data))
    return data


async def fetch_range(
    client: Any, obj: ObjectRef, start: int, end: int, policy: RetryPolicy
) -> bytes:
    """Download bytes ``start`` to ``end`` (exclusive) of one object, with retries.

    Pinned to the listed ETag like :func:`fetch_object`; a body of another length
    than asked for raises :class:`TruncatedBodyError` once retries are spent.
    """
    async for attempt in policy.retrying("fetch"):
        with attempt:
            return await fetch_range_once(client, obj, start, end)

    raise AssertionError("unreachable: tenacity re-raises the last error")


async def fetch_range_once(client: Any, obj: ObjectRef, start: int, end: int) -> bytes:
    """One ranged GET of the object, checked against the length asked for."""
    data = await read_body(client, obj, f"bytes={start}-{end - 1}")
    if len(data) != end - start:
        raise TruncatedBodyError(
            f"{obj.uri}: bytes {start}-{end - 1} came back as {len(data)} bytes"
        )

    logger.debug("fetch.range uri=%s start=%d bytes=%d", obj.uri, start, len(data))
    return data


async def read_body(
    client: Any, obj: ObjectRef, byte_range: str | None = None
) -> bytes:
    """One GET of the object (or of a ``Range``) pinned to its ETag; body closed."""
    with translate_s3_errors(obj.bucket, obj.key):
        request: dict[str, Any] = {"Bucket": obj.bucket, "Key": obj.key}
        if byte_range is not None:
            request["Range"] = byte_range

        if obj.etag:
            request["IfMatch"] = f'"{obj.etag}"'

        response = await client.get_object(**request)
        body = response["Body"]
        try:
            data: bytes = await body.read()
        finally:
            body.close()

    return data
