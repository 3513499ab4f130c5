"""Normalization: the type a table column gets for a file's column, by kind.

This module owns the choice of a new column's type (``large_string`` for every string
variant, microseconds for every time unit, signed integers for unsigned ones, and so
on) and the columns that never reach a table (pandas ``__index_level_N__`` columns and
``null``-typed columns). It is pure and must not look at values.
"""

from __future__ import annotations

import re

import pyarrow as pa

from .errors import ConformError

__all__ = [
    "drop_index_columns",
    "is_list_type",
    "normalize_field",
    "normalize_schema",
    "normalize_type",
]

_INDEX_COLUMN = re.compile(r"^__index_level_\d+__$")


def drop_index_columns(table: pa.Table) -> pa.Table:
    """Drop the ``__index_level_N__`` columns pandas writes for a non-default index."""
    keep = [name for name in table.column_names if not _INDEX_COLUMN.match(name)]
    if len(keep) == table.num_columns:
        return table

    return table.select(keep)


def normalize_type(data_type: pa.DataType) -> pa.DataType | None:
    """The type a new table column gets for a file column of this type.

    Returns ``None`` for a type that carries no values (``null``), which never creates a
    column.
    """
    if pa.types.is_null(data_type):
        return None

    if pa.types.is_dictionary(data_type):
        return normalize_type(data_type.value_type)

    if pa.types.is_timestamp(data_type):
        return pa.timestamp("us", tz="UTC" if data_type.tz else None)

    if pa.types.is_time(data_type):
        return pa.time64("us")

    if pa.types.is_date(data_type):
        return pa.date32()

    if pa.types.is_unsigned_integer(data_type):
        return pa.int32() if data_type.bit_width < 32 else pa.int64()

    if pa.types.is_integer(data_type):
        return pa.int32() if data_type.bit_width < 64 else pa.int64()

    if pa.types.is_float16(data_type):
        return pa.float32()

    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
        return pa.large_string()

    if data_type == pa.string_view():
        return pa.large_string()

    if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return pa.large_binary()

    if data_type == pa.binary_view():
        return pa.large_binary()

    if pa.types.is_decimal(data_type):
        if data_type.precision > 38:
            raise ConformError(
                f"{data_type} has more digits than the 38 an Iceberg decimal holds"
            )

        return pa.decimal128(data_type.precision, data_type.scale)

    if pa.types.is_struct(data_type):
        fields = [
            normalize_field(data_type.field(i)) for i in range(data_type.num_fields)
        ]
        kept = [f for f in fields if f is not None]
        return pa.struct(kept) if kept else None

    if pa.types.is_map(data_type):
        key = normalize_type(data_type.key_type)
        item = normalize_type(data_type.item_type)
        if key is None or item is None:
            return None

        return pa.map_(key, item)

    if is_list_type(data_type):
        value = normalize_type(data_type.value_type)
        return pa.large_list(value) if value is not None else None

    if pa.types.is_duration(data_type) or pa.types.is_interval(data_type):
        raise ConformError(f"{data_type} has no Iceberg type")

    return data_type


def normalize_field(source: pa.Field) -> pa.Field | None:
    """A file field as a new table field: normalized type, no foreign metadata.

    Raises :class:`ConformError` naming the field for a type no table column can hold.
    """
    try:
        data_type = normalize_type(source.type)
    except ConformError as exc:
        raise ConformError(f"column {source.name!r}: {exc}") from exc

    if data_type is None:
        return None

    return pa.field(source.name, data_type, nullable=True)


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The schema a new table gets from its first file.

    Index columns and columns without a value type are left out; every column is
    optional, so later files may omit it.
    """
    fields = [
        normalize_field(source)
        for source in schema
        if not _INDEX_COLUMN.match(source.name)
    ]
    return pa.schema([f for f in fields if f is not None])


def is_list_type(data_type: pa.DataType) -> bool:
    """Tell list, large list, fixed-size list and list view apart from the rest."""
    return bool(
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
        or pa.types.is_list_view(data_type)
        or pa.types.is_large_list_view(data_type)
    )
