"""Generated business data: orders with ints, decimals, strings, timestamps and nulls.

Used by the demo and the benchmarks. Deterministic for a given seed, so a run can be
reproduced and checked row by row.
"""

from __future__ import annotations

import io
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["make_orders", "orders_parquet"]

_REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast"]
_STATUSES = ["placed", "paid", "shipped", "delivered", "returned", "cancelled"]
_CURRENCIES = ["EUR", "USD", "GBP", "JPY", "INR"]
_PRODUCTS = [f"SKU-{n:05d}" for n in range(2000)]
_EPOCH_2026_US = 1_767_225_600_000_000


def make_orders(rows: int, seed: int, first_id: int = 0) -> pa.Table:
    """A table of ``rows`` orders; ``first_id`` makes ids unique across files."""
    rng = np.random.default_rng(seed)
    cents = rng.integers(50, 500_000, rows)
    choices = ["gift wrap", "leave at door", "call first", "fragile", "express"]
    blank = (rng.random(rows) < 0.15).tolist()
    picked = rng.choice(choices, rows).tolist()
    notes = [None if empty else note for note, empty in zip(picked, blank, strict=True)]
    discount = np.where(rng.random(rows) < 0.3, np.nan, rng.random(rows) * 0.4)
    return pa.table(
        {
            "order_id": pa.array(np.arange(first_id, first_id + rows), pa.int64()),
            "customer_id": pa.array(rng.integers(1, 250_000, rows), pa.int64()),
            "product": pa.array(rng.choice(_PRODUCTS, rows), pa.string()),
            "quantity": pa.array(rng.integers(1, 20, rows), pa.int32()),
            "unit_price": pa.array(
                [Decimal(int(c)).scaleb(-2) for c in cents], pa.decimal128(12, 2)
            ),
            "currency": pa.array(rng.choice(_CURRENCIES, rows), pa.string()),
            "discount": pa.array(discount, pa.float64(), from_pandas=True),
            "status": pa.array(rng.choice(_STATUSES, rows), pa.string()),
            "region": pa.array(rng.choice(_REGIONS, rows), pa.string()),
            "ordered_at": pa.array(
                _EPOCH_2026_US + rng.integers(0, 300 * 86_400_000_000, rows),
                pa.timestamp("us", tz="UTC"),
            ),
            "note": pa.array(notes, pa.string()),
        }
    )


def orders_parquet(rows: int, seed: int, first_id: int = 0) -> bytes:
    """The same orders, as the bytes of a Snappy-compressed Parquet file."""
    sink = io.BytesIO()
    pq.write_table(make_orders(rows, seed, first_id), sink, compression="snappy")
    return sink.getvalue()
