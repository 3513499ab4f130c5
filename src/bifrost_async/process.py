"""Processing: from an object's Parquet bytes to data files of the table.

Runs in worker threads. Reads the bytes with pyarrow (page checksums verified, INT96 read
as microseconds so far dates stay exact), drops pandas index columns, applies the user's
transform, conforms the data to the table (``conform.py``) and writes it as data files
that are not yet visible. This is the one place where reader errors, including a polars
panic, become :class:`UnreadableFileError`. It must not commit or touch the ledger.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.manifest import DataFile

from .commit import TableHandle, write_data_files
from .config import Route
from .conform import conform_table, drop_index_columns, normalize_schema
from .discovery import ObjectRef
from .errors import BadInputError, ConfigError, ConformError, UnreadableFileError
from .reuse import reason_not_reusable, write_reused_file

__all__ = ["Prepared", "load_transform", "prepare_object", "read_parquet"]

logger = logging.getLogger(__name__)

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
    if not data:
        raise UnreadableFileError(f"{obj.uri}: object has 0 bytes, not a Parquet file")

    if data[:4] != b"PAR1" or data[-4:] not in (b"PAR1", b"PARE"):
        kind = "gzip data" if data[:2] == b"\x1f\x8b" else "not a Parquet file"
        raise UnreadableFileError(
            f"{obj.uri}: {kind} (no PAR1 magic at both ends; truncated or misnamed?)"
        )

    if data[-4:] == b"PARE":
        raise UnreadableFileError(
            f"{obj.uri}: encrypted Parquet footer; no decryption keys are configured"
        )

    try:
        parquet = pq.ParquetFile(
            pa.BufferReader(data),
            coerce_int96_timestamp_unit="us",
            page_checksum_verification=True,
        )
        table = parquet.read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError, TypeError, IndexError) as exc:
        raise UnreadableFileError(f"{obj.uri}: Parquet reader failed: {exc}") from exc

    if table.num_rows != parquet.metadata.num_rows:
        raise UnreadableFileError(
            f"{obj.uri}: read {table.num_rows} rows but the footer says "
            f"{parquet.metadata.num_rows}"
        )

    return table


def apply_transform(table: pa.Table, transform: Transform, obj: ObjectRef) -> pa.Table:
    """Run the user's polars transform; a failure or a panic is the file's fault."""
    import polars as pl
    from polars.exceptions import PanicException

    try:
        frame = pl.from_arrow(table)
        result = transform(frame)
        return result.to_arrow()
    except PanicException as exc:  # a BaseException: contained here on purpose
        raise UnreadableFileError(f"{obj.uri}: polars panicked in the transform: {exc}") from exc
    except Exception as exc:
        raise ConformError(f"{obj.uri}: transform failed: {type(exc).__name__}: {exc}") from exc


def prepare_object(
    data: bytes,
    obj: ObjectRef,
    handle: TableHandle,
    route: Route,
    transform: Transform | None = None,
    *,
    zero_copy: bool = False,
) -> Prepared:
    """Read, transform, conform and write one object as uncommitted data files.

    A missing table is created from this object's schema. In ``add`` evolution mode new
    columns are added to the table before the data is written. With ``zero_copy``, an
    object that already matches the table exactly is written as it is (``reuse.py``).
    Raises :class:`BadInputError` (the object is to be quarantined) naming the fault.
    """
    table = drop_index_columns(read_parquet(data, obj))
    if transform is not None:
        table = apply_transform(table, transform, obj)

    if table.num_rows == 0:
        logger.debug("process.empty uri=%s", obj.uri)
        return Prepared(obj=obj, rows=0)

    # Once the table exists a qualifying object needs no conformance at all; the first
    # object is conformed first, since that creates the table.
    reusable = zero_copy and transform is None
    if reusable and handle.table is not None:
        reusable = False
        reused = reuse_object(data, obj, handle)
        if reused is not None:
            return Prepared(obj=obj, rows=table.num_rows, files=[reused], reused=True)

    try:
        conformed = conform_to_table(table, handle, route)
    except BadInputError as exc:
        raise type(exc)(f"{obj.uri}: {exc}") from exc

    if reusable:
        reused = reuse_object(data, obj, handle)
        if reused is not None:
            return Prepared(obj=obj, rows=table.num_rows, files=[reused], reused=True)

    iceberg = handle.require()
    files = write_data_files(iceberg.metadata, iceberg.io, conformed.table)
    if conformed.stats.truncated_timestamps:
        logger.warning(
            "conform.truncated uri=%s values=%d",
            obj.uri,
            conformed.stats.truncated_timestamps,
        )

    logger.debug("process.complete uri=%s rows=%d files=%d", obj.uri, table.num_rows, len(files))
    return Prepared(
        obj=obj,
        rows=table.num_rows,
        files=files,
        truncated_timestamps=conformed.stats.truncated_timestamps,
    )


def reuse_object(data: bytes, obj: ObjectRef, handle: TableHandle) -> DataFile | None:
    """Write the object's bytes as a data file if it qualifies, else return ``None``."""
    metadata = pq.read_metadata(pa.BufferReader(data))
    iceberg = handle.require()
    reason = reason_not_reusable(
        metadata, iceberg.schema().as_arrow(), iceberg.spec().is_unpartitioned()
    )
    if reason is not None:
        logger.debug("process.rewrite uri=%s reason=%s", obj.uri, reason)
        return None

    iceberg = handle.ensure_name_mapping()
    data_file = write_reused_file(data, metadata, iceberg.metadata, iceberg.io)
    logger.debug("process.reused uri=%s path=%s", obj.uri, data_file.file_path)
    return data_file


def conform_to_table(table: pa.Table, handle: TableHandle, route: Route) -> Any:
    """Conform to the table, creating or evolving it first where the route allows."""
    if handle.table is None:
        schema = normalize_schema(table.schema)
        if len(schema) == 0:
            raise ConformError("no column has a value type; cannot create a table from it")

        handle.ensure(schema)

    target = handle.require().schema().as_arrow()
    conformed = conform_table(table, target, route.evolution)
    if conformed.new_fields:
        handle.evolve(conformed.new_fields)
        target = handle.require().schema().as_arrow()
        conformed = conform_table(table, target, route.evolution)
        if conformed.new_fields:
            names = ", ".join(f.name for f in conformed.new_fields)
            raise ConformError(f"columns {names} could not be added to the table")

    return conformed
