"""The pass loop end to end: moto over HTTP, a real SqlCatalog, a SQLite ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pyarrow as pa
import pytest

from bifrost_async.ledger import Ledger
from bifrost_async.runner import run

from .helpers import numbers, parquet_bytes, upload_numbers

pytestmark = pytest.mark.anyio


async def test_pipeline_ingests_every_file_once(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Files under two prefixes land once; the table holds exactly their rows."""
    for n in range(6):
        upload_numbers(s3, bucket, f"a/part-{n}.parquet", n * 100, 100)
        upload_numbers(s3, bucket, f"b/x={n}/f{n}.parquet", 10_000 + n * 50, 50)

    result = await run(make_settings([f"s3://{bucket}/a/", f"s3://{bucket}/b/"]))

    assert result.report.ingested == 12
    assert result.stop_reason == "drained"
    ids = load_table().scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == sorted(
        [i for n in range(6) for i in range(n * 100, n * 100 + 100)]
        + [i for n in range(6) for i in range(10_000 + n * 50, 10_000 + n * 50 + 50)]
    )


async def test_pipeline_restart_ingests_only_new_objects(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """A second run takes only objects added since the first."""
    upload_numbers(s3, bucket, "in/one.parquet", 0, 10)
    settings = make_settings([f"s3://{bucket}/in/"])
    first = await run(settings)
    upload_numbers(s3, bucket, "in/two.parquet", 10, 5)

    second = await run(settings)

    assert (first.report.ingested, second.report.ingested) == (1, 1)
    assert sorted(load_table().scan().to_arrow().column("id").to_pylist()) == list(
        range(15)
    )


async def test_pipeline_quarantines_bad_files_and_lands_the_rest(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Any],
    load_table: Any,
    tmp_path: Any,
) -> None:
    """Truncated, non-Parquet and mistyped files are quarantined; good ones land."""
    upload_numbers(s3, bucket, "q/0-good.parquet", 0, 20)
    whole = parquet_bytes(numbers(100, 20))
    s3.put_object(
        Bucket=bucket, Key="q/1-truncated.parquet", Body=whole[: len(whole) // 2]
    )
    s3.put_object(Bucket=bucket, Key="q/2-csv.parquet", Body=b"id,label\n1,a\n")
    mistyped = pa.table({"id": pa.array(["not a number"]), "label": ["x"]})
    s3.put_object(
        Bucket=bucket, Key="q/3-mistyped.parquet", Body=parquet_bytes(mistyped)
    )
    upload_numbers(s3, bucket, "q/4-good.parquet", 20, 20)
    settings = make_settings([f"s3://{bucket}/q/"])

    result = await run(settings)

    assert result.report.ingested == 2
    assert result.report.quarantined == 3
    status = Ledger(settings.state).status()
    reasons = {q["key"].split("/")[-1]: q["reason"] for q in status["quarantined"]}
    assert set(reasons) == {
        "1-truncated.parquet",
        "2-csv.parquet",
        "3-mistyped.parquet",
    }
    assert "1-truncated.parquet" in reasons["1-truncated.parquet"]
    assert "'id'" in reasons["3-mistyped.parquet"]
    assert sorted(load_table().scan().to_arrow().column("id").to_pylist()) == list(
        range(40)
    )

    again = await run(settings)
    assert (again.report.ingested, again.report.quarantined) == (0, 0)


async def test_pipeline_batches_files_into_few_snapshots(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Twenty small files with a batch limit of ten make two snapshots."""
    for n in range(20):
        upload_numbers(s3, bucket, f"batch/{n:02d}.parquet", n * 10, 10)

    await run(
        make_settings([f"s3://{bucket}/batch/"], batch_max_files=10, batch_max_age=60)
    )

    snapshots = load_table().metadata.snapshots
    assert len(snapshots) == 2
    assert all("bifrost.batch-id" in s.summary.additional_properties for s in snapshots)


async def test_pipeline_max_iterations_ends_after_one_pass(
    s3: Any, bucket: str, make_settings: Callable[..., Any]
) -> None:
    """--max-iterations 1 without --once stops after one pass, its objects committed."""
    upload_numbers(s3, bucket, "it/a.parquet", 0, 10)
    settings = make_settings([f"s3://{bucket}/it/"], once=False, max_iterations=1)

    with anyio.fail_after(60):
        result = await run(settings)

    assert (result.passes, result.stop_reason, result.report.ingested) == (
        1,
        "max-iterations",
        1,
    )


@pytest.fixture
def write_module(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Write an importable module (a user's transform) into the test's folder."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)

    return write


async def test_pipeline_applies_a_polars_transform(
    s3: Any, bucket: str, make_settings: Any, load_table: Any, write_module: Any
) -> None:
    """A module:function transform reshapes every file before it is conformed."""
    write_module(
        "shaping",
        "import polars as pl\n\n"
        "def double(frame):\n"
        "    return frame.with_columns(twice=pl.col('id') * 2).drop('label')\n",
    )
    upload_numbers(s3, bucket, "tf/a.parquet", 0, 5)
    settings = make_settings(
        [f"s3://{bucket}/tf/"], route={"transform": "shaping:double"}
    )

    await run(settings)

    table = load_table().scan().to_arrow().sort_by("id")
    assert table.column_names == ["id", "at", "twice"]
    assert table.column("twice").to_pylist() == [0, 2, 4, 6, 8]


async def test_pipeline_quarantines_a_file_the_transform_rejects(
    s3: Any, bucket: str, make_settings: Any, load_table: Any, write_module: Any
) -> None:
    """A transform that raises on one file quarantines that file with its error."""
    write_module(
        "picky",
        "def check(frame):\n"
        "    if frame['id'].min() >= 100:\n"
        "        raise ValueError('ids from 100 are not allowed')\n"
        "    return frame\n",
    )
    upload_numbers(s3, bucket, "pk/a.parquet", 0, 5)
    upload_numbers(s3, bucket, "pk/b.parquet", 100, 5)
    settings = make_settings([f"s3://{bucket}/pk/"], route={"transform": "picky:check"})

    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (1, 1)
    [entry] = Ledger(settings.state).status()["quarantined"]
    assert entry["key"] == "pk/b.parquet"
    assert "ids from 100 are not allowed" in entry["reason"]
    assert load_table().scan().to_arrow().num_rows == 5


async def test_pipeline_skips_objects_deleted_or_rewritten_after_listing(
    s3: Any, bucket: str, make_settings: Callable[..., Any], load_table: Any
) -> None:
    """Gone since the listing: skipped; rewritten: taken with its new ETag next pass."""
    from bifrost_async.hooks import Hooks

    for n in range(4):
        upload_numbers(s3, bucket, f"in/{n}.parquet", n * 100, 10)

    def change_after_listing(table: str, listed: int, fresh: list[Any]) -> None:
        if len(fresh) == 4:
            s3.delete_object(Bucket=bucket, Key="in/1.parquet")
            upload_numbers(s3, bucket, "in/2.parquet", 5000, 10)

    result = await run(
        make_settings([f"s3://{bucket}/in/"]), Hooks(on_listed=change_after_listing)
    )

    assert result.stop_reason == "drained"
    assert (result.report.ingested, result.report.failed) == (3, 0)
    ids = sorted(load_table().scan().to_arrow().column("id").to_pylist())
    assert ids == [*range(0, 10), *range(300, 310), *range(5000, 5010)]


async def test_pipeline_warns_once_about_a_source_that_lists_nothing(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A mistyped prefix is named at WARNING on the first pass, not on every pass."""
    import logging

    upload_numbers(s3, bucket, "orders/a.parquet", 0, 5)
    settings = make_settings(
        [f"s3://{bucket}/orders/", f"s3://{bucket}/ordres/"],
        once=False,
        max_iterations=2,
        poll_interval=0.05,
    )

    with caplog.at_level(logging.WARNING, logger="bifrost_async.pipeline"):
        result = await run(settings)

    assert result.report.ingested == 1
    empty = [r.getMessage() for r in caplog.records if "list.empty" in r.getMessage()]
    assert len(empty) == 1
    assert f"location=s3://{bucket}/ordres/ " in empty[0]
