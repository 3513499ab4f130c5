"""The conformance rules, one kind at a time, without I/O."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pyarrow as pa
import pytest

from bifrost_async.conform import (
    conform_table,
    drop_index_columns,
    normalize_schema,
    normalize_type,
)
from bifrost_async.errors import ConformError

UTC = dt.UTC


def conform_one(
    values: pa.Array,
    target: pa.DataType,
    nullable: bool = True,
    evolution: Any = "freeze",
    **options: Any,
) -> Any:
    """Conform a one-column table ``c`` to a one-column target schema.

    Frozen by default, so that the value rules are tested without type promotion.
    """
    schema = pa.schema([pa.field("c", target, nullable=nullable)])
    return conform_table(pa.table({"c": values}), schema, evolution, **options)


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        (pa.array([1, 2**31 - 1], pa.int64()), pa.int32(), [1, 2**31 - 1]),
        (pa.array([1, 2], pa.int32()), pa.int64(), [1, 2]),
        (pa.array([0, 65_535], pa.uint16()), pa.int32(), [0, 65_535]),
        (pa.array([0, 2**63 - 1], pa.uint64()), pa.int64(), [0, 2**63 - 1]),
        (pa.array([1.5, None], pa.float32()), pa.float64(), [1.5, None]),
        (pa.array([1.5], pa.float16()), pa.float32(), [1.5]),
        (
            pa.array([1.5, float("inf")], pa.float64()),
            pa.float32(),
            [1.5, float("inf")],
        ),
        (pa.array([2**53], pa.int64()), pa.float64(), [float(2**53)]),
        (
            pa.array([decimal.Decimal("1.50")], pa.decimal128(5, 2)),
            pa.decimal128(12, 2),
            [decimal.Decimal("1.50")],
        ),
        (
            pa.array([decimal.Decimal("1.5")], pa.decimal128(5, 1)),
            pa.decimal128(10, 2),
            [decimal.Decimal("1.50")],
        ),
        (
            pa.array([decimal.Decimal("123.45")], pa.decimal256(40, 2)),
            pa.decimal128(38, 2),
            [decimal.Decimal("123.45")],
        ),
        (pa.array(["a", None], pa.large_string()), pa.string(), ["a", None]),
        (pa.array(["a", None], pa.string_view()), pa.large_string(), ["a", None]),
        (pa.array([b"\x00"], pa.binary_view()), pa.large_binary(), [b"\x00"]),
        (pa.array(["x"], pa.string()), pa.large_binary(), [b"x"]),
        (
            pa.array(["b", "a", "b"]).dictionary_encode(),
            pa.large_string(),
            ["b", "a", "b"],
        ),
        (pa.array([86_400_000], pa.date64()), pa.date32(), [dt.date(1970, 1, 2)]),
        (pa.array([1_000], pa.time32("ms")), pa.time64("us"), [dt.time(0, 0, 1)]),
        (pa.array([1_000], pa.time64("ns")), pa.time64("us"), [dt.time(0, 0, 0, 1)]),
        (pa.nulls(2), pa.large_string(), [None, None]),
        (pa.nulls(1), pa.list_(pa.int32()), [None]),
    ],
    ids=[
        "long-to-int-fits",
        "int-to-long",
        "uint16-to-int",
        "uint64-to-long-fits",
        "float-to-double",
        "half-to-float",
        "double-to-float-exact",
        "long-to-double-exact",
        "decimal-precision-widened",
        "decimal-scale-widened",
        "decimal256-fits-decimal128",
        "large-string",
        "string-view",
        "binary-view",
        "string-to-binary",
        "dictionary-decoded",
        "date64",
        "time32-ms",
        "time64-ns-exact",
        "null-typed-to-string",
        "null-typed-to-list",
    ],
)
def test_conform_keeps_values_exactly(
    values: pa.Array, target: pa.DataType, expected: list[Any]
) -> None:
    """Each kind casts to the table's type with every value unchanged."""
    conformed = conform_one(values, target)

    column = conformed.table.column("c")
    assert column.type == target
    assert column.to_pylist() == expected


