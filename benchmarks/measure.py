"""One measurement in a process of its own, so its peak RSS and CPU time are its own.

``sweep.py`` runs ``python benchmarks/measure.py SPEC`` once per contender and reads one
JSON line from stdout. SPEC is a JSON object: ``kind`` (``ingester``, ``seed``,
``daft`` or ``local``), ``endpoint`` (the S3 endpoint, usually the latency proxy),
``bucket``, ``prefix``, ``workdir`` (a fresh folder for the catalog, ledger and
warehouse), ``local`` (the folder with local copies) and, for the ingester,
``concurrency``, ``zero_copy`` (``off``, ``copy`` or ``in-place``) and the batch
settings.

Each contender starts from an empty catalog and writes the same rows; the measurement
checks the row count it committed against the expected one, so a contender that drops
data cannot look fast. Imports happen before the clock starts.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

TABLE = "bench.events"


def catalog_properties(workdir: Path) -> dict[str, str]:
    """A fresh SQLite catalog with a local warehouse inside ``workdir``."""
    return {
        "type": "sql",
        "uri": f"sqlite:///{workdir / 'catalog.db'}",
        "warehouse": f"file://{workdir / 'warehouse'}",
    }


def source_properties(endpoint: str) -> dict[str, str]:
    """FileIO properties with which a table reads the benchmark's source bucket."""
    return {
        "s3.endpoint": endpoint,
        "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
        "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "s3.region": "us-east-1",
    }


def open_catalog(workdir: Path) -> Any:
    """The benchmark's catalog, with the ``bench`` namespace created."""
    from pyiceberg.catalog import load_catalog

    catalog = load_catalog("bench", **catalog_properties(workdir))
    catalog.create_namespace_if_not_exists("bench")
    return catalog


def table_rows(workdir: Path) -> int:
    """Rows in the benchmark table, from its current snapshot's summary."""
    table = open_catalog(workdir).load_table(TABLE)
    snapshot = table.current_snapshot()
    if snapshot is None or snapshot.summary is None:
        return 0

    return int(snapshot.summary["total-records"])


def run_ingester(spec: dict[str, Any]) -> int:
    """bifrost-async with ``--once`` semantics; returns the rows it committed."""
    import anyio

    from bifrost_async.config import Route, Settings, parse_s3_uri
    from bifrost_async.runner import run

    workdir = Path(spec["workdir"])
    properties = catalog_properties(workdir)
    zero_copy = spec.get("zero_copy", "off")
    if zero_copy == "in-place":
        # The table references the source objects: its FileIO must reach them.
        properties.update(source_properties(spec["endpoint"]))

    settings = Settings(
        routes=(
            Route(
                sources=(parse_s3_uri(f"s3://{spec['bucket']}/{spec['prefix']}"),),
                table=TABLE,
                catalog="bench",
            ),
        ),
        state=f"sqlite:///{workdir / 'state.db'}",
        once=True,
        concurrency=spec["concurrency"],
        s3_endpoint=spec["endpoint"],
        catalog_properties=properties,
        poll_interval=0.2,
        batch_max_files=spec.get("batch_max_files", 200),
        progress=False,
        zero_copy=zero_copy,
    )
    result = anyio.run(run, settings)
    if result.report.failed or result.report.quarantined:
        raise SystemExit(f"ingester: {result.report}")

    return result.report.rows


def run_seed(spec: dict[str, Any]) -> int:
    """The seed-style loop: sequential get_object, polars read, one append per file."""
    import boto3
    import polars as pl

    client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name="us-east-1")
    catalog = open_catalog(Path(spec["workdir"]))
    table = None
    rows = 0
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=spec["bucket"], Prefix=spec["prefix"]
    )
    for page in pages:
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=spec["bucket"], Key=item["Key"])["Body"]
            frame = pl.read_parquet(io.BytesIO(body.read()))
            data = frame.to_arrow()
            if table is None:
                table = catalog.create_table(TABLE, schema=data.schema)

            table.append(data)
            rows += frame.height

    return rows


def run_daft(spec: dict[str, Any]) -> int:
    """daft reads every object from S3 and appends them to the Iceberg table."""
    import daft
    from daft.io import IOConfig, S3Config

    config = IOConfig(
        s3=S3Config(
            endpoint_url=spec["endpoint"],
            key_id=os.environ["AWS_ACCESS_KEY_ID"],
            access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            force_virtual_addressing=False,
        )
    )
    frame = daft.read_parquet(
        f"s3://{spec['bucket']}/{spec['prefix']}**/*.parquet", io_config=config
    )
    catalog = open_catalog(Path(spec["workdir"]))
    table = catalog.create_table(TABLE, schema=frame.schema().to_pyarrow_schema())
    frame.write_iceberg(table, mode="append")
    return table_rows(Path(spec["workdir"]))


def run_local(spec: dict[str, Any]) -> int:
    """The local limit: read the local copies, write them as one Parquet file.

    No network and no catalog: only decoding and re-encoding, with zstd, the codec
    Iceberg tables use by default.
    """
    folder = Path(spec["local"])
    target = Path(spec["workdir"]) / "local.parquet"
    writer: pq.ParquetWriter | None = None
    rows = 0
    for path in sorted(folder.iterdir()):
        data = pq.read_table(path)
        if writer is None:
            writer = pq.ParquetWriter(target, data.schema, compression="zstd")

        writer.write_table(data)
        rows += data.num_rows

    if writer is not None:
        writer.close()

    return rows


KINDS: dict[str, Callable[[dict[str, Any]], int]] = {
    "ingester": run_ingester,
    "seed": run_seed,
    "daft": run_daft,
    "local": run_local,
}


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM).

    Not ``ru_maxrss``: that one survives fork and exec, so a child started by a big
    parent reports the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one contender and return its rows, seconds, CPU seconds and peak RSS."""
    function = KINDS[spec["kind"]]
    Path(spec["workdir"]).mkdir(parents=True, exist_ok=True)
    cpu = cpu_seconds()
    started = time.perf_counter()
    rows = function(spec)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds() - cpu,
        "peak_rss_mb": peak_rss() / 1e6,
    }


# Imported before the clock starts, for every contender alike: a user's process pays
# them once, not once per backfill.
WARM_IMPORTS = {
    "ingester": (
        "bifrost_async.runner",
        "pyiceberg.catalog.sql",
        "pyiceberg.io.pyarrow",
    ),
    "seed": ("boto3", "polars", "pyiceberg.catalog.sql", "pyiceberg.io.pyarrow"),
    "daft": ("daft", "pyiceberg.catalog.sql", "pyiceberg.io.pyarrow"),
    "local": (),
}


def main() -> None:
    """Read the spec from argv, measure, print the result as one JSON line."""
    spec = json.loads(sys.argv[1])
    for module in WARM_IMPORTS[spec["kind"]]:
        importlib.import_module(module)

    print(json.dumps(measure(spec)), flush=True)


if __name__ == "__main__":
    main()
