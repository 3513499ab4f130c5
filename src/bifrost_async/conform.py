"""Conformance: from a file's Arrow data to exactly the table's Arrow schema, by name.

This module owns the rule for each kind of type. Every rule either keeps the values
exactly, or changes them in a documented, counted way (nanoseconds truncated to
microseconds), or raises :class:`ConformError` naming the column. Nothing is rounded,
wrapped or reinterpreted silently. It is pure: no I/O, no catalog.

The rules, by kind:

- integers and decimals: cast only when every value fits (unsigned to signed included);
  otherwise the file is refused naming the column and "out of range";
- timestamps: to microseconds, truncating sub-microsecond parts and counting them; any
  time zone to UTC (same instants); a naive column against a zoned one, or the reverse,
  is refused unless ``naive_timezone`` says how to read naive values;
- strings and binaries: large, view and dictionary-encoded variants become the table's
  plain type, so that ``scan().to_arrow()`` keeps working;
- ``null``-typed columns become nulls of the table's type, and never create a column;
- structs, lists and maps are matched by field name at every level; a missing optional
  field becomes nulls; a required table field must have no nulls;
- pandas ``__index_level_N__`` columns are dropped before anything else.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConformError

__all__ = [
    "ConformStats",
    "Conformed",
    "conform_table",
    "drop_index_columns",
    "normalize_schema",
    "normalize_type",
]

logger = logging.getLogger(__name__)

EvolutionMode = Literal["add", "freeze", "discard"]

_INDEX_COLUMN = re.compile(r"^__index_level_\d+__$")


@dataclass
class ConformStats:
    """What conformance changed in a documented way, for the log and the ledger."""

    truncated_timestamps: int = 0
    dropped_columns: list[str] = field(default_factory=list)


@dataclass
class Conformed:
    """A file's data cast to the table schema, plus the fields that would evolve it.

    ``new_fields`` holds new columns and widened ones; when it is not empty, ``table``
    matches the schema the table would have after adding them.
    """

    table: pa.Table
    new_fields: list[pa.Field]
    stats: ConformStats


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
            return None

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

    return data_type


def normalize_field(source: pa.Field) -> pa.Field | None:
    """A file field as a new table field: normalized type, no foreign metadata."""
    data_type = normalize_type(source.type)
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


def conform_table(
    table: pa.Table,
    target: pa.Schema,
    evolution: EvolutionMode = "add",
    naive_timezone: str | None = None,
) -> Conformed:
    """Cast a file's table to ``target`` by column name.

    Columns the table has and the file lacks become nulls. Columns the file has and the
    table lacks follow ``evolution``: ``add`` returns them as ``new_fields``, ``freeze``
    refuses the file, ``discard`` drops them with a WARNING. In ``add`` mode a column
    whose file type safely widens the table's (int to long, float to double, a decimal
    with more digits and the same scale) is returned in ``new_fields`` with the wider
    type too. When ``new_fields`` is not empty, the data has already been conformed to
    the table as it would be after the change, so a file that fails never changes the
    table; the caller evolves the table and conforms again. Raises
    :class:`ConformError` naming the column for a value that does not fit, a case-only
    twin or an incompatible type.
    """
    table = drop_index_columns(table)
    stats = ConformStats()
    new_fields = find_new_fields(table.schema, target, evolution, stats)
    if evolution == "add":
        new_fields += find_widened_fields(table.schema, target)
        new_fields += find_nested_additions(table.schema, target)

    planned = plan_schema(target, new_fields)
    conformed = cast_to_schema(table, planned, naive_timezone, stats)
    return Conformed(conformed, new_fields, stats)


def find_widened_fields(source: pa.Schema, target: pa.Schema) -> list[pa.Field]:
    """Table columns that a file's wider type would promote, with that type."""
    widened = []
    for target_field in target:
        if target_field.name not in source.names:
            continue

        wider = normalize_type(source.field(target_field.name).type)
        if wider is not None and is_safe_widening(target_field.type, wider):
            widened.append(pa.field(target_field.name, wider, target_field.nullable))

    return widened


