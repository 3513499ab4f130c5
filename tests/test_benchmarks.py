"""The benchmark scripts run end to end in their smallest configuration.

No timing is asserted: only that the sweep measures every contender, writes the
expected fields with non-zero figures, and draws its chart, so the scripts cannot rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "seconds",
    "mb_per_s",
    "rows_per_s",
    "objects_per_s",
    "peak_rss_mb",
    "cpu_seconds",
    "cpu_s_per_gb",
)


@pytest.mark.slow
def test_sweep_smallest_configuration_writes_results(tmp_path: Path) -> None:
    """Two files at concurrency 1 and 2, every mode, yield every figure and a chart."""
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "sweep.py"),
            "--files=2",
            "--size=200KB",
            "--concurrency=1,2",
            "--baselines=seed,local",
            f"--out={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((tmp_path / "throughput.json").read_text())
    assert results["config"]["files"] == 2
    assert results["config"]["rows"] > 0
    assert set(results["baselines"]) == {"seed", "local"}
    series = [
        *results["ingester"],
        *results["ingester_zero_copy"],
        *results["ingester_in_place"],
    ]
    assert [entry["concurrency"] for entry in series] == [1, 2, 1, 2, 1, 2]
    for entry in [*results["baselines"].values(), *series]:
        for name in FIGURES:
            assert entry[name] > 0, (name, entry)

    for entry in series:
        assert set(entry["ratio_to"]) == {"seed", "local"}
        assert all(ratio > 0 for ratio in entry["ratio_to"].values())

    speeds = [entry["mb_per_s"] for entry in results["ingester"]]
    assert results["best"]["mb_per_s"] == max(speeds)
    assert (tmp_path / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "throughput.md").read_text().splitlines()
    assert len(table) == 2 + 2 + 6


def test_encoding_smallest_configuration_writes_results(tmp_path: Path) -> None:
    """One small object at every dictionary limit yields its CPU and size ratios."""
    out = tmp_path / "encoding.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "encoding.py"),
            "--size=200000",
            "--objects=1",
            "--repeat=1",
            f"--out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["dict_size_bytes"] for r in results][0] == 2 * 1024**2
    assert results[0]["cpu_ratio"] == results[0]["size_ratio"] == 1.0
    assert all(
        r["cpu_ms_per_object"] > 0 and r["bytes_per_object"] > 0 for r in results
    )
