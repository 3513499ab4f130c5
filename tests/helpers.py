"""Small builders the tests share: Parquet bytes and uploads."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    """A table written as the bytes of one Parquet file."""
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def numbers(start: int, count: int) -> pa.Table:
    """A small table with an id, a label and a timestamp column."""
    ids = list(range(start, start + count))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "label": pa.array([f"row-{i}" for i in ids], pa.string()),
            "at": pa.array([i * 1_000_000 for i in ids], pa.timestamp("us", tz="UTC")),
        }
    )


def upload_numbers(s3: Any, bucket: str, key: str, start: int, count: int) -> int:
    """Upload a numbers file; return its row count."""
    s3.put_object(Bucket=bucket, Key=key, Body=parquet_bytes(numbers(start, count)))
    return count
