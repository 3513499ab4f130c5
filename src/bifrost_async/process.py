"""Processing: from an object's Parquet bytes to data files of the table.

Runs in worker threads. Reads the bytes with pyarrow (page checksums verified, INT96
read as microseconds so far dates stay exact, decoded integers checked against the
footer statistics), drops pandas index columns, applies the user's transform, conforms
the data to the table (``conform.py``) and writes it as data files that are not yet
visible. This is the one place where reader errors, including a polars panic, become
:class:`UnreadableFileError`. It must not commit or touch the ledger.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile

from .commit import TableHandle, write_data_files
from .config import Route
from .conform import Conformed, conform_table, drop_index_columns, normalize_schema
from .discovery import ObjectRef
from .errors import BadInputError, ConfigError, ConformError, UnreadableFileError

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
)

Transform = Callable[[Any], Any]


@dataclass
class Prepared:
    """An object turned into data files of its table, ready to be committed."""

    obj: ObjectRef
    rows: int
    files: list[DataFile] = field(default_factory=list)
    truncated_timestamps: int = 0


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
    if not data:
        raise UnreadableFileError(f"{obj.uri}: object has 0 bytes, not a Parquet file")

    if data[-4:] == b"PARE":
        raise UnreadableFileError(
            f"{obj.uri}: encrypted Parquet footer; no decryption keys are configured"
        )

    if data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        kind = "gzip data" if data[:2] == b"\x1f\x8b" else "not a Parquet file"
        raise UnreadableFileError(
            f"{obj.uri}: {kind} (no PAR1 magic at both ends; truncated or misnamed?)"
        )

    try:
        parquet = pq.ParquetFile(
            pa.BufferReader(data),
            coerce_int96_timestamp_unit="us",
            page_checksum_verification=True,
        )
        table = parquet.read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as exc:
        if "decrypt" in str(exc).lower():
            raise UnreadableFileError(
                f"{obj.uri}: encrypted Parquet columns; no decryption keys are "
                f"configured ({exc})"
            ) from exc

        raise UnreadableFileError(f"{obj.uri}: Parquet reader failed: {exc}") from exc

    if table.num_rows != parquet.metadata.num_rows:
        raise UnreadableFileError(
            f"{obj.uri}: read {table.num_rows} rows but the footer says "
            f"{parquet.metadata.num_rows}"
        )

    problem = find_statistics_mismatch(parquet.metadata, table)
    if problem is not None:
        raise UnreadableFileError(f"{obj.uri}: {problem}; the file is corrupt")

    return table


def find_statistics_mismatch(metadata: pq.FileMetaData, table: pa.Table) -> str | None:
    """Check decoded integers against the footer's min/max, row group by row group.

    Pages without checksums can be corrupted without any reader noticing; a decoded
    value outside the writer's own statistics proves it. Only top-level signed integer
    columns are checked: their statistics are exact (strings may be truncated, floats
    have NaN rules, old writers got unsigned orders wrong).
    """
    names = table.column_names
    offset = 0
    for group in range(metadata.num_row_groups):
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
        return result.to_arrow()
    except PanicException as exc:  # a BaseException: contained here on purpose
        raise UnreadableFileError(
            f"{obj.uri}: polars panicked in the transform: {exc}"
        ) from exc
    except Exception as exc:
        raise ConformError(
            f"{obj.uri}: transform failed: {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(frozen=True)
class ProcessOptions:
    """Run-wide settings that change what a file's rows become."""

    lineage: bool = False
    naive_timezone: str | None = None


LINEAGE_FIELDS = (
    pa.field("_bifrost_source_uri", pa.large_string()),
    pa.field("_bifrost_etag", pa.large_string()),
    pa.field("_bifrost_ingested_at", pa.timestamp("us", tz="UTC")),
)


def add_lineage(table: pa.Table, obj: ObjectRef, now: dt.datetime) -> pa.Table:
    """Add the source URI, ETag and processing time to every row.

    A column of the same name in the file is replaced: the lineage is the ingester's
    word, not the writer's.
    """
    values = (obj.uri, obj.etag, now)
    for lineage_field, value in zip(LINEAGE_FIELDS, values, strict=True):
        column = pa.array([value] * table.num_rows, lineage_field.type)
        if lineage_field.name in table.column_names:
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
    every mode). Raises :class:`BadInputError` (the object is to be quarantined)
    naming the fault.
    """
    table = drop_index_columns(read_parquet(data, obj))
    if transform is not None:
        table = apply_transform(table, transform, obj)

    if table.num_rows == 0:
        logger.debug("process.empty uri=%s", obj.uri)
        return Prepared(obj=obj, rows=0)

    if options.lineage:
        table = add_lineage(table, obj, dt.datetime.now(dt.UTC))

    try:
        conformed = conform_to_table(table, handle, route, options)
        iceberg = handle.require()
        files = write_data_files(iceberg.metadata, iceberg.io, conformed.table)
    except BadInputError as exc:
        raise type(exc)(f"{obj.uri}: {exc}") from exc
    except _DATA_ERRORS as exc:
        # pyiceberg and pyarrow refuse some values only while writing (a timestamp
        # outside Python's datetime range in the column statistics, say): the data's
        # fault, so the file is quarantined rather than the run ended.
        raise ConformError(
            f"{obj.uri}: the table writer refused the data: {type(exc).__name__}: {exc}"
        ) from exc

    if conformed.stats.truncated_timestamps:
        logger.warning(
            "conform.truncated uri=%s values=%d",
            obj.uri,
            conformed.stats.truncated_timestamps,
        )

    logger.debug(
        "process.complete uri=%s rows=%d files=%d", obj.uri, table.num_rows, len(files)
    )
    return Prepared(
        obj=obj,
        rows=table.num_rows,
        files=files,
        truncated_timestamps=conformed.stats.truncated_timestamps,
    )


def conform_to_table(
    table: pa.Table, handle: TableHandle, route: Route, options: ProcessOptions
) -> Conformed:
    """Conform to the table, creating or evolving it first where the route allows."""
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
