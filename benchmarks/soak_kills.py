"""Kill soak: hundreds of SIGKILLs at seeded random moments, on both catalogs.

The longer sibling of ``tests/test_exactly_once.py`` (it reuses the same helpers in
``tests/processes.py``): a moto S3 server on 127.0.0.1, ``--objects`` Parquet files of
``--rows`` rows each, more arriving while the ingester is being killed, then a run to
the end; the table's ids are compared as a multiset with the source ids, and the ledger
must agree with the table's snapshots. It runs once with a SQLite catalog and ledger and
once with a PostgreSQL catalog and ledger (a schema of its own). Results go to
``benchmarks/results/soak_kills.json``.

    .venv/bin/python benchmarks/soak_kills.py --kills 200 --objects 400 --rows 50000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import load_catalog

from bifrost_async.endpoint import run_moto_server

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import (  # noqa: E402  # needs ROOT on the path
    assert_exactly_once,
    catalog_environment,
    ingester_command,
    kill_until_drained,
    open_postgres_schema,
)

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TABLE = "soak.events"


def parse_args() -> argparse.Namespace:
    """The soak's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--objects", type=int, default=400)
    parser.add_argument("--rows", type=int, default=50_000, help="rows per object")
    parser.add_argument("--late", type=int, default=2, help="objects added per run")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--catalogs", default="sqlite,postgresql", help="comma-separated: which to soak"
    )
    parser.add_argument("--postgres", default=POSTGRES)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/soak_kills.json"
    )
    return parser.parse_args()


class Source:
    """Uploads numbered Parquet objects and remembers the ids they hold."""

    def __init__(self, endpoint: str, bucket: str, rows: int) -> None:
        self.client = boto3.client("s3", endpoint_url=endpoint)
        self.client.create_bucket(Bucket=bucket)
        self.bucket = bucket
        self.rows = rows
        self.count = 0
        self.expected: Counter[int] = Counter()

    def upload(self, objects: int) -> None:
        """Upload ``objects`` more files, ids continuing where the last one ended."""
        for _ in range(objects):
            start = self.count * self.rows
            numbers = range(start, start + self.rows)
            table = pa.table(
                {
                    "id": pa.array(numbers, pa.int64()),
                    "label": pa.array([f"row-{i}" for i in numbers]),
                    "amount": pa.array([i * 0.5 for i in numbers], pa.float64()),
                }
            )
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink)
            key = f"in/part-{self.count:05d}.parquet"
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=sink.getvalue().to_pybytes()
            )
            self.expected.update(range(start, start + self.rows))
            self.count += 1


@contextmanager
def catalog_and_ledger(
    kind: str, folder: Path, postgres: str
) -> Iterator[tuple[dict[str, str], str]]:
    """Catalog properties and a ledger URL of one kind, fresh for one soak."""
    warehouse = f"file://{folder / 'warehouse'}"
    if kind == "sqlite":
        uri = f"sqlite:///{folder / 'catalog.db'}"
        state = f"sqlite:///{folder / 'state.db'}"
        yield {"type": "sql", "uri": uri, "warehouse": warehouse}, state
        return

    with open_postgres_schema(postgres) as url:
        yield {"type": "sql", "uri": url, "warehouse": warehouse}, url


def soak(
    kind: str, endpoint: str, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """One soak on one catalog kind; raises AssertionError if anything is off."""
    bucket = f"soak-kills-{kind[:2]}-{random.Random(seed).randrange(10**8)}"
    source = Source(endpoint, bucket, args.rows)
    source.upload(args.objects)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with catalog_and_ledger(kind, folder, args.postgres) as (properties, state):
            command = ingester_command(
                [f"s3://{bucket}/in/"],
                TABLE,
                state,
                endpoint,
                "--batch-max-files",
                "8",
                "--batch-max-age",
                "0.5",
                "--concurrency",
                "8",
            )
            log_dir = folder / "logs"
            log_dir.mkdir()
            report = kill_until_drained(
                command,
                catalog_environment(properties),
                log_dir,
                seed,
                args.kills,
                ready_text="commit.begin",
                window=1.5,
                before_run=lambda run: source.upload(args.late) if run else None,
            )
            table = load_catalog("default", **properties).load_table(TABLE)
            assert_exactly_once(state, table, source.expected, source.count, TABLE)
            snapshots = len(table.metadata.snapshots)

    return {
        "catalog": kind,
        "seed": seed,
        "kills": report.kills,
        "runs": report.runs,
        "objects": source.count,
        "rows": sum(source.expected.values()),
        "snapshots": snapshots,
        "seconds": round(time.monotonic() - started, 1),
        "result": "exactly once",
    }


def main() -> None:
    """Soak each catalog kind in turn; write what happened."""
    args = parse_args()
    seed = args.seed
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)

    print(f"kill soak seed={seed}", flush=True)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)

    results = []
    with run_moto_server() as endpoint:
        for kind in args.catalogs.split(","):
            result = soak(kind, endpoint, args, seed)
            results.append(result)
            print(json.dumps(result), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"kills": args.kills, "objects": args.objects, "rows": args.rows}
    args.out.write_text(json.dumps({"settings": settings, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
