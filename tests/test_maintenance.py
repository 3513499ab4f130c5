"""Snapshot expiry: what may go, and a run that expires its table's old snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bifrost_async.commit import TableHandle
from bifrost_async.config import Settings, load_settings
from bifrost_async.errors import ConfigError
from bifrost_async.maintenance import expirable_snapshots, expiry_horizon
from bifrost_async.runner import run

from .helpers import upload_numbers


@pytest.mark.parametrize(
    ("oldest_pending", "horizon"),
    [(None, 1000.0), (5000.0, 1000.0), (1050.0, 930.0)],
    ids=["nothing-pending", "pending-after-horizon", "pending-before-horizon"],
)
def test_expiry_horizon_never_passes_the_oldest_pending_batch(
    oldest_pending: float | None, horizon: float
) -> None:
    """A pending batch (less the margin) holds the horizon back; otherwise the age."""
    assert expiry_horizon(10_000.0, 9_000.0, oldest_pending, 120.0) == horizon


@pytest.mark.parametrize(
    ("value", "seconds"), [("1h", 3600.0), ("7d", 604800.0)], ids=["hour", "week"]
)
def test_config_expire_snapshots_after_reads_a_duration(
    value: str, seconds: float
) -> None:
    """``--expire-snapshots-after`` takes a duration of an hour or more."""
    settings = load_settings(
        {
            "source": ["s3://landing/x/"],
            "table": "ns.t",
            "expire_snapshots_after": value,
        }
    )

    assert settings.expire_snapshots_after == seconds


def test_config_expire_snapshots_after_refuses_less_than_an_hour() -> None:
    """A shorter age could expire a snapshot that a recovering writer must find."""
    with pytest.raises(ConfigError, match="^--expire-snapshots-after: '30m' is short"):
        load_settings(
            {
                "source": ["s3://landing/x/"],
                "table": "ns.t",
                "expire_snapshots_after": "30m",
            }
        )


@pytest.mark.anyio
async def test_run_expires_old_snapshots_and_keeps_every_row(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
    catalog_properties: dict[str, str],
) -> None:
    """Twelve commits, then expiry: one snapshot left, every row still in the table."""
    for n in range(12):
        upload_numbers(s3, bucket, f"in/{n:02d}.parquet", n * 100, 10)

    settings = make_settings(
        [f"s3://{bucket}/in/"], batch_max_files=1, expire_snapshots_after=0.0
    )

    result = await run(settings)

    table = load_table()
    assert result.report.commits == 12
    assert len(table.metadata.snapshots) == 1
    ids = sorted(table.scan().to_arrow().column("id").to_pylist())
    assert ids == [n * 100 + i for n in range(12) for i in range(10)]


def test_table_handle_expires_nothing_newer_than_the_horizon(
    catalog_properties: dict[str, str],
) -> None:
    """Snapshots at or after the horizon, and the current one, are kept."""
    import pyarrow as pa

    handle = TableHandle("default", "ns.few", catalog_properties)
    table = handle.ensure(pa.schema([pa.field("id", pa.int64())]))
    for n in range(3):
        table.append(pa.table({"id": pa.array([n], pa.int64())}))

    cut = time.time()
    time.sleep(0.01)
    table.append(pa.table({"id": pa.array([3], pa.int64())}))

    assert len(expirable_snapshots(table.metadata, cut)) == 3
    assert handle.expire_snapshots(cut, at_least=4) == 0
    assert handle.expire_snapshots(cut, at_least=3) == 3
    assert len(handle.require().metadata.snapshots) == 1
    assert handle.require().scan().to_arrow().num_rows == 4


def test_table_handle_expiry_after_another_writer_expired_first_goes_on(
    catalog_properties: dict[str, str],
) -> None:
    """A writer whose view is stale meets snapshots already expired: no error."""
    import pyarrow as pa

    first = TableHandle("default", "ns.two", catalog_properties)
    table = first.ensure(pa.schema([pa.field("id", pa.int64())]))
    for n in range(4):
        table.append(pa.table({"id": pa.array([n], pa.int64())}))

    second = TableHandle("default", "ns.two", catalog_properties)
    second.load()
    cut = time.time() + 1

    assert first.expire_snapshots(cut, at_least=3) == 3
    assert second.expire_snapshots(cut, at_least=3) == 0, "skipped, not failed"
    assert len(second.refresh().metadata.snapshots) == 1
    assert second.require().scan().to_arrow().num_rows == 4
