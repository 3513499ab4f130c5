"""Small builders the tests share: Parquet bytes, uploads and catalog properties."""

from __future__ import annotations

import io
import os
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


def with_source_access(properties: dict[str, str], endpoint: str) -> dict[str, str]:
    """Catalog properties whose FileIO also reads the S3 buckets at ``endpoint``.

    Tables holding objects registered in place read them there.
    """
    return {
        **properties,
        "s3.endpoint": endpoint,
        "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "s3.region": "us-east-1",
    }
