"""The committer: prepared objects into batches, each batch into one snapshot.

One committer per run serves every table; its :meth:`Committer.commit_loop` runs once
per table and pass. The ledger protocol of a batch (``ledger.py``): the batch is
recorded as pending with its objects, committed as one snapshot that carries the batch
id, then confirmed. A commit once begun is never interrupted: it runs shielded from
cancellation, and a commit that fails for good is looked up in the table's history
before the batch is aborted. This module must not fetch or decode objects.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from .batching import Batch, BatchPolicy
from .budget import Budget, release_arrow_memory
from .commit import TableHandle
from .errors import BifrostError, RunError
from .hooks import Hooks, PassReport
from .ledger import Ledger, ObjectOutcome, Owner
from .process import Prepared

__all__ = ["Committer"]

logger = logging.getLogger(__name__)


@dataclass
class Committer:
    """Batches and commits prepared objects, following the ledger protocol.

    ``in_ledger`` runs a ledger call off the event loop (shielded); ``is_dropping``
    says that a signal asked to drop what is not yet committing.
    """

    ledger: Ledger
    owner: Owner
    budget: Budget
    hooks: Hooks
    policy: BatchPolicy
    in_ledger: Callable[..., Awaitable[Any]]
    is_dropping: Callable[[], bool]

    async def commit_loop(
        self,
        table: str,
        handle: TableHandle,
        receive: MemoryObjectReceiveStream[Prepared],
        report: PassReport,
    ) -> None:
        """Collect prepared objects into batches and commit each when it is due."""
        batch: Batch[Prepared] = Batch()
        async with receive:
            while not self.is_dropping():
                item: Prepared | None = None
                with anyio.move_on_after(batch.seconds_left(self.policy)):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        break

                if item is not None:
                    batch.add(item, item.obj.size)

                if batch.items and (
                    batch.is_full(self.policy) or batch.seconds_left(self.policy) == 0
                ):
                    await self.flush(table, handle, batch, report)
                    batch = Batch()

        if batch.items and not self.is_dropping():
            await self.flush(table, handle, batch, report)

    async def flush(
        self,
        table: str,
        handle: TableHandle,
        batch: Batch[Prepared],
        report: PassReport,
    ) -> None:
        """Commit one batch: pending in the ledger, one snapshot, then confirmed.

        Shielded: once begun, a batch is committed and confirmed even if the pass is
        being cancelled. If the commit fails for good, the batch is aborted (when it
        did not land) and the run ends with an error.
        """
        with anyio.CancelScope(shield=True):
            await self.commit_batch(table, handle, batch, report)

        await anyio.to_thread.run_sync(release_arrow_memory)
        self.budget.check()

    async def commit_batch(
        self,
        table: str,
        handle: TableHandle,
        batch: Batch[Prepared],
        report: PassReport,
    ) -> None:
        """The body of :meth:`flush`."""
        batch_id = uuid.uuid4().hex
        outcomes = [ObjectOutcome(p.obj, p.rows) for p in batch.items]
        files = [data_file for p in batch.items for data_file in p.files]
        await self.in_ledger(
            self.ledger.begin_batch, table, self.owner, batch_id, outcomes
        )

        started = time.monotonic()
        snapshot: int | None = None
        if files:
            logger.debug(
                "commit.begin table=%s batch=%s files=%d", table, batch_id, len(files)
            )
            try:
                snapshot = await anyio.to_thread.run_sync(
                    handle.commit, batch_id, files
                )
            except BifrostError as exc:
                await self.abort_unlanded(handle, batch_id)
                raise RunError(
                    f"table {table!r}: batch {batch_id} not committed: {exc}"
                ) from exc

        await self.in_ledger(self.ledger.confirm_batch, batch_id, snapshot)
        seconds = time.monotonic() - started
        rows = sum(p.rows for p in batch.items)
        size = sum(p.obj.size for p in batch.items)
        report.ingested += len(batch.items)
        report.rows += rows
        report.bytes += size
        report.commits += 1 if files else 0
        logger.info(
            "commit.complete table=%s batch=%s snapshot=%s objects=%d rows=%d bytes=%d "
            "seconds=%.3f",
            table,
            batch_id,
            snapshot,
            len(batch.items),
            rows,
            size,
            seconds,
        )
        if self.hooks.on_commit is not None:
            self.hooks.on_commit(table, seconds, rows)

        if self.hooks.on_object is not None:
            for prepared in batch.items:
                self.hooks.on_object(table, "ingested", prepared.obj, prepared.rows)

    async def abort_unlanded(self, handle: TableHandle, batch_id: str) -> None:
        """After a failed commit: confirm it if it landed after all, else abort it."""
        try:
            snapshot = await anyio.to_thread.run_sync(handle.find_batch, batch_id)
        except Exception:  # the catalog is still unreachable: leave it pending
            logger.warning("commit.unresolved batch=%s", batch_id)
            return

        if snapshot is not None:
            await self.in_ledger(self.ledger.confirm_batch, batch_id, snapshot)
        else:
            await self.in_ledger(self.ledger.abort_batch, batch_id)
