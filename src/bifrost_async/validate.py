"""A dry run: what a run would ingest, and whether each new file fits its table.

Lists the sources, drops what the ledger already holds, reads each new object's
Parquet footer (a ranged GET of the tail, or the whole object when it is small) and
checks its schema against the table's with the same rules a run applies
(``conform.conform_table`` on the footer's empty table, so no rule is repeated here).
Each object gets a verdict: it would ``land``, ``create`` the table, ``evolve`` it
(naming the new columns) or be quarantined (naming why); ``unchecked`` when S3 kept
failing. Objects are judged in key order and an evolution counts for the objects after
it, as in a run.

Nothing is committed and the ledger is only read (a SQLite ledger that does not exist
yet is not created). Limits: values are not read, so a value that does not fit (an
unsigned integer beyond the signed range, a null in a required column) is only caught
where the footer's statistics show it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from .commit import TableHandle
from .config import Route, Settings
from .conform import (
    check_column_names,
    conform_table,
    drop_index_columns,
    normalize_schema,
)
from .discovery import ObjectRef, list_locations
from .errors import BadInputError, BifrostError, ConformError, UnreadableFileError
from .evolution import plan_schema
from .fetch import RetryPolicy, read_body
from .inplace import FOOTER_READ
from .ledger import Ledger
from .process import apply_transform, load_transform, refuse_non_parquet
from .s3 import open_s3_client

__all__ = ["ObjectVerdict", "TableCheck", "judge_footer", "read_footer", "validate"]

logger = logging.getLogger(__name__)

Action = Literal["land", "create", "evolve", "quarantine", "unchecked"]

# Objects whose footers are held in memory at once.
CHUNK = 1000
MAGIC = b"PAR1"


@dataclass
class ObjectVerdict:
    """What a run would do with one object."""

    uri: str
    bucket: str
    key: str
    size: int
    action: Action
    rows: int | None = None
    columns: list[str] = field(default_factory=list)
    reason: str | None = None


@dataclass
class TableCheck:
    """The dry run of one route: what is listed, new, and each new object's verdict."""

    table: str
    exists: bool
    listed: int
    new: int
    objects: list[ObjectVerdict] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many objects got each verdict."""
        counts = dict.fromkeys(get_args(Action), 0)
        for verdict in self.objects:
            counts[verdict.action] += 1

        return counts

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "exists": self.exists,
            "listed": self.listed,
            "new": self.new,
            "checked": len(self.objects),
            "counts": self.counts(),
            "objects": [asdict(v) for v in self.objects],
        }


@dataclass
class Footer:
    """What an object's footer says: its Arrow schema and row count."""

    schema: pa.Schema
    rows: int
    metadata: pq.FileMetaData


async def validate(
    settings: Settings, limit: int | None = None, chunk: int = CHUNK
) -> list[TableCheck]:
    """Check every route's new objects (the first ``limit`` of each, if given).

    Footers are read ``chunk`` objects at a time.
    """
    known = await anyio.to_thread.run_sync(open_ledger_if_present, settings.state)
    policy = RetryPolicy()
    try:
        async with open_s3_client(
            settings.s3_endpoint, settings.concurrency + 4
        ) as client:
            locations = {
                (location, route.include)
                for route in settings.routes
                for location in route.sources
            }
            listing = await list_locations(client, sorted(locations), policy)
            checks = []
            for route in settings.routes:
                listed = [obj for loc in route.sources for obj in listing[loc]]
                checks.append(
                    await check_route(
                        settings, route, client, known, listed, limit, chunk
                    )
                )
    finally:
        if known is not None:
            known.close()

    return checks


def open_ledger_if_present(url: str) -> Ledger | None:
    """The ledger, or None for a SQLite file that does not exist (nothing known)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:" and not Path(path).exists():
            return None

    return Ledger(url)


async def check_route(
    settings: Settings,
    route: Route,
    client: Any,
    ledger: Ledger | None,
    listed: list[ObjectRef],
    limit: int | None,
    chunk: int = CHUNK,
) -> TableCheck:
    """Select a route's new objects, read their footers and judge them in key order."""
    fresh = sorted(listed)
    if ledger is not None:
        fresh = sorted(
            await anyio.to_thread.run_sync(
                ledger.select_new, route.table, listed, settings.on_changed
            )
        )

    handle = TableHandle(route.catalog, route.table, settings.catalog_properties)
    table = await anyio.to_thread.run_sync(handle.load)
    check = TableCheck(route.table, table is not None, len(listed), len(fresh))
    chosen = fresh[:limit] if limit is not None else fresh
    target = table.schema().as_arrow() if table is not None else None
    transform = load_transform(route.transform)
    # Footers are read a chunk at a time and dropped once judged, so memory stays
    # bounded however many objects are new.
    for start in range(0, len(chosen), chunk):
        objs = chosen[start : start + chunk]
        footers = await read_footers(client, objs, settings.concurrency)
        verdicts, target = await anyio.to_thread.run_sync(
            judge_chunk, objs, footers, target, route, transform, settings
        )
        check.objects.extend(verdicts)

    return check


