"""Zero-copy: an object that already is a valid data file of its table is kept as it is.

When ``zero_copy`` is on and an object's Parquet schema is exactly the table's (same
column names in the same order, flat columns of plain types, no field ids of its own)
and no transform applies, its bytes are written unchanged into the table's data
location and registered from their own footer, the way pyiceberg's ``add_files`` does,
instead of being decoded and encoded again. Re-encoding is most of the CPU cost of an
ingest, so this is several times cheaper.

The object is still read whole first (``process.read_parquet``: page checksums, row
count), so a damaged file is quarantined exactly as on the normal path, and the data
file joins the same batch, snapshot and ledger protocol as any other: until its batch
is committed it is an orphan, safe to delete. Files that do not qualify take the normal
path; :func:`reason_not_reusable` says why, for the DEBUG log. The in-place mode
(``inplace.py``) makes the same decision from the footer alone and registers the
object where it lies, with :func:`describe_data_file`.

Files registered this way carry no Iceberg field ids, so the table gets a name mapping
(``schema.name-mapping.default``) before the first one is committed; pyiceberg keeps it
up to date when the schema evolves. This module decides and writes; it never commits.
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table.metadata import TableMetadata

__all__ = ["describe_data_file", "reason_not_reusable", "write_reused_file"]

# Parquet physical types that Iceberg's spec does not allow for any column type.
_FORBIDDEN_PHYSICAL = frozenset({"INT96"})


def is_plain_type(data_type: pa.DataType) -> bool:
    """Whether a column type is stored the same way by every Iceberg writer."""
    if pa.types.is_timestamp(data_type):
        return bool(data_type.unit == "us")

    return (
        pa.types.is_boolean(data_type)
        or data_type in (pa.int32(), pa.int64(), pa.float32(), pa.float64())
        or data_type == pa.date32()
        or pa.types.is_string(data_type)
        or pa.types.is_large_string(data_type)
        or pa.types.is_binary(data_type)
        or pa.types.is_large_binary(data_type)
    )


def is_same_type(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether a file's column type reads as the table's without any change."""
    if pa.types.is_timestamp(source) and pa.types.is_timestamp(target):
        # Parquet keeps only "adjusted to UTC" or not; any zone means UTC instants.
        return source.unit == target.unit and (source.tz is None) == (target.tz is None)

    strings = (pa.string(), pa.large_string())
    binaries = (pa.binary(), pa.large_binary())
    if source in strings or source in binaries:
        return (source in strings and target in strings) or (
            source in binaries and target in binaries
        )

    return bool(source == target)


def reason_not_reusable(
    metadata: pq.FileMetaData, target: pa.Schema, unpartitioned: bool
) -> str | None:
    """Why a file cannot be registered as it is, or ``None`` when it can.

    Pure: ``metadata`` is the file's footer and ``target`` the table's current schema
    as Arrow. A file qualifies only when nothing the normal path does would change a
    value or a type.
    """
    if not unpartitioned:
        return "the table is partitioned"

    if metadata.num_rows == 0:
        return "the file has no rows"

    schema = metadata.schema.to_arrow_schema()
    if schema.names != target.names:
        return "its columns differ from the table's in names or order"

    for index in range(metadata.num_columns):
        column = metadata.schema.column(index)
        if column.physical_type in _FORBIDDEN_PHYSICAL:
            return f"column {column.path!r} is stored as {column.physical_type}"

    for source, wanted in zip(schema, target, strict=True):
        if source.metadata and b"PARQUET:field_id" in source.metadata:
            return f"column {source.name!r} carries a field id of its own"

        if not wanted.nullable:
            return f"table column {wanted.name!r} is required"

        if not is_plain_type(source.type) or not is_same_type(source.type, wanted.type):
            return (
                f"column {source.name!r} is {source.type}, the table has {wanted.type}"
            )

    return None


def write_reused_file(
    data: bytes, metadata: pq.FileMetaData, table_metadata: TableMetadata, io: Any
) -> DataFile:
    """Write an object's bytes unchanged as a new data file and describe it.

    The caller has checked the file with :func:`reason_not_reusable`, which is
    stricter than pyiceberg's own compatibility check (that one cost about 5 % of a
    zero-copy run, so it is not repeated). The file is invisible until a snapshot
    references it.
    """
    location = load_data_location(table_metadata, f"{uuid.uuid4()}-reused.parquet")
    with io.new_output(location).create(overwrite=False) as stream:
        stream.write(data)

    return describe_data_file(location, len(data), metadata, table_metadata)


def describe_data_file(
    location: str, size: int, metadata: pq.FileMetaData, table_metadata: TableMetadata
) -> DataFile:
    """The DataFile of an existing Parquet file, from its footer alone.

    The statistics are the footer's, mapped to the table's field ids by column name,
    as pyiceberg's ``add_files`` does. Pure: nothing is read or written.
    """
    schema = table_metadata.schema()
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=metadata,
        stats_columns=compute_statistics_plan(schema, table_metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=location,
        file_format=FileFormat.PARQUET,
        partition=statistics.partition(table_metadata.spec(), schema),
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=table_metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )


def load_data_location(table_metadata: TableMetadata, name: str) -> str:
    """Where the table's location provider puts a new data file of this name."""
    from pyiceberg.table.locations import load_location_provider

    provider = load_location_provider(
        table_location=table_metadata.location,
        table_properties=table_metadata.properties,
    )
    return provider.new_data_location(name)
