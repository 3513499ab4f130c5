"""The respawn policy under circusd: a planned exit restarts at once, a failure waits.

circusd respawns an exited worker at its next check (``check_delay``), whatever the
exit code, so a worker that fails at start-up (a configuration error exits 78) would
restart about once a second for ever. circus's own flapping plugin is no cure here: it
stops the watcher with a command that circusd refuses (``ConflictError``) while a
``warmup_delay`` runs, so it misses most crash loops.

:func:`after_reap` is a circus watcher hook (``hooks.after_reap`` in ``circus.ini``).
After an exit with any code but 0 it holds one process slot of the watcher back for
:func:`hold_seconds` (5 s, then 10, 20, 40 and 60 s from then on); an exit with code 0
(a budget reached, a signal) or ten quiet minutes start the count again. It holds the
slot by lowering the watcher's ``numprocesses`` and raising it again on circusd's
event loop, so circusd never blocks and keeps answering ``circusctl``.

This module runs inside circusd: it must not block and imports only the standard
library (and tornado, which circus brings, when the hook is called).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["FailureRecord", "after_reap", "hold_seconds", "next_failure_count"]

# A child of circus's logger, so the events land in circusd's own log.
logger = logging.getLogger("circus.bifrost_async.respawn")

HOLD_FIRST = 5.0
HOLD_MAX = 60.0
QUIET_RESET = 600.0


@dataclass
class FailureRecord:
    """Failed exits of one watcher in a row, and the process slots held back."""

    count: int = 0
    last: float = 0.0
    held: int = 0


_records: dict[str, FailureRecord] = {}


def hold_seconds(failures: int) -> float:
    """How long to hold a respawn back after this many failed exits in a row."""
    if failures <= 0:
        return 0.0

    return float(min(HOLD_MAX, HOLD_FIRST * 2 ** min(failures - 1, 16)))


def next_failure_count(
    count: int, last: float, now: float, exit_code: int | None
) -> int:
    """The failures-in-a-row count after an exit with ``exit_code`` at ``now``.

    Code 0 is a planned exit and resets the count; so does a failure that comes more
    than ten minutes after the previous one. An unknown code counts as a failure.
    """
    if exit_code == 0:
        return 0

    if count and now - last > QUIET_RESET:
        return 1

    return count + 1


def after_reap(
    watcher: Any, arbiter: Any, hook_name: str, exit_code: int | None = None, **_: Any
) -> bool:
    """circus ``after_reap`` hook: hold the respawn back after a failed exit."""
    if watcher.is_stopping() or watcher.is_stopped():
        return True

    record = _records.setdefault(watcher.name, FailureRecord())
    now = time.monotonic()
    record.count = next_failure_count(record.count, record.last, now, exit_code)
    record.last = now
    seconds = hold_seconds(record.count)
    if seconds > 0 and watcher.numprocesses > 0:
        hold_slot(watcher, record, seconds)
        logger.warning(
            "respawn.held watcher=%s exit_code=%s failures=%d seconds=%.0f",
            watcher.name,
            exit_code,
            record.count,
            seconds,
        )

    return True


def hold_slot(watcher: Any, record: FailureRecord, seconds: float) -> None:
    """Lower ``numprocesses`` by one and schedule raising it after ``seconds``."""
    from tornado.ioloop import IOLoop

    watcher.numprocesses -= 1
    record.held += 1
    IOLoop.current().call_later(seconds, release_slot, watcher, record)


def release_slot(watcher: Any, record: FailureRecord) -> None:
    """Give a held slot back; circusd spawns the process at its next check."""
    if record.held:
        record.held -= 1
        watcher.numprocesses += 1