@pytest.mark.parametrize(
    ("values", "target", "words"),
    [
        (pa.array([2**31], pa.int64()), pa.int32(), ["out of range"]),
        (pa.array([2**63], pa.uint64()), pa.int64(), ["out of range"]),
        (pa.array([70_000], pa.uint32()), pa.int16(), ["out of range"]),
        (pa.array([1.1], pa.float64()), pa.float32(), ["double", "float", "rounded"]),
        (pa.array([2**53 + 1], pa.int64()), pa.float64(), ["int64", "double"]),
        (pa.array([1.5], pa.float64()), pa.int64(), ["double", "int64"]),
        (
            pa.array([decimal.Decimal("1.25")], pa.decimal128(5, 2)),
            pa.decimal128(5, 1),
            ["decimal128(5, 2)", "decimal128(5, 1)"],
        ),
        (
            pa.array([decimal.Decimal("12345.6")], pa.decimal128(6, 1)),
            pa.decimal128(5, 1),
            ["decimal128(6, 1)", "decimal128(5, 1)"],
        ),
        (pa.array(["9.5"]), pa.float64(), ["string", "double"]),
        (pa.array([1], pa.int64()), pa.large_string(), ["int64", "large_string"]),
        (pa.array([1_001], pa.time64("ns")), pa.time64("us"), ["time64"]),
        (pa.array([b"x"], pa.binary()), pa.large_string(), ["binary", "string"]),
    ],
    ids=[
        "long-overflows-int",
        "uint64-overflows-long",
        "uint32-overflows-short",
        "double-rounded-to-float",
        "long-rounded-to-double",
        "double-to-long",
        "decimal-scale-narrowed",
        "decimal-precision-narrowed",
        "string-to-double",
        "long-to-string",
        "time-ns-not-whole-micros",
        "binary-to-string",
    ],
)
def test_conform_refuses_values_that_would_change(
    values: pa.Array, target: pa.DataType, words: list[str]
) -> None:
    """Narrowing, overflow and incompatible kinds raise, naming the column and types."""
    with pytest.raises(ConformError) as caught:
        conform_one(values, target)

    message = str(caught.value)
    assert "'c'" in message
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    ("raw", "expected", "truncated"),
    [
        ([1_000, 2_000], [1, 2], 0),
        ([1_789, 2_001, None], [1, 2, None], 2),
        ([-1, -1_000, -1_001], [-1, -1, -2], 2),
    ],
    ids=["whole-micros", "sub-micros-counted", "negative-floored"],
)
def test_conform_timestamp_ns_floors_to_micros_and_counts(
    raw: list[int | None], expected: list[int | None], truncated: int
) -> None:
    """Nanoseconds become microseconds by floor; the truncated values are counted."""
    values = pa.array(raw, pa.int64()).cast(pa.timestamp("ns"))

    conformed = conform_one(values, pa.timestamp("us"))

    assert conformed.table.column("c").cast(pa.int64()).to_pylist() == expected
    assert conformed.stats.truncated_timestamps == truncated


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "+05:30"]
)
def test_conform_timestamp_zone_becomes_utc_with_same_instants(zone: str) -> None:
    """Any time zone lands as UTC, every instant unchanged."""
    instants = [0, 1_709_294_400_000_000, -86_400_000_000]
    values = pa.array(instants, pa.int64()).cast(pa.timestamp("us", tz=zone))

    conformed = conform_one(values, pa.timestamp("us", tz="UTC"))

    column = conformed.table.column("c")
    assert column.type == pa.timestamp("us", tz="UTC")
    assert column.cast(pa.int64()).to_pylist() == instants


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (pa.timestamp("us"), pa.timestamp("us", tz="UTC")),
        (pa.timestamp("us", tz="UTC"), pa.timestamp("us")),
    ],
    ids=["naive-into-zoned", "zoned-into-naive"],
)
def test_conform_naive_against_zoned_is_refused_by_default(
    source: pa.DataType, target: pa.DataType
) -> None:
    """Without naive_timezone a naive column never meets a zoned one."""
    with pytest.raises(ConformError, match="'c'.*--naive-timezone"):
        conform_one(pa.array([0], pa.int64()).cast(source), target)


def test_conform_naive_timezone_reads_naive_values_in_that_zone() -> None:
    """With naive_timezone, naive wall-clock times are read in that zone."""
    wall = dt.datetime(2024, 6, 1, 12, 0)
    values = pa.array([wall], pa.timestamp("us"))

    conformed = conform_one(
        values, pa.timestamp("us", tz="UTC"), naive_timezone="Europe/Berlin"
    )

    [landed] = conformed.table.column("c").to_pylist()
    assert landed == dt.datetime(2024, 6, 1, 10, 0, tzinfo=UTC)