def judge_chunk(
    objs: list[ObjectRef],
    footers: dict[ObjectRef, Footer | BifrostError],
    target: pa.Schema | None,
    route: Route,
    transform: Any,
    settings: Settings,
) -> tuple[list[ObjectVerdict], pa.Schema | None]:
    """Judge objects in key order; returns their verdicts and the schema after them."""
    verdicts = []
    for obj in objs:
        footer = footers[obj]
        if isinstance(footer, Footer):
            verdict, target = judge_footer(
                obj, footer, target, route, transform, settings.naive_timezone
            )
        elif isinstance(footer, BadInputError):
            verdict = make_verdict(obj, "quarantine", reason=str(footer))
        else:
            verdict = make_verdict(obj, "unchecked", reason=str(footer))

        verdicts.append(verdict)

    return verdicts, target


async def read_footers(
    client: Any, objs: list[ObjectRef], concurrency: int
) -> dict[ObjectRef, Footer | BifrostError]:
    """Each object's footer, or the error that kept it from being read.

    A :class:`BadInputError` means the file itself is bad; any other error means S3
    kept failing (after retries) and the object stays unchecked.
    """
    results: dict[ObjectRef, Footer | BifrostError] = {}
    pending = iter(objs)
    policy = RetryPolicy()

    async def read_some() -> None:
        for obj in pending:  # workers share one iterator: each object is read once
            try:
                results[obj] = await read_footer(client, obj, policy)
            except BifrostError as exc:
                results[obj] = exc

    async with anyio.create_task_group() as group:
        for _ in range(min(concurrency, len(objs))):
            group.start_soon(read_some)

    return results


async def read_footer(client: Any, obj: ObjectRef, policy: RetryPolicy) -> Footer:
    """Fetch and parse one object's footer; a bad file raises :class:`BadInputError`.

    A small object is fetched whole; a larger one by its last 64 KiB, and once more by
    the exact footer length when the footer is larger than that.
    """
    if obj.size == 0:
        raise UnreadableFileError(f"{obj.uri}: object has 0 bytes, not a Parquet file")

    whole = obj.size <= FOOTER_READ
    data = await fetch_tail(client, obj, policy, None if whole else FOOTER_READ)
    if not whole and data[-4:] == MAGIC:
        length = int.from_bytes(data[-8:-4], "little") + 8
        if len(data) < length < obj.size:
            data = await fetch_tail(client, obj, policy, length)

    return parse_footer(data, obj, whole)


async def fetch_tail(
    client: Any, obj: ObjectRef, policy: RetryPolicy, tail: int | None
) -> bytes:
    """The object's last ``tail`` bytes (all for None), retrying transient faults."""
    byte_range = None if tail is None else f"bytes=-{tail}"
    async for attempt in policy.retrying("fetch"):
        with attempt:
            data = await read_body(client, obj, byte_range)
            logger.debug("validate.fetched uri=%s bytes=%d", obj.uri, len(data))
            return data

    raise AssertionError("unreachable: tenacity re-raises the last error")


def parse_footer(data: bytes, obj: ObjectRef, whole: bool) -> Footer:
    """Read the schema and row count from a whole object or its tail."""
    refuse_non_parquet(obj, data[:4] if whole else None, data[-4:])
    length = int.from_bytes(data[-8:-4], "little") + 8
    if length > len(data) or length + 4 > obj.size:
        raise UnreadableFileError(
            f"{obj.uri}: footer length {length} does not fit an object of "
            f"{obj.size} bytes (truncated?)"
        )

    # The footer alone, behind a leading magic, is a file pyarrow can open: column
    # data is never read, so the missing pages do not matter.
    buffer = data if whole else MAGIC + data[-length:]
    try:
        parquet = pq.ParquetFile(
            pa.BufferReader(buffer), coerce_int96_timestamp_unit="us"
        )
        return Footer(parquet.schema_arrow, parquet.metadata.num_rows, parquet.metadata)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as exc:
        raise UnreadableFileError(
            f"{obj.uri}: Parquet footer unreadable: {exc}"
        ) from exc


