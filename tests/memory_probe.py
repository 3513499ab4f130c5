"""Resident memory of one long-lived ingester process, pass after pass.

Run as ``python -m tests.memory_probe ...`` in a process of its own, so that what it
measures is the ingester and nothing else. Before every pass it uploads new objects
(copies of one Parquet file under new keys), runs one pass, and records the process's
RSS; the list of figures is written as JSON. ``--style seed`` runs the naive loop the
ingester replaces instead (a new S3 client every pass, one ``table.append`` per file),
for comparison. The arrow_rss case test and ``benchmarks/soak_memory.py`` use it.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from aiobotocore.session import get_session

from bifrost_async.budget import Budget, Limits, current_rss
from bifrost_async.config import Route, Settings, parse_s3_uri
from bifrost_async.ledger import Ledger, Owner
from bifrost_async.pipeline import Ingester
from bifrost_async.s3 import open_s3_client

TABLE = "soak.events"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The probe's command line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="the S3 endpoint URL")
    parser.add_argument("--bucket", required=True, help="an existing bucket")
    parser.add_argument("--file", required=True, type=Path, help="the Parquet file")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--files-per-pass", type=int, default=1)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--style", choices=("ingester", "seed"), default="ingester")
    parser.add_argument("--out", required=True, type=Path, help="the JSON to write")
    parser.add_argument(
        "--expire-snapshots-after",
        type=float,
        default=None,
        help="seconds: the ingester expires older snapshots after each pass",
    )
    return parser.parse_args(argv)


class Uploader:
    """Puts copies of one file under fresh keys, as a live source would."""

    def __init__(self, endpoint: str, bucket: str, path: Path) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.bucket = bucket
        self.body = path.read_bytes()
        self.count = 0

    def upload(self, files: int) -> list[str]:
        """Upload ``files`` new copies; return their keys."""
        keys = []
        for _ in range(files):
            key = f"in/{self.count:06d}.parquet"
            self.client.put_object(Bucket=self.bucket, Key=key, Body=self.body)
            keys.append(key)
            self.count += 1

        return keys


def catalog_properties(workdir: Path) -> dict[str, str]:
    """A SQLite catalog and a local warehouse in the work folder."""
    return {
        "type": "sql",
        "uri": f"sqlite:///{workdir / 'catalog.db'}",
        "warehouse": f"file://{workdir / 'warehouse'}",
    }


async def probe_ingester(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One Ingester, one client and one ledger for every pass, as ``run`` has them."""
    uploader = Uploader(args.endpoint, args.bucket, args.file)
    source = parse_s3_uri(f"s3://{args.bucket}/in/")
    settings = Settings(
        routes=(Route(sources=(source,), table=TABLE),),
        state=f"sqlite:///{args.workdir / 'state.db'}",
        s3_endpoint=args.endpoint,
        catalog_properties=catalog_properties(args.workdir),
        batch_max_age=0.05,
        # Settings built here skip the one-hour floor of the command line: nothing
        # else writes to this table, so no pending batch can need an old snapshot.
        expire_snapshots_after=args.expire_snapshots_after,
    )
    owner = Owner.for_this_process()
    ledger = Ledger(settings.state)
    ledger.register(owner, settings.lease_seconds)
    samples = []
    try:
        pool = settings.concurrency + 4
        async with open_s3_client(settings.s3_endpoint, pool) as client:
            ingester = Ingester(settings, client, ledger, owner, Budget(Limits()))
            for number in range(args.passes):
                await anyio.to_thread.run_sync(uploader.upload, args.files_per_pass)
                started = time.monotonic()
                report = await ingester.run_pass()
                if report.ingested != args.files_per_pass:
                    raise AssertionError(f"pass {number} ingested {report.ingested}")

                await ingester.expire_snapshots()
                samples.append(sample(number, started))
                save(args, samples)
    finally:
        ledger.close()

    return samples


async def probe_seed(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The naive loop: a new client per pass, one ``table.append`` per file."""
    from pyiceberg.catalog import load_catalog

    uploader = Uploader(args.endpoint, args.bucket, args.file)
    catalog = load_catalog("default", **catalog_properties(args.workdir))
    catalog.create_namespace_if_not_exists("soak")
    table = None
    samples = []
    for number in range(args.passes):
        keys = uploader.upload(args.files_per_pass)
        started = time.monotonic()
        session = get_session()
        async with session.create_client("s3", endpoint_url=args.endpoint) as client:
            for key in keys:
                response = await client.get_object(Bucket=args.bucket, Key=key)
                async with response["Body"] as body:
                    data = await body.read()

                arrow = pq.read_table(io.BytesIO(data))
                if table is None:
                    table = catalog.create_table(TABLE, schema=arrow.schema)

                table.append(arrow)

        samples.append(sample(number, started))
        save(args, samples)

    return samples


def sample(number: int, started: float) -> dict[str, Any]:
    """One pass's figures: its number, its RSS in bytes and its duration."""
    return {
        "pass": number,
        "rss": current_rss(),
        "arrow": pa.total_allocated_bytes(),
        "python_blocks": sys.getallocatedblocks(),
        "seconds": round(time.monotonic() - started, 4),
    }


def save(args: argparse.Namespace, samples: list[dict[str, Any]]) -> None:
    """Write the samples so far every 50 passes, so a long soak can be cut short."""
    if len(samples) % 50 == 0:
        args.out.write_text(json.dumps({"style": args.style, "samples": samples}))


def main(argv: list[str] | None = None) -> None:
    """Run the probe and write its samples as JSON."""
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    probe = probe_ingester if args.style == "ingester" else probe_seed
    samples = anyio.run(probe, args)
    args.out.write_text(json.dumps({"style": args.style, "samples": samples}))


if __name__ == "__main__":
    main()