def test_conform_uuid_from_fixed16_keeps_bytes() -> None:
    """A fixed[16] column lands in a UUID column with the same 16 bytes."""
    ids = [uuid.UUID(int=1), uuid.UUID("12345678-1234-5678-1234-567812345678")]
    values = pa.array([u.bytes for u in ids], pa.binary(16))

    conformed = conform_one(values, pa.uuid())

    column = conformed.table.column("c")
    assert column.type == pa.uuid()
    assert column.to_pylist() == ids


def test_conform_uuid_to_fixed16_keeps_bytes() -> None:
    """A UUID column lands in a fixed[16] column with the same 16 bytes."""
    ids = [uuid.UUID(int=7)]
    values = pa.ExtensionArray.from_storage(
        pa.uuid(), pa.array([ids[0].bytes], pa.binary(16))
    )

    conformed = conform_one(values, pa.binary(16))

    assert conformed.table.column("c").to_pylist() == [ids[0].bytes]


STRUCT = pa.struct([pa.field("city", pa.large_string()), pa.field("zip", pa.int32())])


@pytest.mark.parametrize(
    ("values", "target", "expected"),
    [
        (
            pa.array(
                [{"zip": 1, "city": "X"}, None],
                pa.struct([pa.field("zip", pa.int64()), pa.field("city", pa.string())]),
            ),
            STRUCT,
            [{"city": "X", "zip": 1}, None],
        ),
        (
            pa.array([{"city": "Y"}], pa.struct([pa.field("city", pa.string())])),
            STRUCT,
            [{"city": "Y", "zip": None}],
        ),
        (
            pa.array([[1, 2], None, []], pa.list_(pa.field("item", pa.int32()))),
            pa.large_list(pa.field("element", pa.int64())),
            [[1, 2], None, []],
        ),
        (
            pa.array([[1, 2]], pa.list_(pa.int32(), 2)),
            pa.large_list(pa.int64()),
            [[1, 2]],
        ),
        (
            pa.array([[("k", 1)], None], pa.map_(pa.string(), pa.int32())),
            pa.map_(pa.large_string(), pa.int64()),
            [[("k", 1)], None],
        ),
        (
            pa.array(
                [[{"zip": 2, "city": "Z"}]],
                pa.list_(
                    pa.struct(
                        [pa.field("zip", pa.int32()), pa.field("city", pa.string())]
                    )
                ),
            ),
            pa.large_list(STRUCT),
            [[{"city": "Z", "zip": 2}]],
        ),
    ],
    ids=[
        "struct-reordered",
        "struct-missing-field",
        "list-item-renamed",
        "fixed-size-list",
        "map-widened",
        "list-of-structs-by-name",
    ],
)
def test_conform_nested_values_match_by_name(
    values: pa.Array, target: pa.DataType, expected: list[Any]
) -> None:
    """Structs, lists and maps are conformed by field name at every level."""
    conformed = conform_one(values, target)

    assert conformed.table.column("c").type == target
    assert conformed.table.column("c").to_pylist() == expected


def test_conform_nested_overflow_names_the_nested_path() -> None:
    """A value that does not fit deep inside a struct names its path."""
    values = pa.array([{"n": 2**40}], pa.struct([pa.field("n", pa.int64())]))
    target = pa.struct([pa.field("n", pa.int32())])

    with pytest.raises(ConformError, match=r"'c\.n'.*out of range"):
        conform_one(values, target)


def test_conform_null_list_of_structs_is_refused() -> None:
    """A null list of structs is refused: pyiceberg would store it as ``[]``."""
    values = pa.array([None, [{"city": "X", "zip": 1}]], pa.large_list(STRUCT))

    with pytest.raises(ConformError, match=r"'c'.*iceberg-python#3833"):
        conform_one(values, pa.large_list(STRUCT))


@pytest.mark.parametrize(
    "values",
    [
        pa.array([dt.datetime(1, 1, 1), None], pa.timestamp("us")),
        pa.array([dt.datetime(9999, 12, 31, 23, 59, 59)], pa.timestamp("us")),
    ],
    ids=["year-1", "year-9999"],
)
def test_conform_far_timestamps_within_years_1_to_9999_land(values: pa.Array) -> None:
    """The first and last representable instants land unchanged."""
    conformed = conform_one(values, pa.timestamp("us"))

    assert conformed.table.column("c").to_pylist() == values.to_pylist()


def test_conform_timestamps_beyond_year_9999_are_refused() -> None:
    """A timestamp past 9999-12-31 is refused, naming the column."""
    values = pa.array([253_402_300_800_000_000], pa.int64()).cast(pa.timestamp("us"))

    with pytest.raises(ConformError, match="'c'.*years 1 to 9999"):
        conform_one(values, pa.timestamp("us"))


