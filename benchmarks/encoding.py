"""Encoding cost: CPU to write one object as a data file, by dictionary page limit.

pyiceberg's writer takes ``write.parquet.dict-size-bytes`` from the table's properties
(Iceberg's default is 2 MB) as pyarrow's ``dictionary_pagesize_limit``. This writes
the benchmark's generated objects (``benchmarks/dataset.py``, 4 MB each by default)
with pyiceberg's other writer settings at several limits, and reports the best CPU
time of ``--repeat`` writes and the file size, each also as a ratio to Iceberg's
default. Results go to ``benchmarks/results/encoding.json``.

    .venv/bin/python benchmarks/encoding.py
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dataset import make_events, rows_for_size

ROOT = Path(__file__).resolve().parent.parent
LIMITS = (2 * 1024**2, 1024**2, 512 * 1024, 256 * 1024, 128 * 1024, 64 * 1024)


def parse_args() -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4_000_000, help="object bytes")
    parser.add_argument("--objects", type=int, default=3, help="objects to write")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/encoding.json"
    )
    return parser.parse_args()


def measure_write(table: pa.Table, limit: int, repeat: int) -> tuple[float, int]:
    """The best CPU seconds of ``repeat`` writes at this limit, and the file's size."""
    best = float("inf")
    size = 0
    for _ in range(repeat):
        sink = io.BytesIO()
        started = time.process_time()
        pq.write_table(
            table,
            sink,
            compression="zstd",
            data_page_size=1024**2,
            write_batch_size=20_000,
            dictionary_pagesize_limit=limit,
        )
        best = min(best, time.process_time() - started)
        size = len(sink.getvalue())

    return best, size


def main() -> None:
    """Measure every limit on the same objects, side by side, and write the JSON."""
    args = parse_args()
    tables = [
        make_events(rows_for_size(args.size), seed) for seed in range(args.objects)
    ]
    results: list[dict[str, Any]] = []
    for limit in LIMITS:
        runs = [measure_write(table, limit, args.repeat) for table in tables]
        results.append(
            {
                "dict_size_bytes": limit,
                "cpu_ms_per_object": 1000 * sum(cpu for cpu, _ in runs) / len(runs),
                "bytes_per_object": sum(size for _, size in runs) / len(runs),
            }
        )

    default = results[0]
    for result in results:
        result["cpu_ratio"] = result["cpu_ms_per_object"] / default["cpu_ms_per_object"]
        result["size_ratio"] = result["bytes_per_object"] / default["bytes_per_object"]
        print(
            f"dict-size-bytes {result['dict_size_bytes']:>8}: "
            f"{result['cpu_ms_per_object']:6.1f} ms CPU "
            f"({result['cpu_ratio']:.2f}x), "
            f"{result['bytes_per_object'] / 1e6:5.2f} MB ({result['size_ratio']:.2f}x)"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "object_bytes": args.size,
                "rows_per_object": tables[0].num_rows,
                "objects": args.objects,
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
