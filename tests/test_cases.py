"""The data cases in ``../shared/cases`` through the whole ingester, one test per case.

Each case's ``normal*`` files are ingested first (the table is created from them), then
its other files; the assertions are what ``../shared/cases/README.md`` asks for.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from bifrost_async.config import Settings
from bifrost_async.ledger import Ledger, objects_table
from bifrost_async.runner import RunResult, run

pytestmark = [pytest.mark.anyio, pytest.mark.shared]


@dataclass
class CaseOutcome:
    """What the runs over a case left behind: the ledger's view and the table."""

    settings: Settings
    runs: list[RunResult]
    rows_by_key: dict[str, int]
    reasons: dict[str, str]
    table: Any

    def read(self) -> pa.Table:
        """The whole table as Arrow, the way a reader sees it."""
        return self.table.scan().to_arrow()


def ledger_rows(settings: Settings) -> dict[str, int]:
    """Base name to rows of every committed object in the ledger."""
    engine = sa.create_engine(settings.state)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(objects_table.c.key, objects_table.c.rows).where(
                    objects_table.c.state == "committed"
                )
            ).all()
    finally:
        engine.dispose()

    return {key.rsplit("/", 1)[-1]: int(count) for key, count in rows}


@pytest.fixture
def ingest_case(
    shared: Path,
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[[str], Any],
) -> Callable[..., Any]:
    """Run a case: its ``normal*`` files first, then its other files, one run each."""

    async def ingest(
        case: str,
        route: dict[str, Any] | None = None,
        objects: dict[str, bytes] | None = None,
        **values: Any,
    ) -> CaseOutcome:
        if objects is None:
            folder = shared / "cases" / case
            objects = {
                p.name: p.read_bytes()
                for p in sorted(folder.iterdir())
                if p.suffix == ".parquet"
            }

        first = {k: v for k, v in objects.items() if k.startswith("normal")}
        rest = {k: v for k, v in objects.items() if k not in first}
        settings = make_settings([f"s3://{bucket}/{case}/"], route=route, **values)
        runs = []
        for group in (first, rest):
            for name, body in group.items():
                s3.put_object(Bucket=bucket, Key=f"{case}/{name}", Body=body)

            runs.append(await run(settings))

        status = Ledger(settings.state).status()
        reasons = {
            q["key"].rsplit("/", 1)[-1]: q["reason"] for q in status["quarantined"]
        }
        return CaseOutcome(
            settings, runs, ledger_rows(settings), reasons, load_table("ns.events")
        )

    return ingest


def case_file(shared: Path, case: str, name: str) -> pa.Table:
    """One case file as pyarrow reads it (INT96 as microseconds)."""
    return pq.read_table(
        shared / "cases" / case / name, coerce_int96_timestamp_unit="us"
    )


