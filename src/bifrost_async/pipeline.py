"""The pass loop: list, select, claim, fetch, process, commit, record.

One task group per pass. Listing fans out per prefix; fetching fans out per object under
a limiter for count and a byte budget for bytes in flight; decoding and writing data
files run in worker threads; the committer (``committer.py``) turns each table's
prepared objects into batches, each visible in one snapshot. With ``--zero-copy
in-place`` an object's first GET reads only its footer (``inplace.py``); one that does
not qualify is then fetched whole, its share of the byte budget grown to its size
before that GET. The ledger protocol (claim, pending batch, commit, confirm) is
described in ``ledger.py``.

Stopping: when a limit is reached, no new objects are taken and what is in flight is
finished and committed. On a signal, downloads in flight are dropped and so are
prepared objects not yet in a committing batch (their claims are released, their data
files stay unreferenced orphans): only the commit in flight is finished. Either way the
in-flight commit is never interrupted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from .batching import BatchPolicy
from .budget import Budget, current_rss, download_limit
from .commit import TableHandle
from .committer import Committer
from .config import Route, Settings
from .discovery import ObjectRef, list_locations
from .errors import (
    BadInputError,
    ObjectChangedError,
    PermanentError,
    RunError,
    TransientError,
    TruncatedBodyError,
)
from .fetch import ByteBudget, Reservation, RetryPolicy, fetch_object, fetch_range
from .hooks import Hooks, PassReport
from .inplace import (
    FOOTER_READ,
    check_source_readable,
    is_in_place_candidate,
    prepare_in_place,
    read_footer_length,
)
from .ledger import Ledger, Owner
from .maintenance import expiry_horizon
from .process import Prepared, ProcessOptions, load_transform, prepare_object
from .quarantine import copy_to_quarantine

__all__ = ["Ingester"]

logger = logging.getLogger(__name__)


@dataclass
class RouteState:
    """Per-route things that live as long as the process.

    ``in_place``: qualifying objects are registered where they lie (``inplace.py``);
    ``source_checked``: the table's FileIO has been seen to read one of them.
    """

    route: Route
    handle: TableHandle
    transform: Any = None
    in_place: bool = False
    source_checked: bool = False


@dataclass
class Ingester:
    """One process's ingester: a client, a ledger, an owner id and a budget."""

    settings: Settings
    client: Any
    ledger: Ledger
    owner: Owner
    budget: Budget
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self) -> None:
        self.bytes_in_flight = ByteBudget(self.settings.max_inflight_bytes)
        self.fetch_slots = anyio.Semaphore(self.settings.concurrency)
        self.cpu_slots = anyio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self.ledger_slots = anyio.CapacityLimiter(1)
        self.retry_policy = RetryPolicy(on_retry=self.hooks.on_retry)
        self.batch_policy = BatchPolicy(
            max_files=self.settings.batch_max_files,
            max_bytes=self.settings.batch_max_bytes,
            max_age=self.settings.batch_max_age,
        )
        self.routes = [self.open_route(route) for route in self.settings.routes]
        self.process_options = ProcessOptions(
            lineage=self.settings.lineage,
            naive_timezone=self.settings.naive_timezone,
            stream_above=self.settings.stream_above,
            crash_markers=self.settings.crash_markers,
            zero_copy=self.settings.zero_copy,
        )
        self.fetch_groups: set[TaskGroup] = set()
        self.is_dropping = False
        self.committer = Committer(
            ledger=self.ledger,
            owner=self.owner,
            budget=self.budget,
            hooks=self.hooks,
            policy=self.batch_policy,
            in_ledger=self.in_ledger,
            is_dropping=lambda: self.is_dropping,
        )
        self.downloads_in_flight = 0
        self.peak_fetches = 0
        self.download_allowance = self.settings.concurrency
        self.download_done = anyio.Event()

    def open_route(self, route: Route) -> RouteState:
        """A route's table handle, transform and mode, for the life of the run.

        A table created for objects registered in place gets ``gc.enabled=false``
        (unless the route's ``table-properties`` say otherwise): its data files are the
        user's source objects, and no table maintenance or purge may delete them.
        """
        in_place = (
            self.settings.zero_copy == "in-place"
            and route.transform is None
            and not self.settings.lineage
        )
        created = {"gc.enabled": "false"} if in_place else {}
        return RouteState(
            route=route,
            handle=TableHandle(
                route.catalog,
                route.table,
                self.settings.catalog_properties,
                on_retry=self.hooks.on_retry,
                table_properties={**created, **dict(route.table_properties)},
            ),
            transform=load_transform(route.transform),
            in_place=in_place,
        )

    def drop_in_flight(self) -> None:
        """Cancel every download and processing step not yet handed to a committer.

        Their claims are released when their route's pass ends; a commit in flight
        goes on, but no new batch is begun.
        """
        self.is_dropping = True
        for group in list(self.fetch_groups):
            group.cancel_scope.cancel()

    async def in_ledger(self, call: Callable[..., Any], *args: Any) -> Any:
        """Run a ledger call in a worker thread, shielded from cancellation.

        A database failure ends the run with the ledger's :class:`LedgerError`.
        """
        with anyio.CancelScope(shield=True):
            return await anyio.to_thread.run_sync(
                call, *args, limiter=self.ledger_slots
            )

    # -- start-up and recovery -----------------------------------------------------

    async def recover(self) -> None:
        """Resolve pending batches and release claims of owners that are gone.

        A pending batch is confirmed when a snapshot of its table carries its batch id
        and aborted (its objects taken again) when none does; the table's history is
        the only judge. Claims without a batch are released, then the owners' rows
        are forgotten. Safe to run in several writers at once: every step is
        idempotent.
        """
        dead = await self.in_ledger(self.ledger.dead_owners, self.owner)
        if not dead:
            return

        for state in self.routes:
            batches = await self.in_ledger(
                self.ledger.pending_batches, state.route.table, dead
            )
            for batch_id in batches:
                snapshot = await anyio.to_thread.run_sync(
                    state.handle.find_batch_safely, batch_id
                )
                if snapshot is not None:
                    await self.in_ledger(self.ledger.confirm_batch, batch_id, snapshot)
                else:
                    await self.in_ledger(self.ledger.abort_batch, batch_id)

                logger.info(
                    "recover.batch table=%s batch=%s landed=%s",
                    state.route.table,
                    batch_id,
                    snapshot is not None,
                )

        released = await self.in_ledger(self.ledger.release_claims_of, dead)
        if released:
            logger.info("recover.claims released=%d", released)

        await self.in_ledger(self.ledger.forget_owners, dead)

    # -- one pass --------------------------------------------------------------------

    async def run_pass(self) -> PassReport:
        """List every source, then ingest what is new, route by route."""
        report = PassReport()
        await self.recover()
        for state in self.routes:
            await anyio.to_thread.run_sync(state.handle.load)

        locations = {
            (location, state.route.include)
            for state in self.routes
            for location in state.route.sources
        }
        listing = await self.list_with_retry(locations)
        if self.budget.passes == 0:
            for location in sorted({loc for loc, _ in locations}):
                if not listing[location]:
                    logger.warning(
                        "list.empty location=%s hint=no data objects under this "
                        "prefix yet; check the URI (a prefix, not an object key)",
                        location,
                    )

        async with anyio.create_task_group() as group:
            for state in self.routes:
                listed = [obj for loc in state.route.sources for obj in listing[loc]]
                group.start_soon(self.ingest_route, state, listed, report)

        return report

    async def list_with_retry(self, locations: Any) -> dict[Any, list[ObjectRef]]:
        """List all locations, retrying transient S3 failures per location."""
        return await list_locations(self.client, sorted(locations), self.retry_policy)

    async def ingest_route(
        self, state: RouteState, listed: list[ObjectRef], report: PassReport
    ) -> None:
        """Select, claim and ingest the new objects of one route.

        The route's counts go to ``report`` and to its per-table entry when it ends.
        """
        own = PassReport()
        try:
            await self.ingest_selected(state, listed, own)
        finally:
            report.add(own)
            report.tables.setdefault(state.route.table, PassReport()).add(own)

    async def ingest_selected(
        self, state: RouteState, listed: list[ObjectRef], report: PassReport
    ) -> None:
        """The body of :meth:`ingest_route`."""
        table = state.route.table
        fresh = await self.in_ledger(
            self.ledger.select_new, table, listed, self.settings.on_changed
        )
        report.listed += len(listed)
        report.new += len(fresh)
        if self.hooks.on_listed is not None:
            self.hooks.on_listed(table, len(listed), fresh)

        if not fresh or self.budget.is_stopping:
            return

        claimed = await self.in_ledger(self.ledger.claim, table, self.owner, fresh)
        logger.debug(
            "claim.complete table=%s new=%d won=%d", table, len(fresh), len(claimed)
        )
        send, receive = anyio.create_memory_object_stream[Prepared](
            max_buffer_size=self.settings.concurrency
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(
                    self.committer.commit_loop,
                    state.route.table,
                    state.handle,
                    receive,
                    report,
                )
                async with send:
                    await self.feed(state, claimed, send, report)
        finally:
            # Whatever was claimed and neither committed nor quarantined goes back.
            await self.in_ledger(self.ledger.release, table, self.owner, claimed)

    async def feed(
        self,
        state: RouteState,
        claimed: list[ObjectRef],
        send: MemoryObjectSendStream[Prepared],
        report: PassReport,
    ) -> None:
        """Start a fetch per object, bounded by count and bytes, until told to stop.

        Every limit is checked before an object is taken. Near ``max_rss`` fewer
        downloads run at once (:meth:`wait_for_memory_headroom`). While the table
        does not exist, objects are taken one at a time (see below).
        """
        async with anyio.create_task_group() as fetches:
            self.fetch_groups.add(fetches)
            for obj in claimed:
                if self.budget.check() is not None:
                    break

                await self.fetch_slots.acquire()
                await self.wait_for_memory_headroom()
                first_read = self.plan_first_read(state, obj)
                reserved = await self.bytes_in_flight.acquire(first_read)
                if self.budget.is_stopping:
                    self.fetch_slots.release()
                    self.bytes_in_flight.release(reserved)
                    break

                self.budget.add_bytes(first_read)
                self.downloads_in_flight += 1
                self.peak_fetches = max(self.peak_fetches, self.downloads_in_flight)
                task = (state, obj, reserved, send.clone(), report)
                if state.handle.table is None:
                    # The table does not exist yet: objects go one at a time, in key
                    # order, until one creates it, so the first good file in listing
                    # order decides the table's schema, not whichever finishes first.
                    await self.fetch_and_prepare(*task)
                else:
                    fetches.start_soon(self.fetch_and_prepare, *task)

        self.fetch_groups.discard(fetches)

    def plan_first_read(self, state: RouteState, obj: ObjectRef) -> int:
        """The bytes an object's first GET asks for: its tail in place, else all."""
        if state.in_place and is_in_place_candidate(obj):
            return min(obj.size, FOOTER_READ)

        return obj.size

    async def wait_for_memory_headroom(self) -> None:
        """Wait while the downloads in flight reach what memory pressure allows."""
        while True:
            # Reading the RSS costs a /proc read per object; without a limit it is moot.
            rss = current_rss() if self.budget.limits.max_rss is not None else 0
            share = self.budget.download_share(rss)
            allowance = download_limit(self.settings.concurrency, share)
            if allowance != self.download_allowance:
                self.note_pressure(allowance, rss)

            if self.downloads_in_flight < allowance or self.budget.is_stopping:
                return

            await self.download_done.wait()

    def note_pressure(self, allowance: int, rss: int) -> None:
        """Log a change of the download allowance under memory pressure."""
        if allowance < self.download_allowance:
            logger.warning(
                "budget.pressure rss=%d max_rss=%s downloads=%d",
                rss,
                self.budget.limits.max_rss,
                allowance,
            )
        else:
            logger.info("budget.relieved rss=%d downloads=%d", rss, allowance)

        self.download_allowance = allowance
        self.bytes_in_flight.set_capacity(
            self.settings.max_inflight_bytes * allowance // self.settings.concurrency
        )

    def finish_download(self) -> None:
        """Count a download as done and wake the feeder if it waits for headroom."""
        self.downloads_in_flight -= 1
        done, self.download_done = self.download_done, anyio.Event()
        done.set()

    async def fetch_and_prepare(
        self,
        state: RouteState,
        obj: ObjectRef,
        reserved: int,
        send: MemoryObjectSendStream[Prepared],
        report: PassReport,
    ) -> None:
        """Download and process one object, then hand it to the committer.

        ``reserved`` is what the feeder took from the byte budget for the first GET;
        a later, larger GET of the same object grows it first.
        """
        table = state.route.table
        async with send:
            hold = Reservation(self.bytes_in_flight, reserved)
            try:
                prepared = await self.prepare(state, obj, hold, report)
            except (BadInputError, TruncatedBodyError) as exc:
                await self.quarantine(table, obj, str(exc), report)
                return
            except ObjectChangedError as exc:
                # Gone or rewritten since the listing: its claim goes back when the
                # pass ends, and the next listing shows what is there now.
                logger.warning("object.changed uri=%s error=%s", obj.uri, exc)
                return
            except (TransientError, PermanentError) as exc:
                report.failed += 1
                report.first_failure = report.first_failure or str(exc)
                logger.warning("object.failed uri=%s error=%s", obj.uri, exc)
                return
            finally:
                self.fetch_slots.release()
                hold.release()
                self.finish_download()

            await send.send(prepared)

    async def prepare(
        self, state: RouteState, obj: ObjectRef, hold: Reservation, report: PassReport
    ) -> Prepared:
        """Prepare one object: in place from its footer where it can be, else whole.

        In place, an object that does not qualify is downloaded after the footer
        decided (unless the footer read already held all of it), with its bytes
        counted against the budget and the byte limit only then.
        """
        if not (state.in_place and is_in_place_candidate(obj)):
            return await self.download_and_process(state, obj, report)

        tail = await self.fetch_footer(obj, hold, report)
        prepared = await anyio.to_thread.run_sync(
            prepare_in_place,
            tail,
            obj,
            state.handle,
            state.route,
            self.process_options,
            limiter=self.cpu_slots,
        )
        if prepared is not None:
            if not state.source_checked:
                await anyio.to_thread.run_sync(check_source_readable, state.handle, obj)
                state.source_checked = True

            return prepared

        if len(tail) == obj.size:
            return await self.process(state, obj, tail)

        await hold.grow(obj.size)
        self.budget.add_bytes(obj.size)
        return await self.download_and_process(state, obj, report)

    async def fetch_footer(
        self, obj: ObjectRef, hold: Reservation, report: PassReport
    ) -> bytes:
        """The end of an object that holds its whole footer: one ranged GET, or two."""
        start = obj.size - min(obj.size, FOOTER_READ)
        tail = await fetch_range(self.client, obj, start, obj.size, self.retry_policy)
        needed = read_footer_length(tail, obj) + 8
        if needed > len(tail):
            await hold.grow(needed)
            self.budget.add_bytes(needed - len(tail))
            head = await fetch_range(
                self.client, obj, obj.size - needed, start, self.retry_policy
            )
            tail = head + tail

        report.fetched += len(tail)
        return tail

    async def download_and_process(
        self, state: RouteState, obj: ObjectRef, report: PassReport
    ) -> Prepared:
        """Download an object whole and process it (the normal path)."""
        data = await fetch_object(self.client, obj, self.retry_policy)
        report.fetched += len(data)
        return await self.process(state, obj, data)

    async def process(self, state: RouteState, obj: ObjectRef, data: bytes) -> Prepared:
        """Turn an object's bytes into data files in a worker thread."""
        prepared: Prepared = await anyio.to_thread.run_sync(
            prepare_object,
            data,
            obj,
            state.handle,
            state.route,
            state.transform,
            self.process_options,
            limiter=self.cpu_slots,
        )
        return prepared

    async def quarantine(
        self, table: str, obj: ObjectRef, reason: str, report: PassReport
    ) -> None:
        """Record an object as quarantined; the loop goes on.

        With a quarantine prefix the object is first copied there (before the ledger
        says quarantined, so a crash in between only repeats the copy).
        """
        if self.settings.quarantine_prefix:
            await copy_to_quarantine(
                self.client, obj, reason, self.settings.quarantine_prefix, table
            )

        await self.in_ledger(self.ledger.quarantine, table, self.owner, obj, reason)
        report.quarantined += 1
        logger.warning("object.quarantined uri=%s reason=%s", obj.uri, reason)
        if self.hooks.on_object is not None:
            self.hooks.on_object(table, "quarantined", obj, 0)

    # -- the loop --------------------------------------------------------------------

    async def run_passes(self) -> PassReport:
        """Make passes until a limit or a stop request ends the run.

        With ``once`` set, passes go on until one finds nothing new and no other
        writer holds objects of these tables; then the run ends.
        """
        totals = PassReport()
        while not self.budget.is_stopping:
            started = time.time()
            report = await self.run_pass()
            totals.add(report)
            self.budget.add_pass()
            await self.in_ledger(
                self.ledger.record_pass, self.owner, started, asdict(report)
            )
            self.touch_heartbeat()
            await self.expire_snapshots()
            if self.hooks.on_pass is not None:
                self.hooks.on_pass(report)

            logger.debug(
                "pass.complete %s",
                " ".join(f"{k}={v}" for k, v in asdict(report).items()),
            )
            if report.failed:
                raise RunError(
                    f"{report.failed} object(s) could not be fetched; first: "
                    f"{report.first_failure}"
                )

            self.budget.check(current_rss())
            if self.settings.once and report.new == 0:
                if await self.is_drained():
                    self.budget.request_stop("drained")
                    break

                await self.sleep(min(1.0, self.settings.poll_interval))
                continue

            if not self.settings.once:
                await self.sleep(self.settings.poll_interval)

        return totals

    async def expire_snapshots(self) -> None:
        """Expire each table's old snapshots, if ``expire_snapshots_after`` is set."""
        after = self.settings.expire_snapshots_after
        if after is None:
            return

        for state in self.routes:
            if state.handle.table is None:
                continue

            oldest = await self.in_ledger(self.ledger.oldest_pending, state.route.table)
            horizon = expiry_horizon(
                time.time(), after, oldest, self.settings.lease_seconds
            )
            await anyio.to_thread.run_sync(state.handle.expire_snapshots, horizon)

    async def is_drained(self) -> bool:
        """Whether no writer holds claimed or pending objects of these tables."""
        for state in self.routes:
            if await self.in_ledger(self.ledger.count_open, state.route.table):
                return False

        return True

    async def sleep(self, seconds: float) -> None:
        """Sleep between passes, waking at once on a stop request."""
        with anyio.move_on_after(seconds):
            await self.budget.stop_event.wait()

    def touch_heartbeat(self) -> None:
        """Touch the heartbeat file, if one is configured, after each pass."""
        path = self.settings.heartbeat_file
        if path:
            with open(path, "a"):
                os.utime(path)
