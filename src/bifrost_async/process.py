"""Processing: from an object's Parquet bytes to data files of the table.

Runs in worker threads. Reads the bytes with pyarrow (page checksums verified, INT96
read as microseconds so far dates stay exact, decoded integers checked against the
footer statistics), drops pandas index columns, applies the user's transform, conforms
the data to the table (``conform.py``) and writes it as data files that are not yet
visible. This is the one place where reader errors, including a polars panic, become
:class:`UnreadableFileError`. It must not commit or touch the ledger.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile

from .commit import TableHandle, write_data_files
from .config import Route, ZeroCopyMode
from .conform import (
    Conformed,
    check_column_names,
    conform_table,
    drop_index_columns,
    normalize_schema,
)
from .discovery import ObjectRef
from .errors import BadInputError, ConfigError, ConformError, UnreadableFileError
from .isolation import guard_object
from .reuse import reason_not_reusable, write_reused_file

__all__ = [
    "LINEAGE_FIELDS",
    "Prepared",
    "ProcessOptions",
    "load_transform",
    "prepare_object",
    "read_parquet",
]

logger = logging.getLogger(__name__)

# What pyarrow and pyiceberg raise for values they cannot convert. OSError (the
# warehouse failing) is deliberately absent: it is not the file's fault.
_DATA_ERRORS = (
    ValueError,
    TypeError,
    OverflowError,
    NotImplementedError,
    KeyError,
    IndexError,
    pa.ArrowInvalid,
    pa.ArrowNotImplementedError,
    pa.ArrowTypeError,
    pa.ArrowCapacityError,
)

Transform = Callable[[Any], Any]


@dataclass
class Prepared:
    """An object turned into data files of its table, ready to be committed."""

    obj: ObjectRef
    rows: int
    files: list[DataFile] = field(default_factory=list)
    truncated_timestamps: int = 0
    reused: bool = False


def load_transform(spec: str | None) -> Transform | None:
    """Import a ``module:function`` transform (polars DataFrame in and out)."""
    if spec is None:
        return None

    module_name, _, function_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        function = getattr(module, function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"--transform: cannot import {spec!r}: {exc}") from exc

    if not callable(function):
        raise ConfigError(f"--transform: {spec!r} is not callable")

    return function  # type: ignore[no-any-return]  # checked callable above


def read_parquet(data: bytes, obj: ObjectRef) -> pa.Table:
    """Read a whole Parquet object; any reader failure becomes UnreadableFileError."""
    return read_row_groups(open_parquet(data, obj), obj)


def open_parquet(data: bytes, obj: ObjectRef) -> pq.ParquetFile:
    """Open an object's bytes as Parquet (footer only); refuse what is not Parquet."""
    if not data:
        raise UnreadableFileError(f"{obj.uri}: object has 0 bytes, not a Parquet file")

    refuse_non_parquet(obj, data[:4], data[-4:])
    with translate_reader_errors(obj):
        return pq.ParquetFile(
            pa.BufferReader(data),
            coerce_int96_timestamp_unit="us",
            page_checksum_verification=True,
        )


def refuse_non_parquet(obj: ObjectRef, head: bytes | None, tail: bytes) -> None:
    """Refuse bytes whose magic numbers are not Parquet's, saying what they look like.

    ``head`` is the object's first bytes, or None where only its tail was fetched
    (``validate`` on a large object); ``tail`` its last bytes. ``run`` and
    ``validate`` give the same reason for the same object.
    """
    if tail[-4:] == b"PARE":
        raise UnreadableFileError(
            f"{obj.uri}: encrypted Parquet footer; no decryption keys are configured"
        )

    if (head is not None and head[:4] != b"PAR1") or tail[-4:] != b"PAR1":
        is_gzip = head is not None and head[:2] == b"\x1f\x8b"
        kind = "gzip data" if is_gzip else "not a Parquet file"
        raise UnreadableFileError(
            f"{obj.uri}: {kind} (no PAR1 magic at both ends; truncated or misnamed?)"
        )


def read_row_groups(
    parquet: pq.ParquetFile, obj: ObjectRef, groups: Sequence[int] | None = None
) -> pa.Table:
    """Read some row groups (all by default), checked against the footer."""
    metadata = parquet.metadata
    if groups is None:
        groups = range(metadata.num_row_groups)

    with translate_reader_errors(obj):
        if len(groups) == metadata.num_row_groups:
            table = parquet.read(use_threads=False)
        else:
            table = parquet.read_row_groups(list(groups), use_threads=False)

    expected = (
        metadata.num_rows
        if len(groups) == metadata.num_row_groups
        else sum(metadata.row_group(g).num_rows for g in groups)
    )
    if table.num_rows != expected:
        raise UnreadableFileError(
            f"{obj.uri}: read {table.num_rows} rows but the footer says {expected}"
        )

    problem = find_statistics_mismatch(metadata, table, groups)
    if problem is not None:
        raise UnreadableFileError(f"{obj.uri}: {problem}; the file is corrupt")

    return table