def judge_footer(
    obj: ObjectRef,
    footer: Footer,
    target: pa.Schema | None,
    route: Route,
    transform: Any = None,
    naive_timezone: str | None = None,
) -> tuple[ObjectVerdict, pa.Schema | None]:
    """The verdict for one object, and the table's schema after it.

    Mirrors ``process.prepare_object``: index columns dropped, the transform applied
    (to the footer's empty table), a 0-row file lands without a table, a missing table
    is created from the first file, new columns evolve it under ``add``.
    """
    try:
        empty = drop_index_columns(footer.schema.empty_table())
        if transform is not None:
            empty = drop_index_columns(apply_transform(empty, transform, obj))

        check_column_names(empty.schema)
        if footer.rows == 0:
            return make_verdict(
                obj, "land", rows=0, reason="0 rows: no snapshot"
            ), target

        action: Action = "land"
        columns: list[str] = []
        if target is None:
            action, target = "create", table_schema(normalize_schema(empty.schema))
            columns = list(target.names)
            if not columns:
                raise ConformError("no column has a value type; cannot create a table")

        conformed = conform_table(empty, target, route.evolution, naive_timezone)
        if conformed.new_fields:
            action = "evolve" if action == "land" else action
            columns = [f.name for f in conformed.new_fields]
            target = table_schema(plan_schema(target, conformed.new_fields))
            conformed = conform_table(empty, target, route.evolution, naive_timezone)

        check_integer_ranges(footer.metadata, target)
    except BadInputError as exc:
        reason = str(exc) if str(exc).startswith(obj.uri) else f"{obj.uri}: {exc}"
        return make_verdict(obj, "quarantine", rows=footer.rows, reason=reason), target

    dropped = conformed.stats.dropped_columns
    note = f"drops column(s) {', '.join(dropped)}" if dropped else None
    verdict = make_verdict(obj, action, footer.rows, columns, note)
    return verdict, target


def make_verdict(
    obj: ObjectRef,
    action: Action,
    rows: int | None = None,
    columns: list[str] | None = None,
    reason: str | None = None,
) -> ObjectVerdict:
    """An :class:`ObjectVerdict` for ``obj``."""
    return ObjectVerdict(
        uri=obj.uri,
        bucket=obj.bucket,
        key=obj.key,
        size=obj.size,
        action=action,
        rows=rows,
        columns=columns or [],
        reason=reason,
    )


def table_schema(schema: pa.Schema) -> pa.Schema:
    """The Arrow schema an Iceberg table made from ``schema`` reads back as.

    Round-trips through pyiceberg's own conversion so that types come back as a real
    table's would (``string`` as ``large_string``, for one).
    """
    from pyiceberg.catalog import Catalog

    converted = Catalog._convert_schema_if_needed(schema)
    return converted.as_arrow()


def check_integer_ranges(metadata: pq.FileMetaData, target: pa.Schema) -> None:
    """Refuse a file whose integer statistics show values beyond the table's type.

    Only top-level integer columns with min/max statistics are checked; the message
    matches what the run's safe cast reports.
    """
    limits = {
        f.name: integer_range(f.type) for f in target if pa.types.is_integer(f.type)
    }
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            bounds = limits.get(chunk.path_in_schema)
            stats = chunk.statistics
            if bounds is None or stats is None or not stats.has_min_max:
                continue

            if not isinstance(stats.min, int) or not isinstance(stats.max, int):
                continue

            if stats.min < bounds[0] or stats.max > bounds[1]:
                raise ConformError(
                    f"column {chunk.path_in_schema!r}: values do not fit the table's "
                    f"{target.field(chunk.path_in_schema).type} (out of range: "
                    f"{stats.min}..{stats.max})"
                )


def integer_range(data_type: pa.DataType) -> tuple[int, int]:
    """The smallest and largest value of an integer type."""
    bits = data_type.bit_width
    if pa.types.is_unsigned_integer(data_type):
        return 0, 2**bits - 1

    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
