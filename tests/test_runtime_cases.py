"""The runtime cases of ``../shared/cases``: pagination, big files, the pool, Arrow RSS.

Each test reads the case's files in place and checks what the case's README asks: every
listed key once (also across a restart), a big file visible whole or not at all after a
kill, a small connection pool that never stalls, and resident memory that stays flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bifrost_async.budget import Budget, Limits
from bifrost_async.config import Settings, parse_s3_uri
from bifrost_async.discovery import list_objects
from bifrost_async.faultproxy import FaultProxy, FaultRule
from bifrost_async.fetch import RetryPolicy, fetch_object
from bifrost_async.ledger import Ledger, Owner
from bifrost_async.pipeline import Ingester
from bifrost_async.s3 import open_s3_client

from .helpers import parquet_bytes
from .processes import (
    assert_exactly_once,
    ingester_command,
    kill_until_drained,
    start_ingester,
)

pytestmark = [pytest.mark.shared, pytest.mark.slow]


# -- pagination ----------------------------------------------------------------------


def pagination_keys(shared: Path) -> tuple[str, list[list[str]]]:
    """The case's prefix and its keys, page by page as ListObjectsV2 returned them."""
    listing = json.loads((shared / "cases/pagination/list_pages.json").read_text())
    pages = [[item["Key"] for item in page["Contents"]] for page in listing["pages"]]
    assert sum(map(len, pages)) == listing["expected_total_keys"] == 2503
    return listing["Prefix"], pages


def upload_ids(s3: Any, bucket: str, keys: list[str], first: int) -> Counter[int]:
    """Upload one single-row file per key, ids counting up from ``first``."""

    def upload(offset: int) -> None:
        table = pa.table({"id": pa.array([first + offset], pa.int64())})
        s3.put_object(Bucket=bucket, Key=keys[offset], Body=parquet_bytes(table))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, range(len(keys))))

    return Counter(range(first, first + len(keys)))


@pytest.mark.anyio
async def test_pagination_lists_every_page(
    shared: Path, s3: Any, bucket: str, moto_endpoint: str
) -> None:
    """All 2,503 keys of the three-page listing are found, each once."""
    prefix, pages = pagination_keys(shared)
    keys = [key for page in pages for key in page]
    upload_ids(s3, bucket, keys, 0)

    location = parse_s3_uri(f"s3://{bucket}/{prefix}")
    async with open_s3_client(moto_endpoint) as client:
        found = await list_objects(client, location, ("*.parquet",))

    assert sorted(obj.key for obj in found) == sorted(keys)