@contextlib.contextmanager
def translate_reader_errors(obj: ObjectRef) -> Iterator[None]:
    """Turn whatever the Parquet reader raises into UnreadableFileError."""
    try:
        yield
    except MemoryError:
        raise  # the machine's fault, not the file's (pa.ArrowMemoryError included)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as exc:
        if "decrypt" in str(exc).lower():
            raise UnreadableFileError(
                f"{obj.uri}: encrypted Parquet columns; no decryption keys are "
                f"configured ({exc})"
            ) from exc

        raise UnreadableFileError(f"{obj.uri}: Parquet reader failed: {exc}") from exc


def find_statistics_mismatch(
    metadata: pq.FileMetaData, table: pa.Table, groups: Sequence[int]
) -> str | None:
    """Check decoded integers against the footer's min/max, row group by row group.

    ``table`` holds the row groups ``groups``, in order. Pages without checksums can be
    corrupted without any reader noticing; a decoded value outside the writer's own
    statistics proves it. Only top-level signed integer columns are checked: their
    statistics are exact (strings may be truncated, floats have NaN rules, old writers
    got unsigned orders wrong).
    """
    names = table.column_names
    offset = 0
    for group in groups:
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            name = chunk.path_in_schema
            if names.count(name) != 1 or not is_checkable(
                chunk, table.schema.field(name)
            ):
                continue

            values = table.column(name).slice(offset, row_group.num_rows)
            low, high = (v.as_py() for v in pc.min_max(values).values())
            stats = chunk.statistics
            if low is not None and (low < stats.min or high > stats.max):
                return (
                    f"column {name!r} in row group {group} decodes to values from "
                    f"{low} to {high}, outside the footer statistics {stats.min} to "
                    f"{stats.max}"
                )

        offset += row_group.num_rows

    return None


def is_checkable(chunk: pq.ColumnChunkMetaData, arrow_field: pa.Field) -> bool:
    """Whether a column chunk's statistics can vouch for its decoded values."""
    stats = chunk.statistics
    if stats is None or not stats.has_min_max:
        return False

    if chunk.physical_type not in ("INT32", "INT64"):
        return False

    data_type = arrow_field.type
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type

    return bool(pa.types.is_signed_integer(data_type))


def apply_transform(table: pa.Table, transform: Transform, obj: ObjectRef) -> pa.Table:
    """Run the user's polars transform; a failure or a panic is the file's fault."""
    import polars as pl
    from polars.exceptions import PanicException

    try:
        frame = pl.from_arrow(table)
        result = transform(frame)
    except PanicException as exc:  # a BaseException: contained here on purpose
        raise UnreadableFileError(
            f"{obj.uri}: polars panicked in the transform: {exc}"
        ) from exc
    except Exception as exc:
        raise ConformError(
            f"{obj.uri}: transform failed: {type(exc).__name__}: {exc}"
        ) from exc

    if not isinstance(result, pl.DataFrame):
        raise ConformError(
            f"{obj.uri}: transform returned {type(result).__name__}, not a polars "
            "DataFrame"
        )

    if result.width == 0 and table.num_columns > 0:
        # A frame without columns has no rows either: landing it would count the
        # object as ingested with none of its rows.
        raise ConformError(f"{obj.uri}: transform returned a DataFrame with no columns")

    return result.to_arrow()


@dataclass(frozen=True)
class ProcessOptions:
    """Run-wide settings that change what a file's rows become."""

    lineage: bool = False
    naive_timezone: str | None = None
    stream_above: int = 128 * 1024**2
    crash_markers: str | None = None
    zero_copy: ZeroCopyMode = "off"


LINEAGE_FIELDS = (
    pa.field("_bifrost_source_uri", pa.large_string()),
    pa.field("_bifrost_etag", pa.large_string()),
    pa.field("_bifrost_ingested_at", pa.timestamp("us", tz="UTC")),
)


def add_lineage(table: pa.Table, obj: ObjectRef, now: dt.datetime) -> pa.Table:
    """Add the source URI, ETag and processing time to every row.

    A column of the same name in the file is replaced, with a WARNING naming it: the
    lineage is the ingester's word, not the writer's.
    """
    values = (obj.uri, obj.etag, now)
    for lineage_field, value in zip(LINEAGE_FIELDS, values, strict=True):
        column = pa.array([value] * table.num_rows, lineage_field.type)
        if lineage_field.name in table.column_names:
            logger.warning(
                "lineage.replaced uri=%s column=%s", obj.uri, lineage_field.name
            )
            index = table.column_names.index(lineage_field.name)
            table = table.set_column(index, lineage_field, column)
        else:
            table = table.append_column(lineage_field, column)

    return table


