"""Every real Parquet file in ``../shared/data`` through the ingester, each in a table.

One run takes all files of a class at once: one bucket, a prefix and a route (and so a
table) per file. Each file must either land with the footer's row count and pyarrow's
values (after the documented conversions), or be quarantined with a reason; the run
itself must end normally.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from pyiceberg.catalog import load_catalog

from bifrost_async.config import Route, S3Location, Settings
from bifrost_async.conform import drop_index_columns
from bifrost_async.ledger import objects_table
from bifrost_async.runner import run

pytestmark = [pytest.mark.anyio, pytest.mark.shared, pytest.mark.slow]

CLASSES = ("realistic", "edge", "malformed", "encrypted")


def read_manifest(shared: Path) -> dict[str, str]:
    """Relative path to class, for every file the manifest lists."""
    classes = {}
    for line in (shared / "data" / "MANIFEST.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 3 and cells[2] in CLASSES:
            classes[cells[1]] = cells[2]

    return classes


_PER_SECOND = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}


def comparable(array: pa.Array) -> pa.Array:
    """An array with the documented conversions applied, in a form to_pylist can take.

    Timestamps become int64 microseconds, ns floored (the documented rule) and other
    units scaled exactly; dictionaries are decoded; nesting is kept, by field name.
    """
    data_type = array.type
    mask = array.is_null() if array.null_count else None
    if pa.types.is_dictionary(data_type):
        return comparable(array.dictionary_decode())

    if pa.types.is_timestamp(data_type):
        raw = [None if v is None else v for v in array.cast(pa.int64()).to_pylist()]
        scale = _PER_SECOND[data_type.unit]
        return pa.array(
            [None if v is None else v * 1_000_000 // scale for v in raw], pa.int64()
        )

    if pa.types.is_struct(data_type):
        children = [comparable(array.field(i)) for i in range(data_type.num_fields)]
        names = [data_type.field(i).name for i in range(data_type.num_fields)]
        return pa.StructArray.from_arrays(children, names=names, mask=mask)

    if pa.types.is_map(data_type):
        offsets = pc.subtract(array.offsets, array.offsets[0])
        return pa.MapArray.from_arrays(
            offsets, comparable(array.keys), comparable(array.items), mask=mask
        )

    if pa.types.is_fixed_size_list(data_type) or pa.types.is_list_view(data_type):
        return comparable(array.cast(pa.large_list(data_type.value_type)))

    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        offsets = pc.subtract(array.offsets, array.offsets[0]).cast(pa.int64())
        values = comparable(array.flatten())
        return pa.LargeListArray.from_arrays(offsets, values, mask=mask)

    return array


def python_values(column: pa.ChunkedArray) -> list[Any]:
    """A column's values as Python objects after :func:`comparable`."""
    return [v for chunk in column.chunks for v in comparable(chunk).to_pylist()]


def same(left: Any, right: Any) -> bool:
    """Deep equality where NaN equals NaN and structs compare by field name."""
    if isinstance(left, float) and isinstance(right, float):
        return (math.isnan(left) and math.isnan(right)) or left == right

    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(
            same(left[k], right[k]) for k in left
        )

    if isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return len(left) == len(right) and all(map(same, left, right))

    return bool(left == right)


def compare(source: pa.Table, landed: pa.Table) -> str | None:
    """The first difference between a file and its table, or None when they agree."""
    if landed.num_rows != source.num_rows:
        return f"rows {landed.num_rows} != {source.num_rows}"

    for name in source.column_names:
        column = source.column(name)
        if pa.types.is_null(column.type):
            if name in landed.column_names:
                return f"null-typed column {name!r} became a table column"

            continue

        if name not in landed.column_names:
            return f"column {name!r} missing from the table"

        expected = python_values(column)
        actual = python_values(landed.column(name))
        if not same(expected, actual):
            first = next(
                i
                for i, (a, b) in enumerate(zip(expected, actual, strict=True))
                if not same(a, b)
            )
            return (
                f"column {name!r} row {first}: {actual[first]!r} != {expected[first]!r}"
            )

    return None


@pytest.fixture(scope="module")
def manifest(shared: Path) -> dict[str, str]:
    """The manifest's data files (realistic, edge, malformed, encrypted) by class."""
    return read_manifest(shared)


@pytest.mark.parametrize("kind", CLASSES)
async def test_shared_data_every_file_lands_exactly_or_is_quarantined(
    kind: str,
    shared: Path,
    manifest: dict[str, str],
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_properties: dict[str, str],
    tmp_path: Path,
) -> None:
    """Each file of a class lands with pyarrow's values or is quarantined; none dies."""
    files = sorted(path for path, cls in manifest.items() if cls == kind)
    routes = []
    for n, relative in enumerate(files):
        body = (shared / "data" / relative).read_bytes()
        s3.put_object(Bucket=bucket, Key=f"f{n:04d}/data.parquet", Body=body)
        routes.append(
            Route(sources=(S3Location(bucket, f"f{n:04d}/"),), table=f"d.t{n:04d}")
        )

    settings = Settings(
        routes=tuple(routes),
        state=f"sqlite:///{tmp_path / 'state.db'}",
        once=True,
        s3_endpoint=moto_endpoint,
        catalog_properties=catalog_properties,
        poll_interval=0.2,
        batch_max_age=0.5,
    )

    result = await run(settings)

    catalog = load_catalog("default", **catalog_properties)
    ledger = ledger_outcomes(settings)
    counts: collections.Counter[str] = collections.Counter()
    problems = []
    for n, relative in enumerate(files):
        state, rows, reason = ledger[f"f{n:04d}/data.parquet"]
        counts[state] += 1
        if state == "quarantined":
            uri = f"s3://{bucket}/f{n:04d}/data.parquet"
            assert reason is not None and reason.startswith(f"{uri}: ")
            assert len(reason) > len(uri) + 20, reason
            print(f"shared-data quarantined {relative}: {reason[len(uri) + 2 :]}")
            continue

        parquet = pq.ParquetFile(
            shared / "data" / relative, coerce_int96_timestamp_unit="us"
        )
        source = drop_index_columns(parquet.read())
        assert rows == parquet.metadata.num_rows, relative
        if rows == 0:
            continue

        landed = catalog.load_table(f"d.t{n:04d}").scan().to_arrow()
        problem = compare(source, landed)
        if problem is not None:
            problems.append(f"{relative}: {problem}")

    print(f"shared-data class={kind} files={len(files)} {dict(counts)}")
    assert result.report.ingested + result.report.quarantined == len(files)
    assert problems == [], "\n".join(problems)


def ledger_outcomes(
    settings: Settings,
) -> dict[str, tuple[str, int | None, str | None]]:
    """Key to (state, rows, reason) for every object in the ledger."""
    engine = sa.create_engine(settings.state)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    objects_table.c.key,
                    objects_table.c.state,
                    objects_table.c.rows,
                    objects_table.c.reason,
                )
            ).all()
    finally:
        engine.dispose()

    return {key: (state, count, reason) for key, state, count, reason in rows}
