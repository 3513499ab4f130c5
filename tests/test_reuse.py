"""Zero-copy: which files are kept as they are, and that they land exactly once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bifrost_async.config import load_settings
from bifrost_async.errors import ConfigError
from bifrost_async.reuse import reason_not_reusable
from bifrost_async.runner import run

from .helpers import numbers, parquet_bytes, upload_numbers

TARGET = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("label", pa.large_string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)


def footer(table: pa.Table, **options: Any) -> pq.FileMetaData:
    """The footer of ``table`` written as Parquet."""
    return pq.read_metadata(pa.BufferReader(parquet_bytes(table, **options)))


def reused_paths(table: Any) -> list[str]:
    """The data files of a table that were registered as they were."""
    return [
        task.file.file_path
        for task in table.scan().plan_files()
        if task.file.file_path.endswith("-reused.parquet")
    ]


@pytest.mark.parametrize(
    ("flag", "toml", "expected"),
    [
        pytest.param(None, "", "off", id="default-off"),
        pytest.param("copy", "", "copy", id="flag"),
        pytest.param("in-place", "", "in-place", id="flag-in-place"),
        pytest.param(None, "zero-copy = true", "copy", id="file"),
        pytest.param(None, "zero-copy = false", "off", id="file-off"),
        pytest.param(None, 'zero-copy = "in-place"', "in-place", id="file-in-place"),
        pytest.param("off", "zero-copy = true", "off", id="flag-over-file"),
    ],
)
def test_load_settings_reads_zero_copy(
    tmp_path: Path, flag: str | None, toml: str, expected: str
) -> None:
    """--zero-copy is off unless the flag or the file names a mode (true is copy)."""
    config = tmp_path / "bifrost.toml"
    config.write_text(toml + "\n")
    flags = {"source": ["s3://bucket/in/"], "table": "ns.t", "zero_copy": flag}

    assert load_settings(flags, str(config)).zero_copy == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"zero_copy": "sideways"}, "'sideways' is not one of", id="word"),
        pytest.param(
            {"zero_copy": "in-place", "on_changed": "ingest"},
            "cannot go with --on-changed",
            id="in-place-with-ingest",
        ),
    ],
)
def test_load_settings_refuses_a_bad_zero_copy(
    values: dict[str, Any], expected: str
) -> None:
    """An unknown mode, or in place where rewritten objects are ingested, is refused."""
    flags = {"source": ["s3://bucket/in/"], "table": "ns.t", **values}

    with pytest.raises(ConfigError, match=expected):
        load_settings(flags)


def test_reason_not_reusable_accepts_an_exact_match() -> None:
    """A flat file with the table's names, order and types qualifies."""
    metadata = footer(numbers(0, 5))

    assert reason_not_reusable(metadata, TARGET, unpartitioned=True) is None


@pytest.mark.parametrize(
    ("table", "options", "target", "unpartitioned", "expected"),
    [
        pytest.param(
            numbers(0, 5), {}, TARGET, False, "partitioned", id="partitioned-table"
        ),
        pytest.param(
            numbers(0, 5).select(["label", "id", "at"]),
            {},
            TARGET,
            True,
            "names or order",
            id="column-order",
        ),
        pytest.param(
            numbers(0, 5).drop_columns(["at"]), {}, TARGET, True, "names", id="missing"
        ),
        pytest.param(
            numbers(0, 5).set_column(2, "at", pa.array(range(5), pa.int64())),
            {},
            TARGET,
            True,
            "column 'at' is int64",
            id="other-type",
        ),
        pytest.param(
            numbers(0, 5).cast(
                pa.schema(
                    [
                        ("id", pa.int64()),
                        ("label", pa.string()),
                        ("at", pa.timestamp("ns", tz="UTC")),
                    ]
                )
            ),
            {"coerce_timestamps": None, "version": "2.6"},
            TARGET,
            True,
            "column 'at'",
            id="nanoseconds",
        ),
        pytest.param(
            numbers(0, 5),
            {"use_deprecated_int96_timestamps": True},
            TARGET,
            True,
            "INT96",
            id="int96",
        ),
        pytest.param(
            numbers(0, 5).cast(
                pa.schema(
                    [
                        pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "7"}),
                        pa.field("label", pa.string()),
                        pa.field("at", pa.timestamp("us", tz="UTC")),
                    ]
                )
            ),
            {},
            TARGET,
            True,
            "field id",
            id="own-field-ids",
        ),
        pytest.param(
            numbers(0, 5),
            {},
            pa.schema([pa.field("id", pa.int64(), nullable=False), *list(TARGET)[1:]]),
            True,
            "required",
            id="required-column",
        ),
        pytest.param(numbers(0, 0), {}, TARGET, True, "no rows", id="empty"),
    ],
)
def test_reason_not_reusable_refuses_what_the_normal_path_would_change(
    table: pa.Table,
    options: dict[str, Any],
    target: pa.Schema,
    unpartitioned: bool,
    expected: str,
) -> None:
    """Anything the normal path would cast, convert or map is not reused."""
    reason = reason_not_reusable(footer(table, **options), target, unpartitioned)

    assert reason is not None
    assert expected in reason


@pytest.mark.anyio
async def test_zero_copy_registers_matching_files_and_rewrites_the_rest(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Exact matches are kept as they are, others rewritten; every row lands once."""
    for n in range(3):
        upload_numbers(s3, bucket, f"z/part-{n}.parquet", n * 10, 10)

    reordered = parquet_bytes(numbers(30, 10).select(["label", "at", "id"]))
    s3.put_object(Bucket=bucket, Key="z/part-3.parquet", Body=reordered)
    settings = make_settings([f"s3://{bucket}/z/"], zero_copy="copy")

    first = await run(settings)
    second = await run(settings)

    table = load_table()
    assert (first.report.ingested, second.report.ingested) == (4, 0)
    assert len(reused_paths(table)) == 3
    assert len(list(table.scan().plan_files())) == 4
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(40))
    assert "schema.name-mapping.default" in table.properties
    assert all(s.summary.get("bifrost.batch-id") for s in table.metadata.snapshots)


@pytest.mark.anyio
async def test_zero_copy_keeps_reading_after_the_schema_evolves(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """A reused file stays readable by name after a later file adds a column."""
    upload_numbers(s3, bucket, "e/0.parquet", 0, 5)
    settings = make_settings([f"s3://{bucket}/e/"], zero_copy="copy")
    await run(settings)
    wider = numbers(5, 5).append_column("note", pa.array(["n"] * 5, pa.string()))
    s3.put_object(Bucket=bucket, Key="e/1.parquet", Body=parquet_bytes(wider))

    await run(settings)

    rows = load_table().scan().to_arrow().sort_by("id")
    assert rows.column("id").to_pylist() == list(range(10))
    assert rows.column("note").to_pylist() == [None] * 5 + ["n"] * 5
    assert rows.column("label").to_pylist()[0] == "row-0"


@pytest.mark.anyio
async def test_zero_copy_still_quarantines_damaged_files(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """A truncated file is quarantined on the zero-copy path too, never registered."""
    upload_numbers(s3, bucket, "d/0-good.parquet", 0, 10)
    whole = parquet_bytes(numbers(10, 10))
    s3.put_object(Bucket=bucket, Key="d/1-bad.parquet", Body=whole[:-20] + whole[-8:])
    settings = make_settings([f"s3://{bucket}/d/"], zero_copy="copy")

    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (1, 1)
    assert sorted(load_table().scan().to_arrow().column("id").to_pylist()) == list(
        range(10)
    )