def find_nested_additions(source: pa.Schema, target: pa.Schema) -> list[pa.Field]:
    """Table columns whose structs would gain the file's new nested fields."""
    grown = []
    for target_field in target:
        if target_field.name not in source.names:
            continue

        source_type = source.field(target_field.name).type
        merged = merge_nested(source_type, target_field.type, target_field.name)
        if merged is not None:
            grown.append(pa.field(target_field.name, merged, target_field.nullable))

    return grown


def merge_nested(
    source: pa.DataType, target: pa.DataType, path: str
) -> pa.DataType | None:
    """``target`` with the struct fields only ``source`` has, at any depth; or None.

    New nested fields are optional; a case-only twin of a nested field is refused.
    """
    if pa.types.is_dictionary(source):
        source = source.value_type

    if pa.types.is_struct(source) and pa.types.is_struct(target):
        fields = [strip_field(target.field(i)) for i in range(target.num_fields)]
        by_name = {f.name: i for i, f in enumerate(fields)}
        by_lower = {f.name.lower(): f.name for f in fields}
        changed = False
        for index in range(source.num_fields):
            child = source.field(index)
            child_path = f"{path}.{child.name}"
            if child.name in by_name:
                position = by_name[child.name]
                merged = merge_nested(child.type, fields[position].type, child_path)
                if merged is not None:
                    fields[position] = fields[position].with_type(merged)
                    changed = True
            elif child.name.lower() in by_lower:
                raise ConformError(
                    f"column {child_path!r} differs from table column "
                    f"{path + '.' + by_lower[child.name.lower()]!r} only by case"
                )
            elif (added := normalize_field(child)) is not None:
                fields.append(added)
                changed = True

        return pa.struct(fields) if changed else None

    if is_list_type(source) and is_list_type(target):
        item = merge_nested(source.value_type, target.value_type, f"{path}[]")
        if item is None:
            return None

        return pa.large_list(strip_field(target.value_field).with_type(item))

    if pa.types.is_map(source) and pa.types.is_map(target):
        item = merge_nested(source.item_type, target.item_type, f"{path}.value")
        if item is None:
            return None

        item_field = strip_field(target.item_field).with_type(item)
        return pa.map_(strip_field(target.key_field), item_field)

    return None


def strip_field(source: pa.Field) -> pa.Field:
    """A field without metadata (table field ids), at every depth."""
    return pa.field(source.name, strip_type(source.type), source.nullable)


def strip_type(data_type: pa.DataType) -> pa.DataType:
    """A type whose nested fields carry no metadata."""
    if pa.types.is_struct(data_type):
        return pa.struct(
            [strip_field(data_type.field(i)) for i in range(data_type.num_fields)]
        )

    if pa.types.is_large_list(data_type):
        return pa.large_list(strip_field(data_type.value_field))

    if pa.types.is_list(data_type):
        return pa.list_(strip_field(data_type.value_field))

    if pa.types.is_map(data_type):
        return pa.map_(
            strip_field(data_type.key_field), strip_field(data_type.item_field)
        )

    return data_type


def is_safe_widening(old: pa.DataType, new: pa.DataType) -> bool:
    """The promotions Iceberg allows: int to long, float to double, decimal digits."""
    if old == pa.int32() and new == pa.int64():
        return True

    if old == pa.float32() and new == pa.float64():
        return True

    return bool(
        pa.types.is_decimal(old)
        and pa.types.is_decimal(new)
        and new.scale == old.scale
        and old.precision < new.precision <= 38
    )


def plan_schema(target: pa.Schema, changes: list[pa.Field]) -> pa.Schema:
    """The table's schema after ``changes``: wider types in place, new columns last."""
    by_name = {f.name: f for f in changes}
    fields = [by_name.pop(f.name, f) for f in target]
    return pa.schema(fields + list(by_name.values()))


