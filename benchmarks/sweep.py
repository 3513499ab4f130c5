"""The throughput sweep: bifrost-async at several concurrencies against three baselines.

One command::

    .venv/bin/python benchmarks/sweep.py                 # 100 files x 4 MB, 30 ms
    .venv/bin/python benchmarks/sweep.py --files 20 --size 1MB --concurrency 1,16

It starts a moto S3 server process, uploads the dataset (``dataset.py``), puts a
latency proxy (:class:`bifrost_async.faultproxy.FaultProxy`, default 30 ms before each
response) in front of it, and measures, each in a process of its own and each into a
fresh SQLite catalog, ledger and warehouse:

- ``seed``: sequential get_object, polars read, one pyiceberg append per file;
- ``daft``: daft reads the objects from S3 and writes the Iceberg table (skipped with a
  message where daft is not installed);
- ``local``: the same files read from local disk and written as one Parquet file, with
  no network and no catalog (the local limit);
- ``ingester``: bifrost-async (``run`` with ``--once`` semantics) at every concurrency,
  rewriting every object, with ``--zero-copy`` and with ``--zero-copy in-place``.

Every figure is also given as a ratio to each baseline. Results go to
``benchmarks/results/throughput.json``, a Markdown table to ``throughput.md`` and a
chart to ``throughput.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bifrost_async.config import parse_size  # noqa: E402
from bifrost_async.endpoint import run_moto_server  # noqa: E402
from bifrost_async.faultproxy import FaultProxy  # noqa: E402
from dataset import (  # noqa: E402  # benchmarks/ is a folder of scripts
    select_files,
    set_dummy_credentials,
    upload,
    write_local,
)

BASELINES = ("seed", "daft", "local")
# Where each ingester mode's results go in the JSON.
SERIES = {
    "rewrite": "ingester",
    "zero-copy": "ingester_zero_copy",
    "in-place": "ingester_in_place",
}
# The zero_copy setting of each ingester mode.
ZERO_COPY = {"rewrite": "off", "zero-copy": "copy", "in-place": "in-place"}
SERIES_LABELS = (
    ("ingester", "bifrost-async"),
    ("ingester_zero_copy", "bifrost-async --zero-copy"),
    ("ingester_in_place", "bifrost-async --zero-copy in-place"),
)
LABELS = {
    "seed": "seed-style loop",
    "daft": "daft",
    "local": "local limit (disk, no catalog)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The sweep's flags; every size and count has a modest default."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=100, help="files to generate")
    parser.add_argument("--size", default="4MB", help="size of each generated file")
    parser.add_argument("--real", metavar="PATTERN", help="use ../shared/data files")
    parser.add_argument(
        "--latency", type=float, default=0.03, help="seconds added before each response"
    )
    parser.add_argument(
        "--concurrency", default="1,2,4,8,16,32,64", help="comma-separated levels"
    )
    parser.add_argument(
        "--modes",
        default="rewrite,zero-copy,in-place",
        help="ingester modes: rewrite (decode and encode), zero-copy (--zero-copy) "
        "and in-place (--zero-copy in-place)",
    )
    parser.add_argument("--batch-max-files", type=int, default=200)
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help="which baselines to run"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--no-chart", action="store_true")
    return parser.parse_args(argv)


def measure(spec: dict[str, Any], workroot: Path) -> dict[str, Any]:
    """Run one contender once, in a fresh process and a fresh working folder."""
    workdir = workroot / f"{spec['kind']}-{spec.get('concurrency', 0)}"
    spec = dict(spec, workdir=str(workdir))
    completed = subprocess.run(
        [sys.executable, str(HERE / "measure.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"{spec['kind']} failed ({completed.returncode}):\n"
            f"{completed.stderr[-3000:]}"
        )

    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median time."""
    ordered = sorted(runs, key=lambda run: run["seconds"])
    return ordered[len(ordered) // 2]


def figures(run: dict[str, Any], objects: int, size: int, rows: int) -> dict[str, Any]:
    """Throughput figures of one run over ``objects`` files of ``size`` bytes in all."""
    if run["rows"] != rows:
        raise RuntimeError(f"a run committed {run['rows']} rows, expected {rows}")

    seconds = run["seconds"]
    return {
        "seconds": round(seconds, 3),
        "mb_per_s": round(size / 1e6 / seconds, 2),
        "rows_per_s": round(rows / seconds),
        "objects_per_s": round(objects / seconds, 2),
        "peak_rss_mb": round(run["peak_rss_mb"], 1),
        "cpu_seconds": round(run["cpu_seconds"], 2),
        "cpu_s_per_gb": round(run["cpu_seconds"] / (size / 1e9), 2),
    }


def ratios(entry: dict[str, Any], baselines: dict[str, Any]) -> dict[str, float]:
    """MB/s of ``entry`` as a multiple of each baseline that ran."""
    return {
        name: round(entry["mb_per_s"] / base["mb_per_s"], 2)
        for name, base in baselines.items()
        if "mb_per_s" in base
    }


def is_daft_installed() -> bool:
    """Whether daft can be imported in this interpreter."""
    completed = subprocess.run(
        [sys.executable, "-c", "import daft"], capture_output=True, text=True
    )
    return completed.returncode == 0


def run_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Set up the endpoint, proxy and data, measure everything, return the results."""
    set_dummy_credentials()
    levels = [int(level) for level in args.concurrency.split(",") if level]
    wanted = [name for name in args.baselines.split(",") if name]
    files = select_files(args.files, parse_size(args.size, "--size"), args.real)
    dataset = {
        "objects": len(files),
        "bytes": sum(len(f.data) for f in files),
        "rows": sum(f.rows for f in files),
    }
    print(
        f"dataset: {dataset['objects']} files, {dataset['bytes'] / 1e6:.1f} MB, "
        f"{dataset['rows']:,} rows, {args.latency * 1000:.0f} ms per request",
        flush=True,
    )
    workroot = Path(tempfile.mkdtemp(prefix="bifrost-bench-"))
    try:
        write_local(workroot / "local", files)
        with run_moto_server() as endpoint:
            upload(endpoint, "bench", "data/", files)
            del files
            with FaultProxy(endpoint, delay=args.latency) as proxy:
                base = {
                    "endpoint": proxy.url,
                    "bucket": "bench",
                    "prefix": "data/",
                    "local": str(workroot / "local"),
                    "batch_max_files": args.batch_max_files,
                }
                results = measure_all(base, wanted, levels, dataset, args, workroot)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)

    results["config"] = {
        "files": dataset["objects"],
        "bytes": dataset["bytes"],
        "rows": dataset["rows"],
        "file_size": args.size if args.real is None else None,
        "real": args.real,
        "latency_ms": args.latency * 1000,
        "batch_max_files": args.batch_max_files,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return results


def measure_all(
    base: dict[str, Any],
    wanted: list[str],
    levels: list[int],
    dataset: dict[str, int],
    args: argparse.Namespace,
    workroot: Path,
) -> dict[str, Any]:
    """Measure the baselines and the ingester at every level, with ratios.

    With ``--repeat N`` every contender runs once per round, N rounds, every other
    round in reverse order, and the median run counts: the machine's load drifts,
    and this way each contender meets the same drift.
    """
    jobs: dict[str, dict[str, Any]] = {}
    skipped: dict[str, Any] = {}
    for name in wanted:
        if name == "daft" and not is_daft_installed():
            print("daft: skipped, not installed (pip install daft)", flush=True)
            skipped[name] = {"skipped": "daft is not installed"}
        else:
            jobs[name] = dict(base, kind=name)

    modes = [mode for mode in args.modes.split(",") if mode]
    for mode in modes:
        for level in levels:
            jobs[f"{mode}/{level}"] = dict(
                base, kind="ingester", concurrency=level, zero_copy=ZERO_COPY[mode]
            )

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in jobs}
    for round_number in range(args.repeat):
        order = list(jobs) if round_number % 2 == 0 else list(reversed(jobs))
        for name in [name for name in order if name not in skipped]:
            try:
                runs[name].append(measure(jobs[name], workroot))
                entry = summarize(runs[name][-1], dataset)
            except RuntimeError as exc:
                if name not in wanted:
                    raise  # the ingester itself failed: that is the news

                # A baseline that cannot take this data (the seed loop on a null-typed
                # column, say) is reported as failed; the sweep goes on.
                reason = str(exc).strip().splitlines()[-1]
                print(f"{name}: failed: {reason}", flush=True)
                skipped[name] = {"failed": reason}
                continue

            print(f"round {round_number + 1} {name}: {describe(entry)}", flush=True)

    def median(name: str) -> dict[str, Any]:
        return summarize(median_run(runs[name]), dataset)

    baselines = {name: median(name) for name in wanted if name not in skipped}
    baselines.update(skipped)
    results: dict[str, Any] = {"baselines": baselines}
    for mode in modes:
        series = []
        for level in levels:
            entry = {"concurrency": level, **median(f"{mode}/{level}")}
            entry["ratio_to"] = ratios(entry, baselines)
            series.append(entry)
            print(f"median {mode} c={level}: {describe(entry)}", flush=True)

        results[SERIES[mode]] = series
        results["best" + SERIES[mode].removeprefix("ingester")] = max(
            series, key=lambda entry: entry["mb_per_s"]
        )

    return results


def summarize(run: dict[str, Any], dataset: dict[str, int]) -> dict[str, Any]:
    """The figures of one run over the whole dataset."""
    return figures(run, dataset["objects"], dataset["bytes"], dataset["rows"])


def describe(entry: dict[str, Any]) -> str:
    """One line of figures, with ratios where there are some."""
    line = (
        f"{entry['mb_per_s']:.1f} MB/s, {entry['rows_per_s']:,} rows/s, "
        f"{entry['objects_per_s']:.1f} objects/s, "
        f"{entry['peak_rss_mb']:.0f} MB peak RSS, "
        f"{entry['cpu_s_per_gb']:.1f} CPU s/GB"
    )
    if entry.get("ratio_to"):
        shares = ", ".join(f"{v:.2f}x {k}" for k, v in entry["ratio_to"].items())
        line += f" ({shares})"

    return line


def draw_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput against concurrency, with the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=110)
    levels: list[int] = []
    colors = ("tab:blue", "tab:red", "tab:purple")
    for (key, label), color in zip(SERIES_LABELS, colors, strict=True):
        if key in results:
            levels = [entry["concurrency"] for entry in results[key]]
            speeds = [entry["mb_per_s"] for entry in results[key]]
            axes.plot(levels, speeds, marker="o", linewidth=2, label=label, color=color)

    styles = {"seed": ":", "daft": "--", "local": "-."}
    for name, base in results["baselines"].items():
        if "mb_per_s" in base:
            axes.axhline(
                base["mb_per_s"],
                linestyle=styles.get(name, "--"),
                color={"seed": "grey", "daft": "tab:orange", "local": "tab:green"}.get(
                    name, "black"
                ),
                label=f"{LABELS.get(name, name)}: {base['mb_per_s']:.1f} MB/s",
            )

    config = results["config"]
    axes.set_xscale("log", base=2)
    axes.set_xticks(levels, [str(level) for level in levels])
    axes.set_xlabel("concurrency (downloads in flight)")
    axes.set_ylabel("MB/s of Parquet in")
    axes.set_ylim(bottom=0)
    axes.set_title(
        f"{config['files']} files, {config['bytes'] / 1e6:.0f} MB, "
        f"{config['latency_ms']:.0f} ms per request, {config['cpus']} cores"
    )
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: every contender, its figures and its ratios."""
    names = [name for name, base in results["baselines"].items() if "mb_per_s" in base]
    header = (
        "| contender | MB/s | rows/s | objects/s | peak RSS MB | CPU s/GB | "
        + " | ".join(f"x {name}" for name in names)
        + " |"
    )
    lines = [header, "|" + "---|" * (6 + len(names))]

    def row(label: str, entry: dict[str, Any]) -> None:
        shares = " | ".join(
            f"{entry['mb_per_s'] / results['baselines'][name]['mb_per_s']:.2f}"
            for name in names
        )
        lines.append(
            f"| {label} | {entry['mb_per_s']:.1f} | {entry['rows_per_s']:,} | "
            f"{entry['objects_per_s']:.1f} | {entry['peak_rss_mb']:.0f} | "
            f"{entry['cpu_s_per_gb']:.1f} | {shares} |"
        )

    for name in names:
        row(LABELS[name], results["baselines"][name])

    for key, label in SERIES_LABELS:
        for entry in results.get(key, []):
            row(f"{label}, concurrency {entry['concurrency']}", entry)

    for name, base in results["baselines"].items():
        if "mb_per_s" not in base:
            why = base.get("failed") or base.get("skipped")
            lines.append(f"\n{LABELS[name]}: {why}")

    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the sweep and write the JSON results and the chart."""
    args = parse_args(argv)
    results = run_sweep(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "throughput.md").write_text(markdown_table(results))
    if not args.no_chart:
        draw_chart(results, args.out / "throughput.png")

    print(f"results: {args.out / 'throughput.json'}", flush=True)


if __name__ == "__main__":
    main()
