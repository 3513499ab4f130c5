"""Benchmark inputs: generated Parquet files of a chosen size, or the real shared files.

Generated files hold ints, floats, strings, timestamps and some nulls (about 10 % per
nullable column), written with Snappy the way Spark writes them. Every file has the
same schema, so all of them land in one table. ``--real PATTERN`` takes the real files
from ``../shared/data`` instead (read in place, never copied into the project): the
readable files of class ``realistic`` in its MANIFEST whose path contains PATTERN.

Run on its own to fill a local S3 endpoint (a moto server is started when no
``--endpoint`` is given, and kept until Ctrl-C)::

    .venv/bin/python benchmarks/dataset.py --files 100 --size 4MB
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bifrost_async.config import parse_size
from bifrost_async.endpoint import run_moto_server

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

_WORDS = np.array(
    "amber birch cedar delta ember fjord grove harbor island juniper kestrel lagoon "
    "meadow nectar orchard prairie quartz river summit tundra upland valley willow "
    "xenon yarrow zephyr".split()
)
_STATUSES = np.array(["placed", "paid", "shipped", "delivered", "returned"])
_EPOCH_2026_US = 1_767_225_600_000_000
# Rows per byte of Snappy Parquet for the generated schema, measured once per process.
_ROWS_PER_BYTE: list[float] = []


@dataclass(frozen=True)
class InputFile:
    """One benchmark input: its key under the prefix and its bytes."""

    key: str
    data: bytes
    rows: int


def make_events(rows: int, seed: int) -> pa.Table:
    """A table of ``rows`` generated events, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    first = seed * rows

    def with_nulls(values: Any, kind: pa.DataType, share: float = 0.1) -> pa.Array:
        mask = rng.random(rows) < share
        return pa.array(values, kind, mask=mask)

    words = _WORDS[rng.integers(0, len(_WORDS), (rows, 2))]
    labels = np.char.add(np.char.add(words[:, 0], "-"), words[:, 1])
    return pa.table(
        {
            "event_id": pa.array(np.arange(first, first + rows), pa.int64()),
            "account_id": pa.array(rng.integers(1, 5_000_000, rows), pa.int64()),
            "quantity": with_nulls(rng.integers(1, 100, rows), pa.int32()),
            "amount": with_nulls(rng.random(rows) * 10_000, pa.float64()),
            "score": with_nulls(rng.normal(0, 1, rows), pa.float64()),
            "status": pa.array(_STATUSES[rng.integers(0, len(_STATUSES), rows)]),
            "label": with_nulls(labels, pa.string()),
            "session": pa.array(
                np.char.mod("%016x", rng.integers(0, 2**62, rows)), pa.string()
            ),
            "created_at": pa.array(
                _EPOCH_2026_US + rng.integers(0, 300 * 86_400_000_000, rows),
                pa.timestamp("us", tz="UTC"),
            ),
            "updated_at": with_nulls(
                _EPOCH_2026_US + rng.integers(0, 300 * 86_400_000_000, rows),
                pa.timestamp("us"),
                0.3,
            ),
        }
    )


def to_parquet(table: pa.Table) -> bytes:
    """The bytes of a Snappy-compressed Parquet file of ``table``."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", row_group_size=256 * 1024)
    return sink.getvalue()


def rows_for_size(size: int) -> int:
    """How many generated rows make a Parquet file of about ``size`` bytes."""
    if not _ROWS_PER_BYTE:
        sample = 50_000
        _ROWS_PER_BYTE.append(sample / len(to_parquet(make_events(sample, 0))))

    return max(1, int(size * _ROWS_PER_BYTE[0]))


def generated_files(count: int, size: int) -> Iterator[InputFile]:
    """``count`` generated files of about ``size`` bytes each, two at a time."""
    rows = rows_for_size(size)

    def make(index: int) -> InputFile:
        data = to_parquet(make_events(rows, index))
        return InputFile(f"part-{index:05d}.snappy.parquet", data, rows)

    with ThreadPoolExecutor(max_workers=2) as pool:
        yield from pool.map(make, range(count))


def real_files(pattern: str) -> Iterator[InputFile]:
    """Readable ``realistic`` files of ../shared/data with ``pattern`` in the path."""
    manifest = SHARED_DATA / "MANIFEST.md"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} is not present; --real needs ../shared/data")

    for line in manifest.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) < 7 or cells[2] != "realistic" or cells[5] != "ok":
            continue

        if pattern in cells[1] and cells[1].endswith(".parquet"):
            path = SHARED_DATA / cells[1]
            data = path.read_bytes()
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            yield InputFile(cells[1].replace("/", "__"), data, rows)


def select_files(count: int, size: int, real: str | None) -> list[InputFile]:
    """The benchmark's input files: generated, or the real ones matching ``real``."""
    files = list(real_files(real) if real is not None else generated_files(count, size))
    if not files:
        raise SystemExit(f"no realistic file in {SHARED_DATA} matches {real!r}")

    return files


def upload(endpoint: str, bucket: str, prefix: str, files: list[InputFile]) -> None:
    """Create the bucket and upload every file under ``prefix`` (8 at a time)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)

    def put(item: InputFile) -> None:
        client.put_object(Bucket=bucket, Key=prefix + item.key, Body=item.data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, files))


def write_local(folder: Path, files: list[InputFile]) -> None:
    """Write the same files to a local folder, for the local-limit baseline."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in files:
        (folder / item.key).write_bytes(item.data)


def set_dummy_credentials() -> None:
    """Credentials and region for the local endpoint, unless already set."""
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)


def main() -> None:
    """Generate (or pick) the files and upload them to a local S3 endpoint."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100, help="files to generate")
    parser.add_argument("--size", default="4MB", help="size of each file")
    parser.add_argument("--real", metavar="PATTERN", help="use ../shared/data files")
    parser.add_argument("--endpoint", help="an S3 endpoint (default: start moto)")
    parser.add_argument("--bucket", default="bench")
    parser.add_argument("--prefix", default="data/")
    args = parser.parse_args()
    set_dummy_credentials()
    files = select_files(args.files, parse_size(args.size, "--size"), args.real)
    total = sum(len(f.data) for f in files)
    if args.endpoint:
        upload(args.endpoint, args.bucket, args.prefix, files)
        print(f"uploaded {len(files)} files, {total / 1e6:.1f} MB to {args.endpoint}")
        return

    with run_moto_server() as endpoint:
        upload(endpoint, args.bucket, args.prefix, files)
        print(f"uploaded {len(files)} files, {total / 1e6:.1f} MB to {endpoint}")
        print(f"s3://{args.bucket}/{args.prefix} is served until Ctrl-C", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            sys.exit(0)


if __name__ == "__main__":
    main()
