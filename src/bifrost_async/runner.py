"""A whole run: open the client and the ledger, make passes, stop cleanly.

Owns signal handling and the lease heartbeat. SIGTERM or SIGINT stops new work at once,
drops downloads in flight, lets the commit in flight finish and ends the run with its
summary; a second signal, or the grace period running out, ends the process at once
(still without a partial commit: a commit is atomic, and the next start resolves a
pending batch from the table's history).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

import anyio
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .budget import Budget, Limits
from .config import Settings
from .errors import LedgerError, single_error
from .fetch import RetryPolicy, log_retry
from .hooks import Hooks, PassReport
from .ledger import Ledger, Owner
from .pipeline import Ingester
from .s3 import open_s3_client
from .signals import STOP_SIGNALS, ExitOnSignal

__all__ = ["RunResult", "run"]

logger = logging.getLogger(__name__)

# Exit status when a second signal or the grace period ends the process at once.
FORCED_EXIT = 130


@dataclass
class RunResult:
    """The outcome of one run, for the summary line and the exit code."""

    report: PassReport
    passes: int
    seconds: float
    stop_reason: str

    @property
    def mb_per_second(self) -> float:
        """Downloaded Parquet megabytes per second of the run."""
        return self.report.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The one summary line logged at INFO when the run ends."""
        r = self.report
        return (
            f"run.complete objects={r.ingested} quarantined={r.quarantined} "
            f"rows={r.rows} bytes={r.bytes} seconds={self.seconds:.2f} "
            f"mb_per_s={self.mb_per_second:.2f} "
            f"passes={self.passes} commits={r.commits} stopped_by={self.stop_reason}"
        )


async def run(settings: Settings, hooks: Hooks | None = None) -> RunResult:
    """Run the ingester until a limit, a drained backfill (``once``) or a signal."""
    started = time.monotonic()
    budget = Budget(
        Limits(
            max_iterations=settings.max_iterations,
            max_bytes=settings.max_bytes,
            max_rss=settings.max_rss,
            max_uptime=settings.max_uptime,
        )
    )
    owner = Owner.for_this_process()
    ledger = await anyio.to_thread.run_sync(open_ledger, settings.state)
    try:
        await anyio.to_thread.run_sync(ledger.register, owner, settings.lease_seconds)
        async with open_s3_client(
            settings.s3_endpoint, settings.concurrency + 4
        ) as client:
            ingester = Ingester(
                settings, client, ledger, owner, budget, hooks or Hooks()
            )
            if ingester.hooks.on_start is not None:
                ingester.hooks.on_start(ingester)

            report = await run_supervised(ingester, settings)

        await anyio.to_thread.run_sync(ledger.retire, owner)
    finally:
        ledger.close()

    return RunResult(
        report=report,
        passes=budget.passes,
        seconds=time.monotonic() - started,
        stop_reason=budget.stop_reason or "finished",
    )


def open_ledger(url: str, policy: RetryPolicy | None = None) -> Ledger:
    """Open the ledger, waiting out a database that is not reachable yet.

    Retries follow ``policy`` (the same attempts and cap as S3 requests): each logs a
    WARNING; once they are spent the :class:`LedgerError` ends the run (exit 1), and
    a supervisor starts it again later. A setting at fault (:class:`ConfigError`) is
    not retried.
    """
    policy = policy or RetryPolicy()
    retrying = Retrying(
        retry=retry_if_exception_type(LedgerError),
        wait=wait_random_exponential(multiplier=0.5, max=policy.max_wait),
        stop=stop_after_attempt(policy.attempts),
        before_sleep=lambda state: log_retry("ledger", state),
        reraise=True,
    )
    return retrying(Ledger, url)


async def run_supervised(ingester: Ingester, settings: Settings) -> PassReport:
    """Run the passes beside the signal watcher, the lease renewer and the uptime clock.

    A :class:`BifrostError` raised anywhere in the pass's task groups comes out as
    itself, not wrapped in exception groups, so the command can report it in one line.
    """
    try:
        return await supervise(ingester, settings)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


async def supervise(ingester: Ingester, settings: Settings) -> PassReport:
    """The body of :func:`run_supervised`."""
    async with anyio.create_task_group() as group:
        group.start_soon(watch_signals, ingester, settings.grace_period)
        group.start_soon(renew_lease, ingester, settings.lease_seconds)
        if settings.max_uptime is not None:
            group.start_soon(watch_uptime, ingester, settings.max_uptime)

        report = await ingester.run_passes()
        group.cancel_scope.cancel()

    return report


async def watch_signals(ingester: Ingester, grace_period: float) -> None:
    """First SIGTERM/SIGINT: stop gracefully; a second one or the grace period: exit."""
    signalled = False
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    try:
        with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
            async with anyio.create_task_group() as group:
                async for signum in signals:
                    if signalled:
                        logger.warning("run.forced reason=second signal")
                        os._exit(FORCED_EXIT)

                    signalled = True
                    ingester.budget.request_stop(
                        f"signal {signal.Signals(signum).name}"
                    )
                    ingester.drop_in_flight()
                    group.start_soon(force_exit_after, grace_period)
    finally:
        # asyncio puts back the default action (exit 143, no log) when the receiver
        # closes; put back whatever handled these signals before the run instead,
        # and where that was the command's own, make the next signal a second one.
        for signum, handler in previous.items():
            if isinstance(handler, ExitOnSignal) and signalled:
                handler = ExitOnSignal(FORCED_EXIT)

            if handler is not None:
                signal.signal(signum, handler)


async def force_exit_after(seconds: float) -> None:
    """End the process once the grace period is over."""
    await anyio.sleep(seconds)
    logger.warning("run.forced reason=grace period of %.0fs over", seconds)
    os._exit(FORCED_EXIT)


async def renew_lease(ingester: Ingester, lease_seconds: float) -> None:
    """Keep this owner's lease alive while the run works."""
    while True:
        await anyio.sleep(lease_seconds / 3)
        await ingester.in_ledger(ingester.ledger.renew, ingester.owner, lease_seconds)


async def watch_uptime(ingester: Ingester, max_uptime: float) -> None:
    """Request a stop when the wall-time limit is reached, even mid-pass."""
    await anyio.sleep(max(0.0, max_uptime - ingester.budget.uptime))
    ingester.budget.check()