def prepare_object(
    data: bytes,
    obj: ObjectRef,
    handle: TableHandle,
    route: Route,
    transform: Transform | None = None,
    options: ProcessOptions = ProcessOptions(),
) -> Prepared:
    """Read, transform, conform and write one object as uncommitted data files.

    A missing table is created from this object's schema. In ``add`` evolution mode new
    columns are added to the table before the data is written (lineage columns in
    every mode). A file whose decoded size exceeds ``options.stream_above`` is read,
    conformed and written a few row groups at a time (see :func:`prepare_in_chunks`),
    unless a transform needs it whole. With ``options.crash_markers`` set, an object
    that crashed earlier processes is checked in a separate process first
    (``isolation.py``). Raises :class:`BadInputError` (the object is to be
    quarantined) naming the fault.
    A ``--zero-copy`` object that already matches the table exactly is written as it
    is (``reuse.py``); in place, the pipeline asks ``inplace.py`` first and only
    objects that do not qualify come here.
    """
    if options.crash_markers is None:
        return prepare_unguarded(data, obj, handle, route, transform, options)

    with guard_object(options.crash_markers, obj, data):
        return prepare_unguarded(data, obj, handle, route, transform, options)


def prepare_unguarded(
    data: bytes,
    obj: ObjectRef,
    handle: TableHandle,
    route: Route,
    transform: Transform | None,
    options: ProcessOptions,
) -> Prepared:
    """The body of :func:`prepare_object`, without the crash guard."""
    parquet = open_parquet(data, obj)
    now = dt.datetime.now(dt.UTC)
    if transform is None and decoded_size(parquet.metadata) > options.stream_above:
        return prepare_in_chunks(parquet, obj, handle, route, options, now)

    table = drop_index_columns(read_row_groups(parquet, obj))
    if transform is not None:
        table = apply_transform(table, transform, obj)

    if table.num_rows == 0:
        logger.debug("process.empty uri=%s", obj.uri)
        return Prepared(obj=obj, rows=0)

    if options.lineage:
        table = add_lineage(table, obj, now)

    with translate_data_errors(obj):
        conformed = conform_to_table(table, handle, route, options)
        if options.zero_copy == "copy" and transform is None and not options.lineage:
            reused = reuse_object(data, obj, handle)
            if reused is not None:
                logger.debug(
                    "process.complete uri=%s rows=%d reused=true",
                    obj.uri,
                    table.num_rows,
                )
                return Prepared(
                    obj=obj, rows=table.num_rows, files=[reused], reused=True
                )

        iceberg = handle.require()
        files = write_data_files(iceberg.metadata, iceberg.io, conformed.table)

    return finish(obj, table.num_rows, files, conformed.stats.truncated_timestamps)


def decoded_size(metadata: pq.FileMetaData) -> int:
    """The uncompressed size of a file's data, from its footer."""
    return sum(
        metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)
    )


def plan_chunks(metadata: pq.FileMetaData, limit: int) -> list[list[int]]:
    """Consecutive row groups in chunks of at most ``limit`` decoded bytes.

    A row group bigger than ``limit`` is a chunk of its own: row groups are the
    smallest unit a Parquet reader decodes.
    """
    chunks: list[list[int]] = []
    size = 0
    for group in range(metadata.num_row_groups):
        group_size = metadata.row_group(group).total_byte_size
        if not chunks or size + group_size > limit:
            chunks.append([])
            size = 0

        chunks[-1].append(group)
        size += group_size

    return chunks


