"""Memory soak: RSS per pass of a long-lived ingester beside the seed-style loop.

Starts a moto S3 server on 127.0.0.1, then runs ``tests/memory_probe.py`` twice, each in
a process of its own: the ingester (one client, one ledger, one table handle for every
pass, Arrow's pooled memory released after each batch) and the seed-style loop (a new
S3 client every pass, one ``table.append`` per file). Before every pass new small files
are uploaded; after it the process's RSS is recorded. The figures go to
``benchmarks/results/soak_memory.json`` and the chart to ``soak_memory.png``.

Growth is the least-squares slope of RSS over the passes after the warm-up, in MB per
100 passes; the target for the ingester is under 1 MB per 100 passes.

    .venv/bin/python benchmarks/soak_memory.py --passes 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq

from bifrost_async.endpoint import run_moto_server

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TARGET_MB_PER_100 = 1.0


def parse_args() -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=1000)
    parser.add_argument("--files-per-pass", type=int, default=2)
    parser.add_argument("--rows-per-file", type=int, default=2000)
    parser.add_argument(
        "--warmup", type=float, default=0.2, help="share of passes counted as warm-up"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "soak_memory.json")
    parser.add_argument(
        "--expire-snapshots-after",
        type=float,
        default=None,
        help="seconds: the ingester expires older snapshots after each pass",
    )
    parser.add_argument(
        "--styles", default="ingester,seed", help="which loops to run (comma-separated)"
    )
    parser.add_argument(
        "--load",
        action="append",
        default=[],
        metavar="STYLE=PATH",
        help="take one loop's samples from an earlier probe or report JSON instead",
    )
    return parser.parse_args()


def load_result(spec: str) -> tuple[str, dict[str, Any]]:
    """One loop's result from ``STYLE=PATH`` (a probe's JSON or an earlier report)."""
    style, _, path = spec.partition("=")
    data = json.loads(Path(path).read_text())
    result = data if "samples" in data else data[style]
    result.setdefault("wall_seconds", None)
    return style, result


def write_small_file(path: Path, rows: int) -> None:
    """A small Parquet file of orders-like rows."""
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "customer": pa.array([f"customer-{i % 97}" for i in range(rows)]),
            "amount": pa.array([i * 0.25 for i in range(rows)], pa.float64()),
        }
    )
    pq.write_table(table, path)


def run_probe(
    style: str, endpoint: str, file: Path, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """Run one probe process to the end; return its samples and wall time."""
    bucket = f"soak-{style}-{os.getpid()}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    out = workdir / f"{style}.json"
    command = [
        sys.executable,
        "-m",
        "tests.memory_probe",
        "--style",
        style,
        "--endpoint",
        endpoint,
        "--bucket",
        bucket,
        "--file",
        str(file),
        "--passes",
        str(args.passes),
        "--files-per-pass",
        str(args.files_per_pass),
        "--workdir",
        str(workdir / style),
        "--out",
        str(out),
    ]
    if style == "ingester" and args.expire_snapshots_after is not None:
        command += ["--expire-snapshots-after", str(args.expire_snapshots_after)]

    started = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def slope_per_100(samples: list[dict[str, Any]], warmup: float) -> float:
    """Least-squares RSS growth after the warm-up, in MB per 100 passes."""
    kept = samples[int(len(samples) * warmup) :]
    if len(kept) < 2:
        return 0.0

    xs = [float(s["pass"]) for s in kept]
    ys = [s["rss"] / 1e6 for s in kept]
    mean_x = sum(xs) / len(xs)
    mean_y = sum(ys) / len(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var = sum((x - mean_x) ** 2 for x in xs)
    return cov / var * 100 if var else 0.0


def summarize(result: dict[str, Any], warmup: float) -> dict[str, Any]:
    """The figures the README quotes for one probe."""
    samples = result["samples"]
    rss = [s["rss"] / 1e6 for s in samples]
    start = int(len(samples) * warmup)
    return {
        "passes": len(samples),
        "rss_first_mb": round(rss[0], 1),
        "rss_after_warmup_mb": round(rss[start], 1),
        "rss_last_mb": round(rss[-1], 1),
        "rss_max_mb": round(max(rss), 1),
        "growth_mb_per_100_passes": round(slope_per_100(samples, warmup), 3),
        "seconds_per_pass": round(
            sum(s["seconds"] for s in samples) / max(1, len(samples)), 3
        ),
        "wall_seconds": result["wall_seconds"],
    }


def draw(results: dict[str, dict[str, Any]], path: Path, warmup: float) -> None:
    """Two charts side by side: RSS per pass of the ingester and of the seed loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    titles = {"ingester": "bifrost-async ingester", "seed": "seed-style loop"}
    for axis, style in zip(axes, ("ingester", "seed"), strict=True):
        samples = results[style]["samples"]
        summary = results[style]["summary"]
        axis.plot([s["pass"] for s in samples], [s["rss"] / 1e6 for s in samples], lw=1)
        axis.axvline(len(samples) * warmup, color="grey", ls=":", lw=1)
        axis.set_title(
            f"{titles[style]}: {summary['growth_mb_per_100_passes']:+.2f} MB/100 passes"
        )
        axis.set_xlabel("pass")
        axis.grid(alpha=0.3)

    axes[0].set_ylabel("RSS (MB)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    """Run both probes against one moto server; write the JSON and the chart."""
    args = parse_args()
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = dict(map(load_result, args.load))
    with tempfile.TemporaryDirectory() as folder, run_moto_server() as endpoint:
        workdir = Path(folder)
        file = workdir / "small.parquet"
        write_small_file(file, args.rows_per_file)
        for style in filter(None, args.styles.split(",")):
            results[style] = run_probe(style, endpoint, file, args, workdir)

    for style, result in results.items():
        result["summary"] = summarize(result, args.warmup)
        print(style, json.dumps(result["summary"]), flush=True)

    report = {
        "passes": max(len(r["samples"]) for r in results.values()),
        "files_per_pass": args.files_per_pass,
        "rows_per_file": args.rows_per_file,
        "warmup_share": args.warmup,
        "target_mb_per_100_passes": TARGET_MB_PER_100,
        **results,
    }
    args.out.write_text(json.dumps(report, indent=1))
    if {"ingester", "seed"} <= results.keys():
        draw(results, args.out.with_suffix(".png"), args.warmup)


if __name__ == "__main__":
    main()
