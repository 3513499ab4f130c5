"""The embedded default: a whole sync on this machine, with nothing to configure.

Starts a moto S3 server on 127.0.0.1, uploads generated orders under several prefixes,
ingests them into a SQLite catalog and a local warehouse in a working folder, reads the
table back and checks the counts. Needs no network beyond loopback.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import anyio
from rich.console import Console
from rich.table import Table as RichTable

from .config import Route, Settings, parse_s3_uri
from .endpoint import run_moto_server
from .runner import RunResult, run
from .s3 import open_s3_client
from .sample import orders_parquet

__all__ = ["run_demo"]

BUCKET = "bifrost-demo"
PREFIXES = ("orders/region=eu/", "orders/region=us/", "orders/region=apac/")


def run_demo(
    workdir: Path, files_per_prefix: int = 12, rows_per_file: int = 8_000
) -> int:
    """Run the demo in ``workdir`` (wiped first); return 0 when the counts match."""
    console = Console()
    if workdir.exists():
        shutil.rmtree(workdir)

    workdir.mkdir(parents=True)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "demo"),
        ("AWS_SECRET_ACCESS_KEY", "demo"),
        ("AWS_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)

    catalog = {
        "type": "sql",
        "uri": f"sqlite:///{workdir / 'catalog.db'}",
        "warehouse": f"file://{workdir / 'warehouse'}",
    }
    with run_moto_server() as endpoint:
        console.print(f"[bold]local S3[/] moto server at {endpoint}")
        uploaded = anyio.run(upload_orders, endpoint, files_per_prefix, rows_per_file)
        console.print(
            f"[bold]uploaded[/] {uploaded['objects']} objects, "
            f"{uploaded['rows']:,} rows, "
            f"{uploaded['bytes'] / 1e6:.1f} MB under {len(PREFIXES)} prefixes"
        )
        settings = Settings(
            routes=(
                Route(
                    sources=tuple(parse_s3_uri(f"s3://{BUCKET}/{p}") for p in PREFIXES),
                    table="demo.orders",
                    catalog="demo",
                ),
            ),
            state=f"sqlite:///{workdir / 'state.db'}",
            once=True,
            s3_endpoint=endpoint,
            catalog_properties=catalog,
            poll_interval=0.5,
            batch_max_files=12,
        )
        result = anyio.run(run, settings)

    return report(console, result, uploaded, catalog, workdir)


async def upload_orders(
    endpoint: str, files_per_prefix: int, rows: int
) -> dict[str, int]:
    """Create the bucket and upload the generated files, a few at a time."""
    totals = {"objects": 0, "rows": 0, "bytes": 0}
    async with open_s3_client(endpoint) as client:
        await client.create_bucket(Bucket=BUCKET)
        limiter = anyio.CapacityLimiter(8)

        async def put(prefix: str, index: int, seed: int) -> None:
            async with limiter:
                body = await anyio.to_thread.run_sync(
                    orders_parquet, rows, seed, seed * rows
                )
                key = f"{prefix}part-{index:05d}.snappy.parquet"
                await client.put_object(Bucket=BUCKET, Key=key, Body=body)
                totals["objects"] += 1
                totals["rows"] += rows
                totals["bytes"] += len(body)

        async with anyio.create_task_group() as group:
            for p, prefix in enumerate(PREFIXES):
                for index in range(files_per_prefix):
                    group.start_soon(put, prefix, index, p * files_per_prefix + index)
                # Markers that a real Spark job leaves; the listing must skip them.
                await client.put_object(
                    Bucket=BUCKET, Key=f"{prefix}_SUCCESS", Body=b""
                )

    return totals


def report(
    console: Console,
    result: RunResult,
    uploaded: dict[str, int],
    catalog: dict[str, Any],
    workdir: Path,
) -> int:
    """Print what the run did, read the table back and compare the counts."""
    from pyiceberg.catalog import load_catalog

    table = load_catalog("demo", **catalog).load_table("demo.orders")
    rows_in_table = table.scan().to_arrow().num_rows
    snapshots = len(table.metadata.snapshots)
    r = result.report

    summary = RichTable(title="bifrost-async demo", show_header=False)
    summary.add_row("objects ingested", f"{r.ingested} of {uploaded['objects']}")
    summary.add_row("objects quarantined", str(r.quarantined))
    summary.add_row("rows committed", f"{r.rows:,}")
    summary.add_row("bytes downloaded", f"{r.bytes / 1e6:.1f} MB")
    summary.add_row("seconds", f"{result.seconds:.2f}")
    summary.add_row("throughput", f"{result.mb_per_second:.1f} MB/s")
    summary.add_row("snapshots", str(snapshots))
    summary.add_row("rows read back", f"{rows_in_table:,}")
    summary.add_row("working folder", str(workdir))
    console.print(summary)

    if rows_in_table == uploaded["rows"] and r.ingested == uploaded["objects"]:
        console.print(
            "[bold green]counts match[/]: every uploaded row is in the table once"
        )
        return 0

    console.print(
        f"[bold red]counts differ[/]: uploaded {uploaded['rows']} rows, "
        f"table holds {rows_in_table}"
    )
    return 1
