"""Downloads: bounded by count and bytes in flight, and retried when transient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from bifrost_async.budget import Budget, Limits
from bifrost_async.discovery import ObjectRef
from bifrost_async.errors import S3PermanentError, TruncatedBodyError
from bifrost_async.fetch import ByteBudget, RetryPolicy, fetch_object
from bifrost_async.ledger import Ledger, Owner
from bifrost_async.pipeline import Ingester
from bifrost_async.s3 import open_s3_client

from .helpers import numbers, parquet_bytes

pytestmark = pytest.mark.anyio


async def test_byte_budget_waits_until_bytes_fit() -> None:
    """A reservation that does not fit waits for a release, then goes ahead."""
    budget = ByteBudget(100)
    first = await budget.acquire(70)
    admitted: list[int] = []

    async def second() -> None:
        admitted.append(await budget.acquire(50))

    async with anyio.create_task_group() as group:
        group.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert admitted == []
        budget.release(first)

    assert admitted == [50]
    assert (budget.used, budget.peak) == (50, 70)


async def test_byte_budget_admits_an_object_bigger_than_the_budget_alone() -> None:
    """An object larger than the whole budget runs once nothing else is in flight."""
    budget = ByteBudget(100)

    taken = await budget.acquire(1_000)

    assert taken == 100
    assert budget.used == 100


async def test_fetch_object_raises_for_a_short_body(
    s3: Any, bucket: str, moto_endpoint: str
) -> None:
    """A body shorter than the listed size is a TruncatedBodyError after retries."""
    s3.put_object(Bucket=bucket, Key="short.parquet", Body=b"PAR1....PAR1")
    head = s3.head_object(Bucket=bucket, Key="short.parquet")
    obj = ObjectRef(bucket, "short.parquet", 9_999, head["ETag"].strip('"'))

    async with open_s3_client(moto_endpoint) as client:
        with pytest.raises(TruncatedBodyError, match="short.parquet.*12 bytes"):
            await fetch_object(client, obj, RetryPolicy(attempts=2, max_wait=0.01))


async def test_fetch_object_does_not_retry_a_missing_key(
    s3: Any, bucket: str, moto_endpoint: str
) -> None:
    """A vanished key is permanent: one attempt, an error naming the object."""
    obj = ObjectRef(bucket, "gone.parquet", 10, "0" * 32)
    retries: list[str] = []

    async with open_s3_client(moto_endpoint) as client:
        with pytest.raises(S3PermanentError, match="gone.parquet"):
            await fetch_object(client, obj, RetryPolicy(on_retry=retries.append))

    assert retries == []


async def test_ingester_bounds_downloads_by_count_and_bytes(
    s3: Any, bucket: str, moto_endpoint: str, make_settings: Callable[..., Any]
) -> None:
    """With a byte budget smaller than two files, one file is in flight at a time."""
    bodies = [parquet_bytes(numbers(n * 1000, 1000)) for n in range(8)]
    for n, body in enumerate(bodies):
        s3.put_object(Bucket=bucket, Key=f"bound/{n}.parquet", Body=body)

    largest = max(len(body) for body in bodies)
    settings = make_settings(
        [f"s3://{bucket}/bound/"], concurrency=3, max_inflight_bytes=largest * 3 // 2
    )
    ledger = Ledger(settings.state)
    owner = Owner.for_this_process()
    ledger.register(owner, 60)
    try:
        async with open_s3_client(moto_endpoint, 8) as client:
            ingester = Ingester(settings, client, ledger, owner, Budget(Limits()))
            with anyio.fail_after(120):
                report = await ingester.run_passes()
    finally:
        ledger.close()

    assert report.ingested == 8
    assert 0 < ingester.bytes_in_flight.peak <= largest * 3 // 2
    assert ingester.peak_fetches <= 3
    assert ingester.bytes_in_flight.used == 0
