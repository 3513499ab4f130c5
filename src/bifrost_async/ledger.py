"""The ledger: every object's fate, and the claim that keeps two writers apart.

An object row is unique by (table, bucket, key, ETag) and moves through these states::

    claimed ──batch──▶ pending ──confirm──▶ committed
       │                  │
       │                  └──abort (never landed)──▶ row deleted, taken again later
       ├──quarantine──▶ quarantined (kept until someone asks to retry it)
       └──release──▶ row deleted, taken again later

A batch row is ``pending`` from just before its commit until the commit is confirmed or
found never to have landed. Whether a pending batch of a dead owner landed is decided by
the table's snapshot history (``commit.TableHandle.find_batch``), never by guessing.

The ledger is SQLite by default and PostgreSQL when several writers share it (its
tables and engine: ``ledger_tables.py``; what ``status`` reads: ``ledger_status.py``).
Calls block: run them in a worker thread. This module must not talk to S3 or the
catalog.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psutil
import sqlalchemy as sa

from .discovery import ObjectRef
from .errors import ConfigError, LedgerError, first_line
from .ledger_status import read_status
from .ledger_tables import (
    batches_table,
    check_sqlite_location,
    check_tables,
    create_engine,
    create_tables,
    describe_url,
    events_table,
    insert_ignoring_duplicates,
    objects_table,
    owners_table,
    passes_table,
)

__all__ = [
    "Ledger",
    "ObjectOutcome",
    "Owner",
    "batches_table",
    "objects_table",
]

_CHUNK = 2000

# Rows fetched at a time when the ledger's keys are streamed past a listing.
_STREAM_CHUNK = 50_000


@dataclass(frozen=True)
class Owner:
    """This process as the ledger knows it: an id, its host and pid."""

    owner_id: str
    host: str
    pid: int
    started_at: float

    @classmethod
    def for_this_process(cls) -> Owner:
        """A fresh owner id for the running process."""
        process = psutil.Process()
        return cls(
            owner_id=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=process.create_time(),
        )


@dataclass(frozen=True)
class ObjectOutcome:
    """What became of one object in a committed batch."""

    obj: ObjectRef
    rows: int


class Ledger:
    """The record of every object's fate, in SQLite or PostgreSQL."""

    def __init__(self, url: str, create: bool = True) -> None:
        """Open the ledger at ``url``, creating its tables unless ``create`` is false.

        Raises :class:`ConfigError` for a SQLite file whose folder does not exist (or,
        without ``create``, a ledger that does not exist yet) and :class:`LedgerError`
        for a database that cannot be reached.
        """
        self.url = url
        check_sqlite_location(url, create)
        try:
            self.engine = create_engine(url)
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"--state: the database driver for {describe_url(url)!r} is not "
                f"installed ({exc.name}); use sqlite:/// or postgresql://"
            ) from None

        try:
            if create:
                create_tables(self.engine)
            else:
                check_tables(self.engine, url)
        except sa.exc.DBAPIError as exc:
            self.engine.dispose()
            raise LedgerError(
                f"ledger {describe_url(url)!r} could not be opened: "
                f"{first_line(exc.orig)}"
            ) from exc

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction; a database failure inside it is a :class:`LedgerError`."""
        with translate_ledger_errors(self.url), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def connect(self) -> Iterator[sa.Connection]:
        """A connection; a database failure while it is used is a LedgerError."""
        with translate_ledger_errors(self.url), self.engine.connect() as conn:
            yield conn

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # -- owners ---------------------------------------------------------------------

    def register(self, owner: Owner, lease_seconds: float) -> None:
        """Announce an owner, with a lease that :meth:`renew` keeps alive."""
        with self.begin() as conn:
            conn.execute(
                owners_table.insert().values(
                    owner=owner.owner_id,
                    host=owner.host,
                    pid=owner.pid,
                    started_at=owner.started_at,
                    lease_until=time.time() + lease_seconds,
                )
            )

    def renew(self, owner: Owner, lease_seconds: float) -> None:
        """Extend an owner's lease."""
        with self.begin() as conn:
            conn.execute(
                owners_table.update()
                .where(owners_table.c.owner == owner.owner_id)
                .values(lease_until=time.time() + lease_seconds)
            )

    def retire(self, owner: Owner) -> None:
        """Remove an owner that ended cleanly (it holds no claims any more)."""
        with self.begin() as conn:
            conn.execute(
                owners_table.delete().where(owners_table.c.owner == owner.owner_id)
            )

    def dead_owners(self, me: Owner) -> set[str]:
        """Owners known to be gone: a dead process on this host, or an expired lease.

        Owners that appear in object or batch rows but have no owner row (retired, or
        from before a crash that lost the row) count as gone too.
        """
        now = time.time()
        with self.connect() as conn:
            # Holders first, owners second: an owner registers before it claims, so
            # every holder read here already has its row when the owners are read.
            # The other order took a writer that started between the two reads for
            # gone, and released the claims it was working on.
            holders = set(
                conn.execute(
                    sa.select(objects_table.c.owner)
                    .where(objects_table.c.state.in_(("claimed", "pending")))
                    .distinct()
                ).scalars()
            )
            rows = conn.execute(sa.select(owners_table)).all()

        alive: set[str] = set()
        for row in rows:
            if row.owner == me.owner_id:
                alive.add(row.owner)
            elif row.host == me.host and not is_process_alive(row.pid, row.started_at):
                continue
            elif row.lease_until >= now:
                alive.add(row.owner)

        known = {row.owner for row in rows}
        return (known | holders) - alive

    def forget_owners(self, owners: Iterable[str]) -> int:
        """Delete the rows of gone owners that hold nothing any more.

        Call after :meth:`release_claims_of` and after every pending batch of these
        owners was resolved; an owner that still holds a claim or a pending batch
        (another writer is resolving it) is kept.
        """
        owners = list(owners)
        if not owners:
            return 0

        holding = sa.select(objects_table.c.owner).where(
            objects_table.c.owner.in_(owners),
            objects_table.c.state.in_(("claimed", "pending")),
        )
        pending = sa.select(batches_table.c.owner).where(
            batches_table.c.owner.in_(owners), batches_table.c.state == "pending"
        )
        with self.begin() as conn:
            result = conn.execute(
                owners_table.delete().where(
                    owners_table.c.owner.in_(owners),
                    owners_table.c.owner.not_in(holding),
                    owners_table.c.owner.not_in(pending),
                )
            )

        return int(result.rowcount or 0)

    # -- selection and claims -------------------------------------------------------

    def select_new(
        self,
        table_name: str,
        listed: Sequence[ObjectRef],
        changed: str = "ignore",
    ) -> list[ObjectRef]:
        """Drop listed objects the ledger already holds, in one set operation.

        With ``changed="ignore"`` an object counts as known by its key alone (landed
        files are immutable); with ``"ingest"`` a new ETag makes it a new object.

        Memory stays in proportion to the listing, not to the ledger: the ledger's
        keys are streamed in chunks and struck off a set of the listed ones, never
        held all at once (a million entries are a few seconds and no extra 100 MB).
        """
        if not listed:
            return []

        with_etag = changed == "ingest"
        wanted: dict[str, set[Any]] = {}
        for obj in listed:
            wanted.setdefault(obj.bucket, set()).add(identity(obj, with_etag))

        for bucket, keys in wanted.items():
            for chunk in self.iter_known(table_name, bucket, with_etag):
                keys.difference_update(map(tuple, chunk) if with_etag else chunk)

        return [o for o in listed if identity(o, with_etag) in wanted[o.bucket]]

    def iter_known(
        self, table_name: str, bucket: str, with_etag: bool
    ) -> Iterator[list[Any]]:
        """The keys (or (key, ETag) pairs) the ledger holds in a bucket, in chunks.

        Rows are streamed (a server-side cursor on PostgreSQL), so only one chunk of
        :data:`_STREAM_CHUNK` rows is in memory at a time. The driver's cursor is used
        directly: SQLAlchemy's row objects would triple the time of a million rows.
        """
        columns = (
            [objects_table.c.key, objects_table.c.etag]
            if with_etag
            else [objects_table.c.key]
        )
        query = sa.select(*columns).where(
            objects_table.c.table_name == table_name,
            objects_table.c.bucket == bucket,
        )
        compiled = query.compile(dialect=self.engine.dialect)
        params: Any = compiled.params
        if compiled.positional:
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())

        with self.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            if self.engine.dialect.name == "postgresql":
                cursor = driver.cursor(name=f"bifrost_known_{uuid.uuid4().hex}")
                cursor.itersize = _STREAM_CHUNK
            else:
                cursor = driver.cursor()

            try:
                cursor.execute(str(compiled), params)
                while rows := cursor.fetchmany(_STREAM_CHUNK):
                    yield rows if with_etag else [row[0] for row in rows]
            finally:
                cursor.close()
                conn.rollback()

    def claim(
        self, table_name: str, owner: Owner, candidates: Sequence[ObjectRef]
    ) -> list[ObjectRef]:
        """Claim objects for this owner; return those won (others may hold some).

        A unique rule on (table, bucket, key, ETag) makes a second claim fail quietly.
        """
        claim_id = uuid.uuid4().hex
        now = time.time()
        rows = [
            {
                "table_name": table_name,
                "bucket": obj.bucket,
                "key": obj.key,
                "etag": obj.etag,
                "size": obj.size,
                "state": "claimed",
                "owner": owner.owner_id,
                "claim_id": claim_id,
                "updated_at": now,
            }
            for obj in candidates
        ]
        with self.begin() as conn:
            for chunk in chunked(rows, _CHUNK):
                conn.execute(
                    insert_ignoring_duplicates(self.engine, objects_table), chunk
                )

            won = conn.execute(
                sa.select(
                    objects_table.c.bucket,
                    objects_table.c.key,
                    objects_table.c.size,
                    objects_table.c.etag,
                ).where(objects_table.c.claim_id == claim_id)
            ).all()

        return sorted(ObjectRef(*row) for row in won)

    def release(self, table_name: str, owner: Owner, objs: Iterable[ObjectRef]) -> None:
        """Give up claims this owner holds, so a later pass takes the objects again."""
        with self.begin() as conn:
            for chunk in chunked(list(objs), _CHUNK):
                conn.execute(
                    objects_table.delete().where(
                        objects_table.c.table_name == table_name,
                        objects_table.c.owner == owner.owner_id,
                        objects_table.c.state == "claimed",
                        object_matches(chunk),
                    )
                )

    def release_claims_of(self, owners: Iterable[str]) -> int:
        """Delete the bare claims (no batch yet) of owners that are gone."""
        owners = list(owners)
        if not owners:
            return 0

        with self.begin() as conn:
            result = conn.execute(
                objects_table.delete().where(
                    objects_table.c.owner.in_(owners),
                    objects_table.c.state == "claimed",
                )
            )

        return int(result.rowcount or 0)

    def quarantine(
        self, table_name: str, owner: Owner, obj: ObjectRef, reason: str
    ) -> None:
        """Record that an object cannot be ingested, with the reason."""
        with self.begin() as conn:
            conn.execute(
                objects_table.update()
                .where(
                    objects_table.c.table_name == table_name,
                    objects_table.c.owner == owner.owner_id,
                    object_matches([obj]),
                )
                .values(
                    state="quarantined", reason=reason[:4000], updated_at=time.time()
                )
            )

    # -- batches --------------------------------------------------------------------

    def begin_batch(
        self,
        table_name: str,
        owner: Owner,
        batch_id: str,
        outcomes: Sequence[ObjectOutcome],
    ) -> None:
        """Record a batch as pending and attach its objects, in one transaction."""
        now = time.time()
        with self.begin() as conn:
            conn.execute(
                batches_table.insert().values(
                    batch_id=batch_id,
                    table_name=table_name,
                    owner=owner.owner_id,
                    state="pending",
                    objects=len(outcomes),
                    bytes=sum(o.obj.size for o in outcomes),
                    rows=sum(o.rows for o in outcomes),
                    created_at=now,
                )
            )
            for outcome in outcomes:
                conn.execute(
                    objects_table.update()
                    .where(
                        objects_table.c.table_name == table_name,
                        objects_table.c.owner == owner.owner_id,
                        object_matches([outcome.obj]),
                    )
                    .values(
                        state="pending",
                        batch_id=batch_id,
                        rows=outcome.rows,
                        updated_at=now,
                    )
                )

    def confirm_batch(self, batch_id: str, snapshot_id: int | None) -> None:
        """Mark a batch and its objects committed (``snapshot_id`` None: no rows)."""
        now = time.time()
        with self.begin() as conn:
            conn.execute(
                batches_table.update()
                .where(batches_table.c.batch_id == batch_id)
                .values(state="committed", snapshot_id=snapshot_id, committed_at=now)
            )
            conn.execute(
                objects_table.update()
                .where(objects_table.c.batch_id == batch_id)
                .values(state="committed", snapshot_id=snapshot_id, updated_at=now)
            )

    def abort_batch(self, batch_id: str) -> None:
        """Forget a batch that never landed; its objects are taken again later."""
        with self.begin() as conn:
            conn.execute(
                objects_table.delete().where(
                    objects_table.c.batch_id == batch_id,
                    objects_table.c.state == "pending",
                )
            )
            conn.execute(
                batches_table.update()
                .where(batches_table.c.batch_id == batch_id)
                .values(state="aborted")
            )

    def pending_batches(self, table_name: str, owners: Iterable[str]) -> list[str]:
        """Pending batches of the given owners on one table, oldest first."""
        query = (
            sa.select(batches_table.c.batch_id)
            .where(
                batches_table.c.table_name == table_name,
                batches_table.c.state == "pending",
                batches_table.c.owner.in_(list(owners)),
            )
            .order_by(batches_table.c.created_at)
        )
        with self.connect() as conn:
            return list(conn.execute(query).scalars())

    def oldest_pending(self, table_name: str) -> float | None:
        """When the table's oldest pending batch (of any owner) began, or None."""
        query = sa.select(sa.func.min(batches_table.c.created_at)).where(
            batches_table.c.table_name == table_name,
            batches_table.c.state == "pending",
        )
        with self.connect() as conn:
            oldest = conn.execute(query).scalar_one()

        return None if oldest is None else float(oldest)

    def count_open(self, table_name: str) -> int:
        """Objects of a table still claimed or pending by anyone."""
        query = sa.select(sa.func.count()).where(
            objects_table.c.table_name == table_name,
            objects_table.c.state.in_(("claimed", "pending")),
        )
        with self.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # -- passes, events and status --------------------------------------------------

    def record_pass(
        self, owner: Owner, started_at: float, summary: dict[str, Any]
    ) -> None:
        """Remember one finished pass (for ``status`` and the heartbeat)."""
        with self.begin() as conn:
            conn.execute(
                passes_table.insert().values(
                    owner=owner.owner_id,
                    started_at=started_at,
                    finished_at=time.time(),
                    summary=json.dumps(summary, sort_keys=True),
                )
            )
            # Keep the pass history bounded: it must not grow with uptime.
            cutoff = conn.execute(
                sa.select(passes_table.c.id)
                .order_by(passes_table.c.id.desc())
                .offset(1000)
            ).first()
            if cutoff is not None:
                conn.execute(
                    passes_table.delete().where(passes_table.c.id <= cutoff[0])
                )

    def record_event(self, action: str, detail: dict[str, Any]) -> None:
        """Append an operator action (such as a retry of quarantined objects)."""
        with self.begin() as conn:
            conn.execute(
                events_table.insert().values(
                    at=time.time(),
                    action=action,
                    detail=json.dumps(detail, sort_keys=True),
                )
            )

    def retry_quarantined(
        self, keys: Sequence[str] | None = None, table_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Put quarantined objects back: all, or those with these keys or this table.

        A key may be given as ``s3://bucket/key`` to name the bucket too. The objects
        are deleted from the ledger, so the next pass takes them again, and the
        action is recorded as a ``retry-quarantined`` event naming each object; a
        retry that matches nothing changes nothing and records nothing.
        """
        condition = objects_table.c.state == "quarantined"
        if table_name:
            condition = sa.and_(condition, objects_table.c.table_name == table_name)

        if keys:
            condition = sa.and_(condition, key_matches(keys))

        with self.begin() as conn:
            rows = (
                conn.execute(sa.select(objects_table).where(condition)).mappings().all()
            )
            conn.execute(objects_table.delete().where(condition))

        released = [
            {
                "table": r["table_name"],
                "bucket": r["bucket"],
                "key": r["key"],
                "reason": r["reason"],
            }
            for r in rows
        ]
        if not released:
            return released

        self.record_event(
            "retry-quarantined",
            {"keys": list(keys or []), "table": table_name, "objects": released},
        )
        return released

    def events(self, last: int = 20) -> list[dict[str, Any]]:
        """The latest operator actions, newest first."""
        query = sa.select(events_table).order_by(events_table.c.id.desc()).limit(last)
        with self.connect() as conn:
            rows = conn.execute(query).mappings().all()

        return [
            {"at": r["at"], "action": r["action"], "detail": json.loads(r["detail"])}
            for r in rows
        ]

    def status(self, last: int = 5) -> dict[str, Any]:
        """What the ledger holds: totals, quarantined objects, commits, passes, tables.

        See :func:`ledger_status.read_status` for the shape of the answer.
        """
        events = self.events(5)
        with translate_ledger_errors(self.url):
            return read_status(self.engine, events, last)


def key_matches(keys: Sequence[str]) -> Any:
    """A WHERE clause for objects named by key, or by ``s3://bucket/key``."""
    clauses = []
    for key in keys:
        if key.startswith("s3://"):
            bucket, _, name = key[len("s3://") :].partition("/")
            clauses.append(
                sa.and_(objects_table.c.bucket == bucket, objects_table.c.key == name)
            )
        else:
            clauses.append(objects_table.c.key == key)

    return sa.or_(*clauses)


def identity(obj: ObjectRef, with_etag: bool) -> Any:
    """What makes an object known within a bucket: its key, or its key and ETag."""
    return (obj.key, obj.etag) if with_etag else obj.key


def object_matches(objs: Sequence[ObjectRef]) -> Any:
    """A WHERE clause matching these exact objects by (bucket, key, ETag)."""
    columns = sa.tuple_(
        objects_table.c.bucket, objects_table.c.key, objects_table.c.etag
    )
    return columns.in_([(obj.bucket, obj.key, obj.etag) for obj in objs])


def is_process_alive(pid: int, started_at: float) -> bool:
    """Tell whether a pid on this host is still the process that registered.

    A reused pid (another start time) and a zombie (killed, not yet reaped by its
    parent) count as gone.
    """
    try:
        process = psutil.Process(pid)
        return bool(
            abs(process.create_time() - started_at) < 1.0
            and process.is_running()
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Split a sequence into slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextlib.contextmanager
def translate_ledger_errors(url: str) -> Iterator[None]:
    """Turn a database failure raised inside into a :class:`LedgerError`.

    The one place where SQLAlchemy's errors become ours once the ledger is open. A
    write whose outcome is unknown is never retried blindly: the run ends, and the
    next start recovers as after a crash.
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise LedgerError(
            f"ledger {describe_url(url)!r} failed: {first_line(exc.orig)}"
        ) from exc
