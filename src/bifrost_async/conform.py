"""Conformance: from a file's Arrow data to exactly the table's Arrow schema, by name.

This module owns the rule for each kind of type. Every rule either keeps the values
exactly, or changes them in a documented, counted way (nanoseconds floored to
microseconds), or raises :class:`ConformError` naming the column. Nothing is rounded,
wrapped or reinterpreted silently. It is pure: no I/O, no catalog. Which columns a
table gains is ``evolution.py``'s decision; the type a new column gets is
``normalize.py``'s.

The rules, by kind:

- integers and decimals: cast only when every value fits (unsigned to signed included);
  otherwise the file is refused naming the column and "out of range";
- floats: double to float, and integers to floating point, only when every value
  survives the cast exactly;
- timestamps: to microseconds, flooring sub-microsecond parts and counting them; any
  time zone to UTC (same instants); a naive column against a zoned one, or the reverse,
  is refused unless ``naive_timezone`` says how to read naive values; instants and
  dates outside the years 1 to 9999 are refused (pyiceberg cannot write them);
- strings and binaries: large, view and dictionary-encoded variants become the table's
  plain type, so that ``scan().to_arrow()`` keeps working;
- UUID and ``fixed[16]`` fill each other byte for byte;
- ``null``-typed columns become nulls of the table's type, and never create a column;
- structs, lists and maps are matched by field name at every level; a missing optional
  field becomes nulls; a required table field must have no nulls; a null list or map
  of structs is refused (pyiceberg would store it as empty, apache/iceberg-python#3833);
- pandas ``__index_level_N__`` columns are dropped before anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from .errors import ConformError
from .evolution import (
    EvolutionMode,
    find_nested_additions,
    find_new_fields,
    find_widened_fields,
    plan_schema,
)
from .normalize import (
    drop_index_columns,
    is_list_type,
    normalize_field,
    normalize_schema,
    normalize_type,
)

__all__ = [
    "check_column_names",
    "ConformStats",
    "Conformed",
    "EvolutionMode",
    "conform_table",
    "drop_index_columns",
    "normalize_field",
    "normalize_schema",
    "normalize_type",
]

logger = logging.getLogger(__name__)


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
    check_column_names(table.schema)
    stats = ConformStats()
    new_fields, discarded = find_new_fields(table.schema, target, evolution)
    if discarded:
        stats.dropped_columns.extend(discarded)
        logger.warning("conform.columns_discarded columns=%s", ",".join(discarded))

    if evolution == "add":
        new_fields += find_widened_fields(table.schema, target)
        new_fields += find_nested_additions(table.schema, target)

    planned = plan_schema(target, new_fields)
    conformed = cast_to_schema(table, planned, naive_timezone, stats)
    return Conformed(conformed, new_fields, stats)


def check_column_names(fields: Iterable[pa.Field], path: str = "") -> None:
    """Refuse an empty column name, or two names that differ at most by case.

    At every level of nesting. Iceberg can hold neither (an empty name breaks the
    table's metadata for good; two columns that match one table column by name leave
    the data ambiguous), so such a file is refused before it can touch the table.
    """
    seen: dict[str, str] = {}
    for column in fields:
        name = f"{path}.{column.name}" if path else column.name
        if not column.name:
            where = f" inside {path!r}" if path else ""
            raise ConformError(f"a column{where} has an empty name")

        twin = seen.get(column.name.lower())
        if twin is not None:
            if twin == column.name:
                raise ConformError(f"column {name!r} appears twice")

            raise ConformError(f"columns {twin!r} and {name!r} differ only by case")

        seen[column.name.lower()] = column.name
        children = nested_fields(column.type)
        if children:
            check_column_names(children, name)


def nested_fields(data_type: pa.DataType) -> list[pa.Field]:
    """The fields directly inside a struct, list or map type (none for the rest)."""
    if pa.types.is_struct(data_type):
        return [data_type.field(i) for i in range(data_type.num_fields)]

    if pa.types.is_map(data_type):
        return nested_fields(data_type.item_type)

    if (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
        or pa.types.is_list_view(data_type)
    ):
        return nested_fields(data_type.value_type)

    return []


def cast_to_schema(
    table: pa.Table,
    target: pa.Schema,
    naive_timezone: str | None,
    stats: ConformStats,
) -> pa.Table:
    """Build exactly ``target`` from the file's columns, by name, and check it."""
    # A set, not column_names in the loop: that list is rebuilt on every access, which
    # made a file of 1,500 columns take seconds.
    present = set(table.column_names)
    columns = []
    for target_field in target:
        if target_field.name in present:
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
                "--naive-timezone to say how naive values should be read"
            )

        array = convert_naive(array, naive_timezone, path)
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


def convert_naive(array: pa.Array, zone: str, path: str) -> pa.Array:
    """Naive wall-clock times read in ``zone``, or zoned instants as ``zone``'s clock.

    A wall-clock time that does not exist in ``zone`` (skipped by a DST change) or
    exists twice refuses the file rather than be guessed.
    """
    source = array.type
    if source.tz is not None:
        return pc.local_timestamp(array.cast(pa.timestamp(source.unit, zone)))

    try:
        return pc.assume_timezone(array, zone)
    except pa.ArrowInvalid as exc:
        raise ConformError(
            f"column {path!r} has wall-clock times that are ambiguous or do not exist "
            f"in {zone} ({exc})"
        ) from exc


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