@pytest.mark.parametrize(
    ("values", "ok"),
    [(pa.array([1, 2], pa.int64()), True), (pa.array([1, None], pa.int64()), False)],
    ids=["no-nulls", "with-nulls"],
)
def test_conform_required_column_takes_only_values_without_nulls(
    values: pa.Array, ok: bool
) -> None:
    """An optional file column fills a required one only when it has no nulls."""
    if ok:
        conformed = conform_one(values, pa.int64(), nullable=False)
        assert conformed.table.column("c").to_pylist() == [1, 2]
    else:
        with pytest.raises(ConformError, match="'c'.*required.*1 null"):
            conform_one(values, pa.int64(), nullable=False)


TARGET = pa.schema([pa.field("order_id", pa.int64()), pa.field("amount", pa.float64())])


def test_conform_missing_columns_become_nulls_and_order_follows_the_table() -> None:
    """Reordered columns land by name; a missing optional column becomes nulls."""
    table = pa.table({"amount": [9.5], "other": ["x"]}).drop(["other"])

    conformed = conform_table(table, TARGET)

    assert conformed.table.to_pylist() == [{"order_id": None, "amount": 9.5}]


@pytest.mark.parametrize(
    ("evolution", "new_names", "columns"),
    [
        ("add", ["channel"], ["order_id", "amount", "channel"]),
        ("discard", [], ["order_id", "amount"]),
    ],
    ids=["add", "discard"],
)
def test_conform_new_columns_follow_the_evolution_mode(
    evolution: Any, new_names: list[str], columns: list[str]
) -> None:
    """add returns the new optional columns; discard drops them."""
    table = pa.table({"order_id": [1], "amount": [1.0], "channel": ["web"]})

    conformed = conform_table(table, TARGET, evolution)

    assert [f.name for f in conformed.new_fields] == new_names
    assert all(f.nullable for f in conformed.new_fields)
    if not new_names:
        assert conformed.table.column_names == columns
        assert conformed.stats.dropped_columns == ["channel"]


def test_conform_frozen_evolution_refuses_new_columns_by_name() -> None:
    """freeze refuses a file with a new column, naming it."""
    table = pa.table({"order_id": [1], "amount": [1.0], "channel": ["web"]})

    with pytest.raises(ConformError, match="'channel'.*frozen"):
        conform_table(table, TARGET, "freeze")


@pytest.mark.parametrize("evolution", ["add", "freeze", "discard"])
def test_conform_case_only_twin_is_refused_in_every_mode(evolution: Any) -> None:
    """A column that differs from a table column only by case is never added."""
    table = pa.table({"Order_ID": [1], "amount": [1.0]})

    with pytest.raises(ConformError, match="'Order_ID'.*'order_id'"):
        conform_table(table, TARGET, evolution)


def test_conform_null_typed_new_column_never_joins_the_table() -> None:
    """A null-typed column that the table lacks creates no column."""
    table = pa.table({"order_id": [1], "amount": [1.0], "note": pa.nulls(1)})

    conformed = conform_table(table, TARGET, "add")

    assert conformed.new_fields == []
    assert conformed.table.column_names == ["order_id", "amount"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (pa.timestamp("ns", tz="Europe/Berlin"), pa.timestamp("us", tz="UTC")),
        (pa.timestamp("ms"), pa.timestamp("us")),
        (pa.uint32(), pa.int64()),
        (pa.uint8(), pa.int32()),
        (pa.int16(), pa.int32()),
        (pa.string_view(), pa.large_string()),
        (pa.dictionary(pa.int8(), pa.string()), pa.large_string()),
        (pa.date64(), pa.date32()),
        (pa.time32("s"), pa.time64("us")),
        (pa.float16(), pa.float32()),
        (pa.null(), None),
        (pa.list_(pa.null()), None),
    ],
    ids=[
        "ns-zoned",
        "ms-naive",
        "uint32",
        "uint8",
        "int16",
        "string-view",
        "dictionary",
        "date64",
        "time32",
        "half",
        "null",
        "list-of-null",
    ],
)
def test_normalize_type_gives_new_columns_a_table_type(
    source: pa.DataType, expected: pa.DataType | None
) -> None:
    """A file's type becomes the type a new table column gets, or none at all."""
    assert normalize_type(source) == expected