async def test_case_ts_ns_truncates_to_microseconds_and_counts(
    ingest_case: Any, shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ts_ns: nanoseconds land floored to microseconds; the truncation is logged."""
    caplog.set_level(logging.WARNING, logger="bifrost_async")

    outcome = await ingest_case("ts_ns")

    table = outcome.read().sort_by("event_id")
    assert outcome.reasons == {}
    assert outcome.rows_by_key == {"normal_us.parquet": 2, "odd_ns.parquet": 2}
    assert table.schema.field("event_ts").type == pa.timestamp("us")
    nanos = case_file(shared, "ts_ns", "odd_ns.parquet").column("event_ts")
    micros = case_file(shared, "ts_ns", "normal_us.parquet").column("event_ts")
    expected = micros.cast(pa.int64()).to_pylist() + [
        n // 1000 for n in nanos.cast(pa.int64()).to_pylist()
    ]
    assert table.column("event_ts").cast(pa.int64()).to_pylist() == expected
    events = [r.getMessage() for r in caplog.records if "conform.truncated" in r.msg]
    assert len(events) == 1
    assert "odd_ns.parquet" in events[0] and "values=1" in events[0]


async def test_case_large_string_every_variant_lands_readable(
    ingest_case: Any,
) -> None:
    """large_string: plain and large variants land and the table reads back."""
    outcome = await ingest_case("large_string")

    table = outcome.read().sort_by("sku")
    assert outcome.reasons == {}
    assert table.column("sku").to_pylist() == ["A-1", "A-1", "B-2", "B-2", "C-3", "D-4"]
    assert table.column("blob").to_pylist()[-2:] == [b"\x03", b"\x04\x05"]


async def test_case_large_string_view_types_from_a_transform_stay_readable(
    ingest_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """large_string: view types (polars' Arrow output) land; scan().to_arrow() works."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "views.py").write_text(
        "import polars as pl\n\n"
        "def keep(frame):\n"
        "    return frame.with_columns(pl.col('sku').cast(pl.String))\n"
    )

    outcome = await ingest_case("large_string", route={"transform": "views:keep"})

    assert outcome.reasons == {}
    assert sorted(outcome.read().column("sku").to_pylist()) == [
        "A-1",
        "A-1",
        "B-2",
        "B-2",
        "C-3",
        "D-4",
    ]


async def test_case_uint_types_fit_lands_and_overflow_is_quarantined(
    ingest_case: Any,
) -> None:
    """uint_types: unsigned values that fit land; overflow quarantines naming it."""
    outcome = await ingest_case("uint_types")

    table = outcome.read().sort_by("small")
    assert set(outcome.reasons) == {"odd_unsigned_overflow.parquet"}
    reason = outcome.reasons["odd_unsigned_overflow.parquet"]
    assert "out of range" in reason
    assert "'small'" in reason or "'counter'" in reason
    assert "odd_unsigned_overflow.parquet" in reason
    assert table.column("small").to_pylist() == [1, 2, 3, 4]
    assert table.column("counter").to_pylist() == [10, 20, 30, 40]
    assert table.schema.field("small").type == pa.int32()


async def test_case_null_type_columns_take_the_table_type(ingest_case: Any) -> None:
    """null_type: null-typed columns land as nulls of the table's string column."""
    outcome = await ingest_case("null_type")

    table = outcome.read().sort_by("ticket")
    assert outcome.reasons == {}
    assert table.column("ticket").to_pylist() == [1, 2, 3, 4, 5, 6, 7]
    assert table.column("note").to_pylist() == ["ok"] + [None] * 6
    assert pa.types.is_large_string(table.schema.field("note").type)


async def test_case_null_type_in_the_first_file_creates_no_column(
    ingest_case: Any, shared: Path
) -> None:
    """null_type: a null column in the first file is left out; a typed one adds it."""
    folder = shared / "cases" / "null_type"
    objects = {
        "normal_null.parquet": (folder / "odd_null_typed.parquet").read_bytes(),
        "typed.parquet": (folder / "normal.parquet").read_bytes(),
    }

    outcome = await ingest_case("null_type", objects=objects)

    table = outcome.read().sort_by("ticket")
    assert outcome.reasons == {}
    assert table.column_names == ["ticket", "note"]
    assert table.column("note").to_pylist() == ["ok", None, None, None]


async def test_case_column_drift_in_add_mode(ingest_case: Any) -> None:
    """column_drift: reordered, missing, extra columns land; twins are quarantined."""
    outcome = await ingest_case("column_drift")

    table = outcome.read()
    assert set(outcome.reasons) == {
        "odd_upper_case.parquet",
        "odd_amount_as_string.parquet",
    }
    assert "'Order_ID'" in outcome.reasons["odd_upper_case.parquet"]
    retyped = outcome.reasons["odd_amount_as_string.parquet"]
    assert "'amount'" in retyped and "double" in retyped and "string" in retyped
    assert table.column_names == ["order_id", "amount", "currency", "channel"]
    assert table.num_rows == 8
    rows = table.to_pylist()
    assert (
        rows.count({"order_id": 1, "amount": 9.5, "currency": None, "channel": None})
        == 1
    )
    assert {r["channel"] for r in rows} == {None, "web", "shop"}
    assert (
        rows.count({"order_id": 2, "amount": 3.25, "currency": "USD", "channel": None})
        == 2
    )


async def test_case_column_drift_frozen_quarantines_new_columns(
    ingest_case: Any,
) -> None:
    """column_drift: with evolution frozen the extra column quarantines its file."""
    outcome = await ingest_case("column_drift", route={"evolution": "freeze"})

    assert set(outcome.reasons) == {
        "odd_upper_case.parquet",
        "odd_amount_as_string.parquet",
        "odd_extra_channel.parquet",
    }
    assert "'channel'" in outcome.reasons["odd_extra_channel.parquet"]
    assert outcome.read().column_names == ["order_id", "amount", "currency"]
    assert outcome.read().num_rows == 6


async def test_case_column_drift_discard_drops_new_columns(
    ingest_case: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """column_drift: in discard mode the extra column is dropped with a WARNING."""
    caplog.set_level(logging.WARNING, logger="bifrost_async")

    outcome = await ingest_case("column_drift", route={"evolution": "discard"})

    assert "odd_extra_channel.parquet" not in outcome.reasons
    assert outcome.read().column_names == ["order_id", "amount", "currency"]
    assert outcome.read().num_rows == 8
    assert any(
        "columns_discarded" in r.msg and "channel" in r.getMessage()
        for r in caplog.records
    )


async def test_case_nested_list_matches_nested_values_by_name(ingest_case: Any) -> None:
    """nested_list: all 6 rows land, list items and struct fields matched by name."""
    outcome = await ingest_case("nested_list")

    assert outcome.reasons == {}
    rows = sorted(
        outcome.read().to_pylist(), key=lambda r: (r["user_id"], str(r["tags"]))
    )
    assert len(rows) == 6
    assert [r["tags"] for r in rows] == [["a", "b"], ["a", "b"], [], [], ["c"], ["d"]]
    cities = [r["addr"] and r["addr"]["city"] for r in rows]
    assert cities == ["X", "X", None, None, "Y", "Z"]
    assert rows[-1]["addr"] == {"city": "Z", "zip": "4"}
    assert rows[-1]["attrs"] == [("x", "y")]
    assert rows[-2]["attrs"] is None


async def test_case_pandas_index_columns_never_reach_the_table(
    ingest_case: Any,
) -> None:
    """pandas_index: index columns are dropped; a 0-row file is ingested, 0 rows."""
    outcome = await ingest_case("pandas_index")

    table = outcome.read()
    assert outcome.reasons == {}
    assert table.column_names == ["page", "hits"]
    assert outcome.rows_by_key == {
        "normal_rangeindex.parquet": 3,
        "odd_empty_index.parquet": 0,
        "odd_filtered_index.parquet": 3,
        "odd_named_index.parquet": 3,
    }
    assert (
        sorted(table.column("page").to_pylist()) == ["/a"] * 3 + ["/b"] * 3 + ["/c"] * 3
    )


async def test_case_int96_far_dates_are_exact(ingest_case: Any) -> None:
    """int96: INT96 timestamps land exactly, 9999-12-31 and 1500-01-01 included."""
    outcome = await ingest_case("int96")

    table = outcome.read().sort_by("contract_id")
    assert outcome.reasons == {}
    assert table.column("valid_to").to_pylist() == [
        dt.datetime(2030, 1, 1),
        dt.datetime(2024, 6, 1, 12),
        dt.datetime(2024, 6, 1, 12),
        dt.datetime(9999, 12, 31),
        dt.datetime(1500, 1, 1),
    ]


async def test_case_empty_files_are_ingested_without_a_snapshot(
    ingest_case: Any,
) -> None:
    """empty_file: every 0-row file is ingested with 0 rows and makes no snapshot."""
    outcome = await ingest_case("empty_file")

    assert outcome.reasons == {}
    assert outcome.rows_by_key == {
        "normal.parquet": 1,
        "odd_pandas_empty_object_col.parquet": 0,
        "odd_pandas_no_columns.parquet": 0,
        "odd_polars_no_columns.parquet": 0,
        "odd_zero_row_groups.parquet": 0,
        "odd_zero_rows.parquet": 0,
        "odd_zero_rows_no_dict.parquet": 0,
    }
    assert len(outcome.table.metadata.snapshots) == 1
    assert outcome.read().num_rows == 1


async def test_case_s3_markers_skip_markers_and_quarantine_zero_bytes(
    shared: Path, s3: Any, bucket: str, make_settings: Any, load_table: Any
) -> None:
    """s3_markers: markers are skipped silently; the 0-byte part is quarantined."""
    folder = shared / "cases" / "s3_markers"
    listing = json.loads((folder / "listing.json").read_text())
    for item in listing["Contents"]:
        body = (folder / item["local_file"]).read_bytes()
        s3.put_object(Bucket=bucket, Key=item["Key"], Body=body)

    settings = make_settings([f"s3://{bucket}/{listing['Prefix']}"])

    result = await run(settings)

    status = Ledger(settings.state).status()
    assert result.report.ingested == 2
    assert [q["key"] for q in status["quarantined"]] == [
        "landing/orders/dt=2024-06-01/part-00001.snappy.parquet"
    ]
    assert "0 bytes" in status["quarantined"][0]["reason"]
    assert sorted(ledger_keys(settings)) == sorted(
        listing["expected_ingested_keys"]
        + ["landing/orders/dt=2024-06-01/part-00001.snappy.parquet"]
    )
    assert sorted(load_table().scan().to_arrow().column("order_id").to_pylist()) == [
        1,
        2,
        3,
    ]


def ledger_keys(settings: Settings) -> list[str]:
    """Every key the ledger knows, whatever its state."""
    engine = sa.create_engine(settings.state)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.select(objects_table.c.key)).scalars())
    finally:
        engine.dispose()


