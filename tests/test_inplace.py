"""In place: objects registered where they lie from their footer, exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bifrost_async.commit import TableHandle
from bifrost_async.config import Settings
from bifrost_async.discovery import ObjectRef
from bifrost_async.errors import ConfigError, UnreadableFileError
from bifrost_async.inplace import (
    FOOTER_READ,
    find_layout_problem,
    prepare_in_place,
    read_footer_length,
)
from bifrost_async.ledger import Ledger
from bifrost_async.process import Prepared, ProcessOptions
from bifrost_async.runner import run

from .helpers import numbers, parquet_bytes, with_source_access
from .processes import assert_exactly_once, leave_pending_batch

ROWS = 20_000


@pytest.fixture
def catalog_properties(tmp_path: Path, moto_endpoint: str) -> dict[str, str]:
    """The test catalog, with a FileIO that reads the moto buckets themselves."""
    local = {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"file://{tmp_path / 'warehouse'}",
    }
    return with_source_access(local, moto_endpoint)


def ref(key: str, data: bytes) -> ObjectRef:
    """An object of these bytes, as a listing would describe it."""
    return ObjectRef("bucket", key, len(data), "etag")


def footer_length(data: bytes) -> int:
    """The footer length a whole Parquet file ends with."""
    return int.from_bytes(data[-8:-4], "little")


def with_garbage_footer(data: bytes) -> bytes:
    """The file with its footer overwritten, its length and magic kept."""
    length = footer_length(data)
    return data[: -(length + 8)] + b"\xff" * length + data[-8:]


@pytest.mark.parametrize(
    ("tail", "size", "expected"),
    [
        pytest.param(b"id,label\n1,a\n", 13, "not a Parquet file", id="csv"),
        pytest.param(b"\x10\x00\x00\x00PARE", 100, "encrypted", id="encrypted"),
        pytest.param(b"\x00\x10\x00\x00PAR1", 100, "does not fit", id="too-long"),
    ],
)
def test_read_footer_length_refuses_what_is_not_plain_parquet(
    tail: bytes, size: int, expected: str
) -> None:
    """A tail without the magic, encrypted, or naming too long a footer is refused."""
    with pytest.raises(UnreadableFileError, match=expected):
        read_footer_length(tail, ObjectRef("b", "k", size, "e"))


def test_find_layout_problem_accepts_a_whole_file() -> None:
    """Every column chunk of a whole file lies between the magic and the footer."""
    data = parquet_bytes(numbers(0, 1000), row_group_size=300)
    metadata = pq.read_metadata(pa.BufferReader(data))

    assert find_layout_problem(metadata, len(data), footer_length(data)) is None


def test_find_layout_problem_sees_a_footer_glued_onto_a_cut_file() -> None:
    """A file cut short with its footer put back points past its own end."""
    data = parquet_bytes(numbers(0, 1000), row_group_size=300)
    length = footer_length(data)
    cut = data[:200] + data[-(length + 8) :]
    metadata = pq.read_metadata(pa.BufferReader(data))

    problem = find_layout_problem(metadata, len(cut), length)

    assert problem is not None and "outside the data" in problem


def in_place_paths(table: Any) -> set[str]:
    """The data files of a table that live outside its warehouse."""
    return {
        task.file.file_path
        for task in table.scan().plan_files()
        if task.file.file_path.startswith("s3://")
    }


@pytest.mark.anyio
async def test_in_place_registers_matching_objects_where_they_lie(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Matches land in place from a footer read; others are fetched and rewritten."""
    sources = [numbers(n * ROWS, ROWS) for n in range(3)]
    for n, source in enumerate(sources):
        s3.put_object(Bucket=bucket, Key=f"p/{n}.parquet", Body=parquet_bytes(source))

    reordered = parquet_bytes(numbers(3 * ROWS, ROWS).select(["label", "at", "id"]))
    s3.put_object(Bucket=bucket, Key="p/3-reordered.parquet", Body=reordered)
    broken = with_garbage_footer(parquet_bytes(numbers(4 * ROWS, ROWS)))
    s3.put_object(Bucket=bucket, Key="p/4-broken.parquet", Body=broken)
    settings = make_settings([f"s3://{bucket}/p/"], zero_copy="in-place")

    first = await run(settings)
    second = await run(settings)

    report = first.report
    assert (report.ingested, report.quarantined, second.report.ingested) == (4, 1, 0)
    assert report.fetched == 5 * FOOTER_READ + len(reordered)
    assert second.report.fetched == 0
    table = load_table()
    assert in_place_paths(table) == {f"s3://{bucket}/p/{n}.parquet" for n in range(3)}
    assert len(list(table.scan().plan_files())) == 4
    assert table.properties["gc.enabled"] == "false", "sources must never be purged"
    rows = table.scan().to_arrow().sort_by("id")
    expected = pa.concat_tables(
        [*sources, numbers(3 * ROWS, ROWS)], promote_options="permissive"
    )
    assert rows.column("id").to_pylist() == list(range(4 * ROWS))
    for name in ("label", "at"):
        assert rows.column(name).to_pylist() == expected.column(name).to_pylist()

    (entry,) = Ledger(settings.state).status()["quarantined"]
    assert entry["key"] == "p/4-broken.parquet"
    assert "Parquet reader failed" in entry["reason"]