def test_normalize_schema_drops_index_and_null_columns_and_field_ids() -> None:
    """A new table's schema has no index, no null-typed column, no foreign field ids."""
    schema = pa.schema(
        [
            pa.field(
                "a", pa.int64(), nullable=False, metadata={"PARQUET:field_id": "9"}
            ),
            pa.field("__index_level_0__", pa.int64()),
            pa.field("n", pa.null()),
        ]
    )

    normalized = normalize_schema(schema)

    assert normalized == pa.schema([pa.field("a", pa.int64())])
    assert normalized.field("a").metadata is None


def test_drop_index_columns_keeps_named_data_columns() -> None:
    """Only ``__index_level_N__`` columns go; a column named like an index stays."""
    table = pa.table({"page": ["/a"], "__index_level_0__": [10], "index": [1]})

    assert drop_index_columns(table).column_names == ["page", "index"]


@pytest.mark.parametrize(
    ("values", "target", "wider"),
    [
        (pa.array([2**40], pa.int64()), pa.int32(), pa.int64()),
        (pa.array([2**32 - 1], pa.uint32()), pa.int32(), pa.int64()),
        (pa.array([1.1], pa.float64()), pa.float32(), pa.float64()),
        (
            pa.array([decimal.Decimal("123456.78")], pa.decimal128(8, 2)),
            pa.decimal128(6, 2),
            pa.decimal128(8, 2),
        ),
    ],
    ids=["int-to-long", "uint32-to-long", "float-to-double", "decimal-digits"],
)
@pytest.mark.parametrize("evolution", ["add", "freeze", "discard"])
def test_conform_safe_widening_follows_the_evolution_mode(
    values: pa.Array, target: pa.DataType, wider: pa.DataType, evolution: Any
) -> None:
    """add widens the column to the file's type; the others refuse, naming both."""
    if evolution == "add":
        conformed = conform_one(values, target, evolution=evolution)
        assert [(f.name, f.type) for f in conformed.new_fields] == [("c", wider)]
        assert conformed.table.column("c").type == wider
        assert conformed.table.column("c").to_pylist() == values.to_pylist()
    else:
        with pytest.raises(ConformError) as caught:
            conform_one(values, target, evolution=evolution)

        assert "'c'" in str(caught.value) and str(target) in str(caught.value)


def test_conform_failing_file_proposes_no_widening() -> None:
    """A file whose other column fails is refused before any change is proposed."""
    table = pa.table(
        {"small": pa.array([2**40], pa.int64()), "big": pa.array([2**63], pa.uint64())}
    )
    target = pa.schema([pa.field("small", pa.int32()), pa.field("big", pa.int64())])

    with pytest.raises(ConformError, match="'big'.*out of range"):
        conform_table(table, target, "add")


def test_conform_narrower_file_types_land_without_a_change() -> None:
    """An int file into a long column, or a float into a double, changes nothing."""
    table = pa.table(
        {"n": pa.array([1], pa.int32()), "x": pa.array([1.5], pa.float32())}
    )
    target = pa.schema([pa.field("n", pa.int64()), pa.field("x", pa.float64())])

    conformed = conform_table(table, target, "add")

    assert conformed.new_fields == []
    assert conformed.table.to_pylist() == [{"n": 1, "x": 1.5}]


ADDR = pa.struct([pa.field("city", pa.large_string())])


def addr_table() -> pa.Table:
    """A file whose ``addr`` struct has a field the table lacks, inside a list too."""
    addr = pa.struct([pa.field("city", pa.string()), pa.field("country", pa.string())])
    return pa.table(
        {
            "addr": pa.array([{"city": "X", "country": "NL"}], addr),
            "past": pa.array([[{"city": "Y", "country": "BE"}]], pa.list_(addr)),
        }
    )


def test_conform_new_nested_fields_join_in_add_mode() -> None:
    """add proposes the grown struct (also inside a list) and conforms to it."""
    target = pa.schema([pa.field("addr", ADDR), pa.field("past", pa.large_list(ADDR))])

    conformed = conform_table(addr_table(), target, "add")

    grown = {f.name: f.type for f in conformed.new_fields}
    assert grown["addr"] == pa.struct(
        [pa.field("city", pa.large_string()), pa.field("country", pa.large_string())]
    )
    assert conformed.table.to_pylist() == [
        {
            "addr": {"city": "X", "country": "NL"},
            "past": [{"city": "Y", "country": "BE"}],
        }
    ]


def test_conform_new_nested_fields_are_refused_when_frozen() -> None:
    """freeze refuses a new nested field, naming its path."""
    target = pa.schema([pa.field("addr", ADDR), pa.field("past", pa.large_list(ADDR))])

    with pytest.raises(ConformError, match=r"'addr'.*'country'"):
        conform_table(addr_table(), target, "freeze")