def cast_to_schema(
    table: pa.Table,
    target: pa.Schema,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Table:
    """Build exactly ``target`` from the file's columns, by name, and check it."""
    columns = []
    for target_field in target:
        if target_field.name in table.column_names:
            source = table.column(target_field.name)
            column = conform_column(source, target_field, naive_timezone, stats)
        elif target_field.nullable:
            column = pa.nulls(table.num_rows, target_field.type)
        else:
            raise ConformError(
                f"column {target_field.name!r} is required by the table but missing"
            )

        columns.append(column)

    schema = pa.schema(
        [f.with_metadata(None) for f in target]  # field ids come from the table
    )
    conformed = pa.Table.from_arrays(columns, schema=schema)
    for name in conformed.column_names:
        for chunk in conformed.column(name).chunks:
            check_storable(chunk, name)

    return conformed


# The instants Python's datetime can hold: pyiceberg turns column statistics into
# datetimes while writing, so a value outside them cannot be written.
_MIN_MICROS = -62_135_596_800_000_000  # 0001-01-01T00:00:00
_MAX_MICROS = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999
_MIN_DAYS, _MAX_DAYS = -719_162, 2_932_896


def check_storable(array: pa.Array, path: str) -> None:
    """Refuse values the table would not hold as they are, naming the column.

    Two kinds, at any depth: timestamps and dates outside the years 1 to 9999, and a
    null list or map of structs, which pyiceberg rebuilds from its offsets without its
    validity bitmap (on write and on read), so the null would land as ``[]``.
    TODO(#4): drop the second check once apache/iceberg-python#3833 is released.
    """
    data_type = array.type
    if pa.types.is_timestamp(data_type) or pa.types.is_date(data_type):
        check_temporal_range(array, path)
    elif pa.types.is_struct(data_type):
        # flatten() applies the struct's own nulls to its children.
        for index, child in enumerate(array.flatten()):
            check_storable(child, f"{path}.{data_type.field(index).name}")
    elif pa.types.is_map(data_type):
        if array.null_count and pa.types.is_struct(data_type.item_type):
            raise lossy_null_error(path)

        check_storable(array.keys, f"{path}.key")
        check_storable(array.items, f"{path}.value")
    elif is_list_type(data_type):
        if array.null_count and pa.types.is_struct(data_type.value_type):
            raise lossy_null_error(path)

        check_storable(array.flatten(), f"{path}[]")


def check_temporal_range(array: pa.Array, path: str) -> None:
    """Refuse timestamps (µs) and dates outside the years 1 to 9999."""
    if pa.types.is_timestamp(array.type):
        raw, low, high = array.cast(pa.int64()), _MIN_MICROS, _MAX_MICROS
    else:
        raw, low, high = array.cast(pa.date32()).cast(pa.int32()), _MIN_DAYS, _MAX_DAYS

    smallest, largest = (v.as_py() for v in pc.min_max(raw).values())
    if smallest is not None and (smallest < low or largest > high):
        raise ConformError(
            f"column {path!r} holds {array.type} values outside the years 1 to 9999 "
            f"(raw {smallest} to {largest}); pyiceberg cannot write them and most "
            "engines cannot read them"
        )


def lossy_null_error(path: str) -> ConformError:
    """The error for a null list or map of structs (apache/iceberg-python#3833)."""
    return ConformError(
        f"column {path!r} holds a null list or map of structs, which pyiceberg would "
        "store as an empty one (apache/iceberg-python#3833)"
    )


def find_new_fields(
    source: pa.Schema,
    target: pa.Schema,
    evolution: EvolutionMode,
    stats: ConformStats,
) -> list[pa.Field]:
    """Compare names; return the fields the table would gain under ``add``."""
    by_lower = {name.lower(): name for name in target.names}
    extra: list[pa.Field] = []
    for source_field in source:
        if source_field.name in target.names:
            continue

        twin = by_lower.get(source_field.name.lower())
        if twin is not None:
            raise ConformError(
                f"column {source_field.name!r} differs from table column {twin!r} only "
                "by case; rename it in the source or with a transform"
            )

        normalized = normalize_field(source_field)
        if normalized is not None:
            extra.append(normalized)

    if not extra:
        return []

    names = [f.name for f in extra]
    if evolution == "freeze":
        raise ConformError(
            f"new column(s) {', '.join(map(repr, names))} not in the table and schema "
            "evolution is frozen"
        )

    if evolution == "discard":
        stats.dropped_columns.extend(names)
        logger.warning("conform.columns_discarded columns=%s", ",".join(names))
        return []

    return extra


def conform_column(
    column: pa.ChunkedArray,
    target: pa.Field,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.ChunkedArray:
    """Conform every chunk of one column; a required field must have no nulls."""
    chunks = [
        conform_array(chunk, target.type, target.name, naive_timezone, stats)
        for chunk in column.chunks
    ]
    result = pa.chunked_array(chunks, type=target.type)
    if not target.nullable and result.null_count:
        raise ConformError(
            f"column {target.name!r} is required by the table but has "
            f"{result.null_count} null value(s)"
        )

    return result


def conform_array(
    array: pa.Array,
    target: pa.DataType,
    path: str,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Array:
    """Conform one array to ``target``; ``path`` names the column in errors."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()

    source = array.type
    if source == target:
        return array

    if pa.types.is_null(source):
        return pa.nulls(len(array), target)

    if pa.types.is_struct(target):
        return conform_struct(array, target, path, naive_timezone, stats)

    if pa.types.is_map(target):
        return conform_map(array, target, path, naive_timezone, stats)

    if is_list_type(target):
        return conform_list(array, target, path, naive_timezone, stats)

    if pa.types.is_timestamp(target) and pa.types.is_timestamp(source):
        return conform_timestamp(array, target, path, naive_timezone, stats)

    return cast_exactly(array, target, path)


def cast_exactly(array: pa.Array, target: pa.DataType, path: str) -> pa.Array:
    """A safe cast: refuse the file rather than change a value."""
    if is_uuid(target) and array.type == pa.binary(16):
        return pa.ExtensionArray.from_storage(target, array)

    if is_uuid(array.type) and target == pa.binary(16):
        return array.storage

    if not is_castable(array.type, target):
        raise ConformError(
            f"column {path!r} has type {array.type} which cannot become the table's "
            f"{target}"
        )

    try:
        result = pc.cast(array, target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        text = str(exc)
        reason = "out of range" if "range" in text or "overflow" in text else text
        raise ConformError(
            f"column {path!r}: values of type {array.type} do not fit the table's "
            f"{target} ({reason})"
        ) from exc

    if pa.types.is_floating(target) and not is_round_trip(array, result):
        raise ConformError(
            f"column {path!r}: values of type {array.type} would be rounded in the "
            f"table's {target}"
        )

    return result


def is_uuid(data_type: pa.DataType) -> bool:
    """Whether a type is Arrow's canonical UUID extension type."""
    return bool(getattr(data_type, "extension_name", None) == "arrow.uuid")


def is_round_trip(source: pa.Array, result: pa.Array) -> bool:
    """Whether every value survives a cast to floating point.

    Arrow's safe cast lets a double round to a float and a long round to a double;
    casting back and comparing (NaN equal to NaN) tells whether anything changed.
    """
    source_type = source.type
    if pa.types.is_floating(source_type):
        if result.type.bit_width >= source_type.bit_width:
            return True

        back = pc.cast(result, source_type, safe=False)
        same = pc.or_(
            pc.equal(back, source), pc.and_(pc.is_nan(back), pc.is_nan(source))
        )
    elif pa.types.is_integer(source_type):
        same = pc.equal(pc.cast(result, source_type, safe=False), source)
    else:
        return True

    return bool(pc.all(pc.fill_null(same, True)).as_py())


def is_castable(source: pa.DataType, target: pa.DataType) -> bool:
    """Which kinds may meet: numbers with numbers, text with text, and so on."""

    def kind(data_type: pa.DataType) -> str:
        if pa.types.is_integer(data_type):
            return "int"
        if pa.types.is_floating(data_type):
            return "float"
        if pa.types.is_decimal(data_type):
            return "decimal"
        if pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
            return "string"
        if data_type == pa.string_view():
            return "string"
        if pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
            return "binary"
        if data_type == pa.binary_view() or pa.types.is_fixed_size_binary(data_type):
            return "binary"
        if pa.types.is_date(data_type):
            return "date"
        if pa.types.is_time(data_type):
            return "time"
        return str(data_type)

    pair = (kind(source), kind(target))
    allowed = {
        ("int", "float"),
        ("int", "decimal"),
        ("float", "float"),
        ("int", "int"),
        ("decimal", "decimal"),
        ("string", "string"),
        ("binary", "binary"),
        ("date", "date"),
        ("time", "time"),
        ("string", "binary"),
    }
    return pair in allowed or pair[0] == pair[1]


def conform_timestamp(
    array: pa.Array,
    target: pa.DataType,
    path: str,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Array:
    """Timestamps to the table's unit and zone: same instants, truncation counted."""
    source = array.type
    if bool(source.tz) != bool(target.tz):
        if naive_timezone is None:
            have = f"zone {source.tz}" if source.tz else "no time zone"
            want = f"zone {target.tz}" if target.tz else "no time zone"
            raise ConformError(
                f"column {path!r} has {have} but the table column has {want}; set "
                "naive_timezone to say how naive values should be read"
            )

        if source.tz is None:
            array = pc.assume_timezone(array, naive_timezone)
        else:
            array = pc.local_timestamp(array)

        source = array.type

    if source.unit == "ns" and target.unit == "us":
        raw = array.cast(pa.int64())
        remainder = pc.sum(pc.not_equal(pc.remainder(raw, 1000), 0)).as_py() or 0
        if remainder:
            stats.truncated_timestamps += remainder
            logger.debug("conform.truncated column=%s values=%d", path, remainder)

        floored = pc.subtract(raw, pc.remainder(raw, 1000))
        # Python-style floor for negatives: pc.remainder keeps the dividend's sign.
        negative = pc.less(pc.remainder(raw, 1000), 0)
        floored = pc.if_else(negative, pc.subtract(floored, 1000), floored)
        array = (
            pc.divide(floored, 1000)
            .cast(pa.int64())
            .view(pa.timestamp("us", source.tz))
        )
        source = array.type

    if source.tz and target.tz and source.tz != target.tz:
        array = array.cast(pa.timestamp(source.unit, target.tz))

    return cast_exactly(array, target, path)


def conform_struct(
    array: pa.Array,
    target: pa.StructType,
    path: str,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Array:
    """Match struct fields by name at this level, then recurse."""
    if not pa.types.is_struct(array.type):
        raise ConformError(f"column {path!r} is {array.type}, not a struct")

    names = [array.type.field(i).name for i in range(array.type.num_fields)]
    extra = set(names) - {target.field(i).name for i in range(target.num_fields)}
    if extra:
        raise ConformError(
            f"column {path!r} has nested field(s) {sorted(extra)!r} the table lacks"
        )

    children = []
    for i in range(target.num_fields):
        child = target.field(i)
        child_path = f"{path}.{child.name}"
        if child.name in names:
            values = array.field(names.index(child.name))
            children.append(
                conform_array(values, child.type, child_path, naive_timezone, stats)
            )
        else:
            children.append(pa.nulls(len(array), child.type))

    mask = array.is_null() if array.null_count else None
    fields = [target.field(i) for i in range(target.num_fields)]
    return pa.StructArray.from_arrays(children, fields=fields, mask=mask)


def conform_list(
    array: pa.Array,
    target: pa.DataType,
    path: str,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Array:
    """Conform list items, whatever the writer named the item field."""
    if not is_list_type(array.type):
        raise ConformError(f"column {path!r} is {array.type}, not a list")

    if pa.types.is_fixed_size_list(array.type) or "view" in str(array.type):
        array = array.cast(pa.large_list(array.type.value_type))

    flat = array.flatten()
    values = conform_array(flat, target.value_type, f"{path}[]", naive_timezone, stats)
    offsets = pc.subtract(array.offsets, array.offsets[0])
    mask = array.is_null() if array.null_count else None
    if pa.types.is_large_list(target):
        built = pa.LargeListArray.from_arrays(
            offsets.cast(pa.int64()), values, mask=mask
        )
    else:
        built = pa.ListArray.from_arrays(offsets.cast(pa.int32()), values, mask=mask)

    return built.cast(target)


def conform_map(
    array: pa.Array,
    target: pa.MapType,
    path: str,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Array:
    """Conform map keys and items."""
    if not pa.types.is_map(array.type):
        raise ConformError(f"column {path!r} is {array.type}, not a map")

    keys = conform_array(
        array.keys, target.key_type, f"{path}.key", naive_timezone, stats
    )
    items = conform_array(
        array.items, target.item_type, f"{path}.value", naive_timezone, stats
    )
    offsets = pc.subtract(array.offsets, array.offsets[0])
    mask = array.is_null() if array.null_count else None
    return pa.MapArray.from_arrays(offsets, keys, items, mask=mask).cast(target)
