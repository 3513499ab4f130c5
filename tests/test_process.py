"""Processing options end to end: lineage columns and the naive time zone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest

from bifrost_async.config import load_settings
from bifrost_async.errors import ConfigError
from bifrost_async.ledger import Ledger
from bifrost_async.process import plan_chunks
from bifrost_async.runner import run

from .helpers import numbers, parquet_bytes, upload_numbers

pytestmark = pytest.mark.anyio


async def test_process_lineage_adds_source_etag_and_time_to_every_row(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """--lineage fills the three lineage columns for every row of every file."""
    upload_numbers(s3, bucket, "in/a.parquet", 0, 3)
    upload_numbers(s3, bucket, "in/b.parquet", 3, 2)
    etags = {
        key: s3.head_object(Bucket=bucket, Key=f"in/{key}")["ETag"].strip('"')
        for key in ("a.parquet", "b.parquet")
    }
    before = dt.datetime.now(dt.UTC)

    await run(make_settings([f"s3://{bucket}/in/"], lineage=True))

    rows = load_table().scan().to_arrow().sort_by("id").to_pylist()
    assert [r["_bifrost_source_uri"] for r in rows] == (
        [f"s3://{bucket}/in/a.parquet"] * 3 + [f"s3://{bucket}/in/b.parquet"] * 2
    )
    assert [r["_bifrost_etag"] for r in rows] == (
        [etags["a.parquet"]] * 3 + [etags["b.parquet"]] * 2
    )
    assert all(
        before <= r["_bifrost_ingested_at"] <= dt.datetime.now(dt.UTC) for r in rows
    )


async def test_process_lineage_joins_an_existing_frozen_table(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Turning lineage on later adds its columns even when evolution is frozen."""
    upload_numbers(s3, bucket, "in/a.parquet", 0, 2)
    await run(make_settings([f"s3://{bucket}/in/"], route={"evolution": "freeze"}))
    upload_numbers(s3, bucket, "in/b.parquet", 2, 2)

    settings = make_settings(
        [f"s3://{bucket}/in/"], route={"evolution": "freeze"}, lineage=True
    )
    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (1, 0)
    rows = load_table().scan().to_arrow().sort_by("id").to_pylist()
    assert [r["_bifrost_source_uri"] is None for r in rows] == [
        True,
        True,
        False,
        False,
    ]


async def test_process_naive_timezone_reads_naive_files_into_a_zoned_table(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """A naive file lands in a UTC table once naive_timezone says how to read it."""
    settings = make_settings([f"s3://{bucket}/in/"])
    upload_numbers(s3, bucket, "in/0-zoned.parquet", 0, 1)
    await run(settings)
    wall = dt.datetime(2024, 6, 1, 12, 0)
    naive = numbers(1, 1).set_column(2, "at", pa.array([wall], pa.timestamp("us")))
    s3.put_object(Bucket=bucket, Key="in/1-naive.parquet", Body=parquet_bytes(naive))
    await run(settings)
    [entry] = Ledger(settings.state).retry_quarantined()
    assert "--naive-timezone" in entry["reason"]

    await run(make_settings([f"s3://{bucket}/in/"], naive_timezone="Europe/Berlin"))

    at = load_table().scan().to_arrow().sort_by("id").column("at").to_pylist()
    assert at[1] == dt.datetime(2024, 6, 1, 10, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        ({"lineage": True}, "lineage", True),
        ({"naive_timezone": "Asia/Tokyo"}, "naive_timezone", "Asia/Tokyo"),
        ({"quarantine_prefix": "s3://bad/q"}, "quarantine_prefix", "s3://bad/q/"),
        ({"stream_above": "64MiB"}, "stream_above", 64 * 1024**2),
    ],
    ids=["lineage", "naive-timezone", "quarantine-prefix", "stream-above"],
)
def test_process_settings_are_read_from_flags(
    flags: dict[str, Any], field: str, value: Any
) -> None:
    """The processing flags reach Settings, normalized."""
    settings = load_settings({"source": ["s3://landing/x/"], "table": "ns.t", **flags})

    assert getattr(settings, field) == value


def test_process_settings_refuse_an_unknown_time_zone() -> None:
    """An unknown --naive-timezone is a configuration error naming the flag."""
    with pytest.raises(ConfigError, match="--naive-timezone: 'Mars/Base'"):
        load_settings(
            {
                "source": ["s3://landing/x/"],
                "table": "ns.t",
                "naive_timezone": "Mars/Base",
            }
        )