def prepare_in_chunks(
    parquet: pq.ParquetFile,
    obj: ObjectRef,
    handle: TableHandle,
    route: Route,
    options: ProcessOptions,
    now: dt.datetime,
) -> Prepared:
    """Write a big file a chunk of row groups at a time; it still lands in one commit.

    Memory is bounded by about one chunk (``options.stream_above`` decoded bytes)
    plus the downloaded bytes. Each chunk is written as a table, so this works for
    partitioned tables too. pyiceberg's own streaming (a ``RecordBatchReader`` into
    ``write_data_files``) is not used: it refuses partitioned tables
    (apache/iceberg-python#2152) and submits every bin to its thread pool at once,
    so it holds the whole file anyway. A chunk that fails leaves the data files of the
    chunks before it as orphans, never visible.
    """
    schema_only = parquet.schema_arrow.empty_table()
    schema_only = drop_index_columns(schema_only)
    if options.lineage:
        schema_only = add_lineage(schema_only, obj, now)

    files: list[DataFile] = []
    rows = truncated = 0
    chunks = plan_chunks(parquet.metadata, options.stream_above)
    with translate_data_errors(obj):
        # The schema decides table creation and evolution before any data is read.
        conform_to_table(schema_only, handle, route, options)
        iceberg = handle.require()
        target = iceberg.schema().as_arrow()
        for groups in chunks:
            table = drop_index_columns(read_row_groups(parquet, obj, groups))
            if options.lineage:
                table = add_lineage(table, obj, now)

            conformed = conform_table(
                table, target, route.evolution, options.naive_timezone
            )
            if conformed.new_fields:
                raise ConformError("row groups disagree with the file's schema")

            files += write_data_files(iceberg.metadata, iceberg.io, conformed.table)
            rows += table.num_rows
            truncated += conformed.stats.truncated_timestamps
            del table, conformed

    logger.debug(
        "process.chunked uri=%s chunks=%d row_groups=%d",
        obj.uri,
        len(chunks),
        parquet.metadata.num_row_groups,
    )
    return finish(obj, rows, files, truncated)


@contextlib.contextmanager
def translate_data_errors(obj: ObjectRef) -> Iterator[None]:
    """Name the object in bad-input errors; turn writer refusals into ConformError."""
    try:
        yield
    except BadInputError as exc:
        if str(exc).startswith(obj.uri):
            raise

        raise type(exc)(f"{obj.uri}: {exc}") from exc
    except _DATA_ERRORS as exc:
        # pyiceberg and pyarrow refuse some values only while writing: the data's
        # fault, so the file is quarantined rather than the run ended.
        raise ConformError(
            f"{obj.uri}: the table writer refused the data: {type(exc).__name__}: {exc}"
        ) from exc


def finish(
    obj: ObjectRef, rows: int, files: list[DataFile], truncated: int
) -> Prepared:
    """Log what processing did and hand the object on."""
    if truncated:
        logger.warning("conform.truncated uri=%s values=%d", obj.uri, truncated)

    logger.debug("process.complete uri=%s rows=%d files=%d", obj.uri, rows, len(files))
    return Prepared(obj=obj, rows=rows, files=files, truncated_timestamps=truncated)


def prepare_reuse(metadata: pq.FileMetaData, handle: TableHandle) -> str | None:
    """Why a file cannot join the table as it is, or None once the table can take it.

    When it can, the table has its name mapping (a property commit, made once), so
    files without field ids are read by name. Both zero-copy modes decide here.
    """
    iceberg = handle.require()
    reason = reason_not_reusable(
        metadata, iceberg.schema().as_arrow(), iceberg.spec().is_unpartitioned()
    )
    if reason is None:
        handle.ensure_name_mapping()

    return reason


def reuse_object(data: bytes, obj: ObjectRef, handle: TableHandle) -> DataFile | None:
    """Write the object's bytes as a data file if it qualifies, else return ``None``."""
    metadata = pq.read_metadata(pa.BufferReader(data))
    reason = prepare_reuse(metadata, handle)
    if reason is not None:
        logger.debug("process.rewrite uri=%s reason=%s", obj.uri, reason)
        return None

    iceberg = handle.require()
    data_file = write_reused_file(data, metadata, iceberg.metadata, iceberg.io)
    logger.debug("process.reused uri=%s path=%s", obj.uri, data_file.file_path)
    return data_file


def conform_to_table(
    table: pa.Table, handle: TableHandle, route: Route, options: ProcessOptions
) -> Conformed:
    """Conform to the table, creating or evolving it first where the route allows."""
    check_column_names(table.schema)
    if handle.table is None:
        schema = normalize_schema(table.schema)
        if len(schema) == 0:
            raise ConformError(
                "no column has a value type; cannot create a table from it"
            )

        handle.ensure(schema)

    target = handle.require().schema().as_arrow()
    if options.lineage:
        missing = [f for f in LINEAGE_FIELDS if f.name not in target.names]
        if missing:
            handle.evolve(missing)
            target = handle.require().schema().as_arrow()

    conformed = conform_table(table, target, route.evolution, options.naive_timezone)
    if conformed.new_fields:
        handle.evolve(conformed.new_fields)
        target = handle.require().schema().as_arrow()
        conformed = conform_table(
            table, target, route.evolution, options.naive_timezone
        )
        if conformed.new_fields:
            names = ", ".join(f.name for f in conformed.new_fields)
            raise ConformError(f"columns {names} could not be added to the table")

    return conformed