@pytest.mark.anyio
async def test_in_place_reads_a_long_footer_in_two_requests(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """A footer longer than the first read costs one more ranged GET, no more."""
    wide = pa.table(
        {f"c{i:03d}": pa.array(range(2000), pa.int64()) for i in range(200)}
    )
    data = parquet_bytes(wide, row_group_size=100)
    assert footer_length(data) + 8 > FOOTER_READ
    s3.put_object(Bucket=bucket, Key="w/wide.parquet", Body=data)
    settings = make_settings([f"s3://{bucket}/w/"], zero_copy="in-place")

    result = await run(settings)

    assert result.report.ingested == 1
    assert result.report.fetched == footer_length(data) + 8
    table = load_table()
    assert in_place_paths(table) == {f"s3://{bucket}/w/wide.parquet"}
    assert table.scan().to_arrow().sort_by("c000").equals(wide)


def prepare_in_place_whole(
    data: bytes, obj: ObjectRef, handle: TableHandle, route: Any
) -> Prepared | None:
    """What an in-place writer prepares from an object (here read whole)."""
    return prepare_in_place(data, obj, handle, route, ProcessOptions())


@pytest.mark.anyio
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
async def test_in_place_run_after_a_killed_writer_lands_every_object_once(
    landed: bool,
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
) -> None:
    """A pending in-place batch is confirmed or redone; a rerun then finds nothing."""
    for n in range(3):
        s3.put_object(
            Bucket=bucket,
            Key=f"k/{n}.parquet",
            Body=parquet_bytes(numbers(n * 10, 10)),
        )

    settings = make_settings([f"s3://{bucket}/k/"], zero_copy="in-place")
    leave_pending_batch(
        s3, bucket, "k/0.parquet", settings, landed, prepare_in_place_whole
    )

    first = await run(settings)
    again = await run(settings)

    assert (first.report.ingested, again.report.ingested) == (3 - landed, 0)
    assert_exactly_once(
        settings.state, load_table(), Counter(range(30)), 3, "ns.events"
    )
    assert len(in_place_paths(load_table())) == 3


@pytest.mark.anyio
async def test_in_place_ends_the_run_when_the_table_cannot_read_the_source(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    catalog_properties: dict[str, str],
    load_table: Callable[..., Any],
) -> None:
    """A catalog FileIO that cannot see the source is a configuration error."""
    s3.put_object(Bucket=bucket, Key="n/0.parquet", Body=parquet_bytes(numbers(0, 5)))
    blind = dict(catalog_properties, **{"s3.endpoint": "http://127.0.0.1:9"})
    blind["s3.connect-timeout"] = "1"
    settings = make_settings(
        [f"s3://{bucket}/n/"], zero_copy="in-place", catalog_properties=blind
    )

    with pytest.raises(ConfigError, match="cannot read"):
        await run(settings)

    snapshot = load_table().current_snapshot()
    assert snapshot is None