async def test_process_polars_panic_in_a_transform_quarantines_the_file(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Any],
    load_table: Any,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A polars PanicException (a BaseException) quarantines its file; others land."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "panicky.py").write_text(
        "from polars.exceptions import PanicException\n\n"
        "def shape(frame):\n"
        "    if frame['id'].min() >= 100:\n"
        "        raise PanicException('index out of bounds')\n"
        "    return frame\n"
    )
    upload_numbers(s3, bucket, "in/a.parquet", 0, 5)
    upload_numbers(s3, bucket, "in/b.parquet", 100, 5)
    settings = make_settings(
        [f"s3://{bucket}/in/"], route={"transform": "panicky:shape"}
    )

    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (1, 1)
    [entry] = Ledger(settings.state).status()["quarantined"]
    assert entry["key"] == "in/b.parquet"
    assert "polars panicked" in entry["reason"]
    assert load_table().scan().to_arrow().num_rows == 5


@pytest.mark.parametrize(
    ("sizes", "limit", "chunks"),
    [
        ([10, 10, 10], 100, [[0, 1, 2]]),
        ([10, 10, 10], 20, [[0, 1], [2]]),
        ([50, 10, 10], 20, [[0], [1, 2]]),
        ([10, 50, 10], 20, [[0], [1], [2]]),
    ],
    ids=["one-chunk", "pairs", "big-first", "big-middle"],
)
def test_process_plan_chunks_keeps_row_groups_in_order_within_the_limit(
    sizes: list[int], limit: int, chunks: list[list[int]]
) -> None:
    """Row groups are grouped in order; one bigger than the limit stands alone."""

    class Group:
        def __init__(self, size: int) -> None:
            self.total_byte_size = size

    class Footer:
        num_row_groups = len(sizes)

        def row_group(self, index: int) -> Group:
            return Group(sizes[index])

    assert plan_chunks(Footer(), limit) == chunks  # type: ignore[arg-type]


def test_process_transform_returning_no_frame_names_what_it_returned() -> None:
    """A transform that returns something else than a DataFrame says what it gave."""
    from bifrost_async.discovery import ObjectRef
    from bifrost_async.errors import ConformError
    from bifrost_async.process import apply_transform

    obj = ObjectRef("b", "in/a.parquet", 10, "e")

    with pytest.raises(ConformError) as caught:
        apply_transform(numbers(0, 3), lambda frame: None, obj)

    assert str(caught.value) == (
        "s3://b/in/a.parquet: transform returned NoneType, not a polars DataFrame"
    )


def test_process_transform_returning_no_columns_is_refused() -> None:
    """A transform that drops every column would lose every row: it is refused."""
    from bifrost_async.discovery import ObjectRef
    from bifrost_async.errors import ConformError
    from bifrost_async.process import apply_transform

    obj = ObjectRef("b", "in/a.parquet", 10, "e")

    with pytest.raises(ConformError, match="transform returned a DataFrame with no"):
        apply_transform(numbers(0, 3), lambda frame: frame.select([]), obj)


async def test_process_empty_column_name_is_quarantined_and_leaves_the_table(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Any],
    load_table: Any,
) -> None:
    """A file with an empty column name never reaches the table; later files land."""
    upload_numbers(s3, bucket, "in/a.parquet", 0, 5)
    odd = pa.table({"id": pa.array([7], pa.int64()), "": pa.array(["x"])})
    s3.put_object(Bucket=bucket, Key="in/b.parquet", Body=parquet_bytes(odd))
    upload_numbers(s3, bucket, "in/c.parquet", 100, 5)
    settings = make_settings([f"s3://{bucket}/in/"], batch_max_files=1)

    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (2, 1)
    [entry] = Ledger(settings.state).status()["quarantined"]
    assert entry["key"] == "in/b.parquet"
    assert entry["reason"].endswith("a column has an empty name")
    table = load_table()
    assert "" not in table.schema().column_names
    assert table.scan().to_arrow().num_rows == 10


def test_process_lineage_replaces_a_source_column_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file's own ``_bifrost_etag`` gives way to the real ETag, and says so."""
    import logging

    from bifrost_async.discovery import ObjectRef
    from bifrost_async.process import add_lineage

    obj = ObjectRef("b", "in/a.parquet", 10, "real-etag")
    table = numbers(0, 2).append_column("_bifrost_etag", pa.array(["mine", "mine"]))

    with caplog.at_level(logging.WARNING, logger="bifrost_async.process"):
        result = add_lineage(table, obj, dt.datetime.now(dt.UTC))

    assert result.column("_bifrost_etag").to_pylist() == ["real-etag", "real-etag"]
    assert [r.getMessage() for r in caplog.records] == [
        "lineage.replaced uri=s3://b/in/a.parquet column=_bifrost_etag"
    ]