async def test_case_corrupt_files_are_quarantined_with_the_reason(
    ingest_case: Any,
) -> None:
    """corrupt_file: each broken file is quarantined naming its fault; good ones land"""
    outcome = await ingest_case("corrupt_file")

    reasons = outcome.reasons
    assert set(reasons) == {
        "odd_csv_named_parquet.parquet",
        "odd_gzipped.parquet",
        "odd_truncated_footer.parquet",
        "odd_truncated_half.parquet",
        "odd_flipped_with_crc.parquet",
        "odd_flipped_no_crc.parquet",
    }
    assert "gzip" in reasons["odd_gzipped.parquet"]
    assert "not a Parquet file" in reasons["odd_csv_named_parquet.parquet"]
    assert "truncated" in reasons["odd_truncated_half.parquet"]
    assert "CRC" in reasons["odd_flipped_with_crc.parquet"]
    assert "'k'" in reasons["odd_flipped_no_crc.parquet"]
    assert "statistics" in reasons["odd_flipped_no_crc.parquet"]
    assert outcome.rows_by_key == {
        "normal.parquet": 5000,
        "normal_with_crc.parquet": 5000,
    }
    assert sorted(outcome.read().column("k").to_pylist()) == sorted(
        list(range(5000)) * 2
    )


def widening_objects() -> dict[str, bytes]:
    """A first file with int and float columns, then one that needs long and double."""
    import io

    def parquet(table: pa.Table) -> bytes:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    return {
        "normal.parquet": parquet(
            pa.table(
                {"n": pa.array([1], pa.int32()), "x": pa.array([1.5], pa.float32())}
            )
        ),
        "odd_wide.parquet": parquet(
            pa.table({"n": pa.array([2**40], pa.int64()), "x": pa.array([0.1])})
        ),
    }


