"""S3 faults through the fault proxy: retried when transient, never a silent skip."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyiceberg.catalog import load_catalog

from bifrost_async.errors import RunError
from bifrost_async.faultproxy import FaultProxy, FaultRule
from bifrost_async.hooks import Hooks
from bifrost_async.ledger import Ledger
from bifrost_async.runner import run

from .helpers import upload_numbers, with_source_access

pytestmark = pytest.mark.anyio


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault proxy in front of the moto server, with no rules yet."""
    with FaultProxy(moto_endpoint) as running:
        yield running


def table_ids(load_table: Callable[..., Any]) -> list[int]:
    """Every id in the test table, sorted."""
    return sorted(load_table().scan().to_arrow().column("id").to_pylist())


@pytest.mark.parametrize("kind", ["slowdown", "internal", "reset", "truncate"])
async def test_fetch_transient_fault_is_retried_and_lands(
    kind: str,
    s3: Any,
    bucket: str,
    proxy: FaultProxy,
    make_settings: Callable[..., Any],
    load_table: Callable[..., Any],
) -> None:
    """Two faulted GETs are retried; every object lands once."""
    for n in range(3):
        upload_numbers(s3, bucket, f"in/{n}.parquet", n * 10, 10)

    rule = FaultRule(kind, count=2)  # type: ignore[arg-type]  # parametrized literal
    proxy.set_rules([rule])
    retries: list[str] = []
    settings = make_settings([f"s3://{bucket}/in/"], s3_endpoint=proxy.url)

    result = await run(settings, Hooks(on_retry=retries.append))

    assert rule.fired == 2
    assert retries.count("fetch") == 2
    assert (result.report.ingested, result.report.quarantined) == (3, 0)
    assert table_ids(load_table) == list(range(30))


async def test_fetch_persistent_truncated_body_is_quarantined(
    s3: Any,
    bucket: str,
    proxy: FaultProxy,
    make_settings: Callable[..., Any],
    load_table: Callable[..., Any],
) -> None:
    """A body that is always short ends in quarantine with the reason; others land."""
    upload_numbers(s3, bucket, "in/good.parquet", 0, 10)
    upload_numbers(s3, bucket, "in/short.parquet", 10, 10)
    rule = FaultRule("truncate", path="short")
    proxy.set_rules([rule])
    settings = make_settings([f"s3://{bucket}/in/"], s3_endpoint=proxy.url)

    result = await run(settings)

    assert rule.fired == 5
    assert (result.report.ingested, result.report.quarantined) == (1, 1)
    (entry,) = Ledger(settings.state).status()["quarantined"]
    assert entry["key"] == "in/short.parquet"
    assert re.search("listing said|does not match its checksum", entry["reason"])
    assert table_ids(load_table) == list(range(10))


async def test_fetch_persistent_slowdown_ends_run_with_error(
    s3: Any,
    bucket: str,
    proxy: FaultProxy,
    make_settings: Callable[..., Any],
    load_table: Callable[..., Any],
) -> None:
    """A 503 that never ends fails the run naming the object; a later run lands it."""
    upload_numbers(s3, bucket, "in/good.parquet", 0, 10)
    upload_numbers(s3, bucket, "in/stuck.parquet", 10, 10)
    proxy.set_rules([FaultRule("slowdown", path="stuck")])
    settings = make_settings([f"s3://{bucket}/in/"], s3_endpoint=proxy.url)

    with pytest.raises(RunError, match=r"in/stuck\.parquet.*SlowDown"):
        await run(settings)

    ledger = Ledger(settings.state)
    assert ledger.status()["quarantined"] == []
    assert ledger.count_open("ns.events") == 0
    assert table_ids(load_table) == list(range(10))

    proxy.set_rules([])
    again = await run(settings)

    assert again.report.ingested == 1
    assert table_ids(load_table) == list(range(20))


def test_command_persistent_fault_exits_1_naming_the_object(
    s3: Any, bucket: str, proxy: FaultProxy, catalog_env: dict[str, str], tmp_path: Any
) -> None:
    """The command exits 1 with a run.failed line that names the faulted key."""
    upload_numbers(s3, bucket, "in/stuck.parquet", 0, 10)
    proxy.set_rules([FaultRule("internal")])
    command = [
        sys.executable,
        "-m",
        "bifrost_async",
        "run",
        "--once",
        "--source",
        f"s3://{bucket}/in/",
        "--table",
        "ns.events",
        "--state",
        f"sqlite:///{tmp_path / 'state.db'}",
        "--s3-endpoint",
        proxy.url,
    ]

    done = subprocess.run(
        command, env=catalog_env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 1, done.stderr
    assert "run.failed" in done.stderr
    assert "in/stuck.parquet" in done.stderr
    assert "InternalError" in done.stderr


@pytest.mark.parametrize("kind", ["slowdown", "reset", "truncate"])
async def test_in_place_footer_fault_is_retried_and_lands_in_place(
    kind: str,
    s3: Any,
    bucket: str,
    proxy: FaultProxy,
    moto_endpoint: str,
    catalog_properties: dict[str, str],
    make_settings: Callable[..., Any],
) -> None:
    """Faulted ranged footer reads are retried; every object still lands in place."""
    for n in range(3):
        upload_numbers(s3, bucket, f"in/{n}.parquet", n * 10, 10)

    rule = FaultRule(kind, count=2)  # type: ignore[arg-type]  # parametrized literal
    proxy.set_rules([rule])
    retries: list[str] = []
    readable = with_source_access(catalog_properties, moto_endpoint)
    settings = make_settings(
        [f"s3://{bucket}/in/"],
        s3_endpoint=proxy.url,
        zero_copy="in-place",
        catalog_properties=readable,
    )

    result = await run(settings, Hooks(on_retry=retries.append))

    assert rule.fired == 2
    assert retries.count("fetch") == 2
    assert (result.report.ingested, result.report.quarantined) == (3, 0)
    table = load_catalog("default", **readable).load_table("ns.events")
    paths = {task.file.file_path for task in table.scan().plan_files()}
    assert paths == {f"s3://{bucket}/in/{n}.parquet" for n in range(3)}
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(30))


def test_proxy_head_answers_with_the_object_length(
    s3: Any, bucket: str, proxy: FaultProxy
) -> None:
    """A HEAD through the proxy reports the object's length, not its empty body's."""
    import boto3

    upload_numbers(s3, bucket, "h/0.parquet", 0, 10)
    size = s3.head_object(Bucket=bucket, Key="h/0.parquet")["ContentLength"]
    client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1")

    head = client.head_object(Bucket=bucket, Key="h/0.parquet")

    assert head["ContentLength"] == size > 0