def test_conform_nested_case_only_twin_is_refused() -> None:
    """A nested field that differs from the table's only by case is refused."""
    source = pa.table({"addr": pa.array([{"City": "X"}])})

    with pytest.raises(ConformError, match=r"'addr\.City'.*'addr\.city'"):
        conform_table(source, pa.schema([pa.field("addr", ADDR)]), "add")


def test_conform_foreign_field_ids_are_ignored() -> None:
    """Parquet field ids of the file never decide which column is which."""
    source = pa.table(
        {"a": [1], "b": [2]},
        schema=pa.schema(
            [
                pa.field("a", pa.int64(), metadata={"PARQUET:field_id": "2"}),
                pa.field("b", pa.int64(), metadata={"PARQUET:field_id": "1"}),
            ]
        ),
    )
    target = pa.schema(
        [
            pa.field("b", pa.int64(), metadata={"PARQUET:field_id": "2"}),
            pa.field("a", pa.int64(), metadata={"PARQUET:field_id": "1"}),
        ]
    )

    conformed = conform_table(source, target, "freeze")

    assert conformed.table.to_pylist() == [{"b": 2, "a": 1}]
    assert not any(f.metadata for f in conformed.table.schema)


@pytest.mark.parametrize(
    ("data_type", "words"),
    [
        (pa.decimal256(40, 2), "38"),
        (pa.duration("s"), "no Iceberg type"),
        (pa.month_day_nano_interval(), "no Iceberg type"),
    ],
    ids=["decimal-over-38", "duration", "interval"],
)
def test_normalize_schema_refuses_types_iceberg_lacks_naming_the_column(
    data_type: pa.DataType, words: str
) -> None:
    """A type no Iceberg column can hold is refused, never silently left out."""
    schema = pa.schema([pa.field("amount", data_type)])

    with pytest.raises(ConformError, match=f"'amount'.*{words}"):
        normalize_schema(schema)


def test_conform_decimal256_that_fits_lands_in_a_decimal128_column_in_add_mode() -> (
    None
):
    """A decimal256 file column whose values fit lands; no widening is proposed."""
    values = pa.array([decimal.Decimal("1.25")], pa.decimal256(40, 2))

    conformed = conform_one(values, pa.decimal128(10, 2), evolution="add")

    assert conformed.new_fields == []
    assert conformed.table.column("c").to_pylist() == [decimal.Decimal("1.25")]


def test_conform_naive_timezone_writes_zoned_values_as_that_zones_clock() -> None:
    """Into a naive column, zoned instants become naive_timezone's wall-clock time."""
    instant = dt.datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    values = pa.array([instant], pa.timestamp("us", tz="UTC"))

    conformed = conform_one(values, pa.timestamp("us"), naive_timezone="Europe/Berlin")

    assert conformed.table.column("c").to_pylist() == [dt.datetime(2024, 6, 1, 12, 0)]


def test_conform_naive_time_skipped_by_dst_is_refused() -> None:
    """A wall-clock time that does not exist in the zone refuses the file."""
    values = pa.array([dt.datetime(2024, 3, 31, 2, 30)], pa.timestamp("us"))

    with pytest.raises(ConformError, match="'c'.*Europe/Berlin"):
        conform_one(
            values, pa.timestamp("us", tz="UTC"), naive_timezone="Europe/Berlin"
        )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([pa.field("id", pa.int64()), pa.field("", pa.string())], "has an empty name"),
        (
            [pa.field("id", pa.int64()), pa.field("id", pa.string())],
            "'id' appears twice",
        ),
        (
            [pa.field("ID", pa.int64()), pa.field("id", pa.string())],
            "columns 'ID' and 'id' differ only by case",
        ),
        (
            [pa.field("s", pa.struct([pa.field("", pa.int32())]))],
            "a column inside 's' has an empty name",
        ),
        (
            [pa.field("l", pa.list_(pa.struct([("a", pa.int32()), ("a", pa.int8())])))],
            "'l.a' appears twice",
        ),
    ],
    ids=["empty", "twice", "case-twin", "nested-empty", "nested-twice"],
)
def test_conform_refuses_names_iceberg_cannot_hold(
    fields: list[pa.Field], reason: str
) -> None:
    """Empty and duplicate names are refused before anything reaches the table."""
    from bifrost_async.conform import check_column_names

    with pytest.raises(ConformError, match=reason):
        check_column_names(fields)