@pytest.mark.parametrize("evolution", ["add", "freeze"])
async def test_case_safe_widening_follows_the_evolution_mode(
    ingest_case: Any, evolution: str
) -> None:
    """int to long and float to double widen the table in add mode only."""
    outcome = await ingest_case(
        "widening", route={"evolution": evolution}, objects=widening_objects()
    )

    table = outcome.read().sort_by("n")
    if evolution == "add":
        assert outcome.reasons == {}
        assert table.schema.field("n").type == pa.int64()
        assert table.schema.field("x").type == pa.float64()
        assert table.to_pylist() == [{"n": 1, "x": 1.5}, {"n": 2**40, "x": 0.1}]
    else:
        [reason] = outcome.reasons.values()
        assert "'n'" in reason and "int64" in reason and "int32" in reason
        assert table.schema.field("n").type == pa.int32()
        assert table.num_rows == 1


async def test_case_big_file_streams_in_chunks_and_lands_in_one_commit(
    ingest_case: Any, shared: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """big_file_chunked: above --stream-above a file goes in chunks, in one commit."""
    caplog.set_level(logging.DEBUG, logger="bifrost_async.process")
    body = (
        shared / "cases" / "big_file_chunked" / "many_row_groups.parquet"
    ).read_bytes()

    outcome = await ingest_case(
        "big_file_chunked", objects={"odd_big.parquet": body}, stream_above=512 * 1024
    )

    table = outcome.read()
    assert outcome.rows_by_key == {"odd_big.parquet": 240_000}
    assert len(set(table.column("click_id").to_pylist())) == 240_000
    assert len(outcome.table.metadata.snapshots) == 1
    chunked = [r.getMessage() for r in caplog.records if "process.chunked" in r.msg]
    assert len(chunked) == 1 and "row_groups=12" in chunked[0]
    assert "chunks=1 " not in chunked[0]
    source = pq.read_table(
        shared / "cases" / "big_file_chunked" / "many_row_groups.parquet"
    )
    assert table.sort_by("click_id").equals(
        source.sort_by("click_id").cast(table.schema)
    )


async def test_case_streamed_corrupt_file_is_quarantined_without_rows(
    ingest_case: Any, shared: Path
) -> None:
    """A corrupt row group of a chunked file quarantines it; no chunk is visible."""
    folder = shared / "cases" / "corrupt_file"
    objects = {
        "normal.parquet": (folder / "normal.parquet").read_bytes(),
        "odd_flipped.parquet": (folder / "odd_flipped_no_crc.parquet").read_bytes(),
    }

    outcome = await ingest_case("corrupt_file", objects=objects, stream_above=20_000)

    assert set(outcome.reasons) == {"odd_flipped.parquet"}
    assert "'k'" in outcome.reasons["odd_flipped.parquet"]
    assert outcome.read().num_rows == 5000


def nested_growth_objects(shared: Path) -> dict[str, bytes]:
    """The nested_list case's first file, then one whose ``addr`` has a new field."""
    import io

    table = pa.table(
        {
            "user_id": pa.array([9], pa.int64()),
            "addr": pa.array(
                [{"city": "W", "zip": "9", "country": "NL"}],
                pa.struct(
                    [
                        pa.field("city", pa.string()),
                        pa.field("zip", pa.string()),
                        pa.field("country", pa.string()),
                    ]
                ),
            ),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    folder = shared / "cases" / "nested_list"
    return {
        "normal.parquet": (folder / "normal_compliant.parquet").read_bytes(),
        "odd_country.parquet": sink.getvalue(),
    }


@pytest.mark.parametrize("evolution", ["add", "freeze"])
async def test_case_nested_new_field_follows_the_evolution_mode(
    ingest_case: Any, shared: Path, evolution: str
) -> None:
    """A new struct field joins the table in add mode and quarantines when frozen."""
    outcome = await ingest_case(
        "nested_growth",
        route={"evolution": evolution},
        objects=nested_growth_objects(shared),
    )

    rows = sorted(outcome.read().to_pylist(), key=lambda r: r["user_id"])
    if evolution == "add":
        assert outcome.reasons == {}
        assert rows[-1]["addr"] == {"city": "W", "zip": "9", "country": "NL"}
        assert rows[0]["addr"] == {"city": "X", "zip": "1", "country": None}
    else:
        [reason] = outcome.reasons.values()
        assert "'addr'" in reason and "'country'" in reason
        assert len(rows) == 2