def test_pagination_lands_every_key_once_across_a_restart(
    shared: Path,
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Page one lands, pages two and three arrive, a kill mid-way: each key once."""
    prefix, pages = pagination_keys(shared)
    expected = upload_ids(s3, bucket, pages[0], 0)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    command = ingester_command(
        [f"s3://{bucket}/{prefix}"],
        "ns.events",
        state,
        moto_endpoint,
        "--batch-max-files",
        "400",
        "--concurrency",
        "16",
    )
    first = start_ingester(command, catalog_env, tmp_path / "first.log")
    assert first.wait(timeout=240) == 0, (tmp_path / "first.log").read_text()

    later = [key for page in pages[1:] for key in page]
    expected += upload_ids(s3, bucket, later, len(pages[0]))
    report = kill_until_drained(
        command,
        catalog_env,
        tmp_path,
        seed=3,
        kills=1,
        ready_text="commit.complete",
        early_share=0.0,
        window=0.0,
    )

    assert report.kills == 1
    assert_exactly_once(state, load_table(), expected, 2503, "ns.events")


# -- big_file_chunked ----------------------------------------------------------------


def table_rows(load_table: Callable[..., Any]) -> int:
    """Rows visible in the test table (0 while it does not exist)."""
    try:
        table = load_table()
    except Exception:  # NoSuchTableError, or no catalog tables yet
        return 0

    return int(table.scan().to_arrow().num_rows)


@pytest.mark.parametrize(
    "moment",
    ["fetch.complete", "process.complete", "commit.begin"],
    ids=["after-download", "after-write", "in-commit"],
)
def test_big_file_lands_whole_after_a_kill(
    moment: str,
    shared: Path,
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Killed at one moment, a 12-row-group file shows 0 or all rows; then all, once."""
    path = shared / "cases/big_file_chunked/many_row_groups.parquet"
    s3.put_object(Bucket=bucket, Key="in/big.parquet", Body=path.read_bytes())
    state = f"sqlite:///{tmp_path / 'state.db'}"
    command = ingester_command(
        [f"s3://{bucket}/in/"], "ns.events", state, moto_endpoint
    )
    seen: list[int] = []

    report = kill_until_drained(
        command,
        catalog_env,
        tmp_path,
        seed=7,
        kills=1,
        ready_text=moment,
        early_share=0.0,
        window=0.0,
        before_run=lambda _: seen.append(table_rows(load_table)),
    )

    assert report.kills == 1
    assert set(seen) <= {0, 240_000}, seen
    table = load_table().scan().to_arrow()
    assert table.num_rows == 240_000
    assert len(set(table.column("click_id").to_pylist())) == 240_000
    ledger = Ledger(state)
    try:
        assert ledger.status()["ingested"] == 1
    finally:
        ledger.close()


# -- aiobotocore_pool ----------------------------------------------------------------


def padded(template: Path, size: int) -> bytes:
    """The template file with a random binary column, so the file is ``size`` bytes."""
    table = pq.read_table(template)
    table = table.append_column("pad", pa.array([os.urandom(size)], pa.binary()))
    return parquet_bytes(table, compression="none")


@pytest.mark.anyio
async def test_pool_of_four_finishes_twelve_big_objects(
    shared: Path,
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
) -> None:
    """Twelve 2 MB objects, four quarantined, through 4 connections: none stalls."""
    case = shared / "cases/aiobotocore_pool"
    scenario = json.loads((case / "scenario.json").read_text())
    pool = scenario["max_pool_connections"]
    for key in scenario["keys"]:
        template = case / "objects" / key.rsplit("/", 1)[-1]
        body = padded(template, scenario["object_size_bytes"])
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    with FaultProxy(moto_endpoint) as proxy:
        rule = FaultRule("truncate", path=r"part-00[0-3]\.parquet")
        proxy.set_rules([rule])
        settings = make_settings(
            [f"s3://{bucket}/in/"], s3_endpoint=proxy.url, concurrency=8
        )
        owner = Owner.for_this_process()
        ledger = Ledger(settings.state)
        ledger.register(owner, 60)
        try:
            async with open_s3_client(proxy.url, pool) as client:
                ingester = Ingester(settings, client, ledger, owner, Budget(Limits()))
                with anyio.fail_after(120):
                    report = await ingester.run_pass()

                proxy.set_rules([])
                with anyio.fail_after(scenario["per_call_timeout_s"] * 4):
                    objs = await list_objects(
                        client, settings.routes[0].sources[0], ("*.parquet",)
                    )
                    for obj in objs:
                        await fetch_object(client, obj, RetryPolicy(attempts=1))
        finally:
            ledger.close()

    assert (report.ingested, report.quarantined) == (8, 4)
    assert rule.fired >= 4
    landed = load_table().scan(selected_fields=("n",)).to_arrow().column("n")
    assert sorted(landed.to_pylist()) == list(range(4, 12))


# -- arrow_rss -----------------------------------------------------------------------


def test_arrow_rss_stays_flat_over_five_ingests(
    shared: Path, s3: Any, bucket: str, moto_endpoint: str, tmp_path: Path
) -> None:
    """One process ingests the fat-strings file five times; RSS stays under 2x."""
    out = tmp_path / "rss.json"
    source = shared / "cases/arrow_rss/fat_strings.parquet"
    command = [
        sys.executable,
        "-m",
        "tests.memory_probe",
        "--endpoint",
        moto_endpoint,
        "--bucket",
        bucket,
        "--file",
        str(source),
        "--passes",
        "5",
        "--workdir",
        str(tmp_path / "work"),
        "--out",
        str(out),
    ]
    root = Path(__file__).resolve().parent.parent
    subprocess.run(command, check=True, cwd=root, timeout=240)

    samples = json.loads(out.read_text())["samples"]
    rss = [sample["rss"] for sample in samples]
    assert len(rss) == 5
    assert rss[4] < 2 * rss[0], rss
