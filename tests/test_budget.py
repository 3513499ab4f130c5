"""Budgets: the arithmetic, and each limit ending a real command run with code 0."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bifrost_async.budget import PRESSURE_THRESHOLD, Budget, Limits, download_limit
from bifrost_async.ledger import Ledger

from .helpers import upload_numbers

MB = 1000**2


def test_budget_no_limits_never_stops() -> None:
    """Without limits nothing is ever exceeded."""
    budget = Budget(Limits())
    budget.passes, budget.bytes_downloaded, budget.objects_taken = 10**6, 10**15, 9

    assert budget.exceeded(rss=10**12) is None


@pytest.mark.parametrize(
    ("limits", "used", "expected"),
    [
        (Limits(max_iterations=3), {"passes": 2}, None),
        (Limits(max_iterations=3), {"passes": 3}, "max-iterations"),
        (Limits(max_bytes=100), {"bytes_downloaded": 99}, None),
        (Limits(max_bytes=100), {"bytes_downloaded": 100}, "max-bytes"),
        (Limits(max_rss=50 * MB), {"objects_taken": 1}, None),
        (Limits(max_rss=40 * MB), {"objects_taken": 1}, "max-rss"),
        (
            Limits(max_iterations=1, max_bytes=1),
            {"passes": 1, "bytes_downloaded": 1},
            "max-iterations",
        ),
    ],
    ids=[
        "passes-below",
        "passes-at",
        "bytes-below",
        "bytes-at",
        "rss-below",
        "rss-at",
        "first-named-wins",
    ],
)
def test_budget_exceeded_names_the_limit(
    limits: Limits, used: dict[str, int], expected: str | None
) -> None:
    """A limit counts when it is reached, not before; the first one is named."""
    budget = Budget(limits)
    for name, value in used.items():
        setattr(budget, name, value)

    assert budget.exceeded(rss=45 * MB) == expected


def test_budget_memory_limit_waits_for_the_first_object() -> None:
    """A memory limit below the idle RSS still lets the run take one object."""
    budget = Budget(Limits(max_rss=1))

    assert budget.check(rss=10**9) is None
    budget.add_bytes(10)
    assert budget.check(rss=10**9) == "max-rss"


def test_budget_uptime_limit_counts_wall_time() -> None:
    """The uptime limit is reached once its seconds have passed since the start."""
    budget = Budget(Limits(max_uptime=5.0))
    assert budget.exceeded(rss=0) is None

    budget.started = time.monotonic() - 5.0
    assert budget.exceeded(rss=0) == "max-uptime"


def test_budget_first_stop_reason_is_kept() -> None:
    """A later stop request does not replace the reason that ended the run."""
    budget = Budget(Limits(max_iterations=1))
    budget.add_pass()
    budget.check(rss=0)
    budget.request_stop("signal SIGTERM")

    assert (budget.stop_reason, budget.stop_event.is_set()) == ("max-iterations", True)


@pytest.mark.parametrize(
    ("used", "share"),
    [(0.0, 1.0), (PRESSURE_THRESHOLD, 1.0), (0.9, 0.5), (0.99, 0.1), (1.5, 0.1)],
    ids=["idle", "threshold", "half-way", "nearly-full", "over"],
)
def test_budget_download_share_falls_near_the_memory_limit(
    used: float, share: float
) -> None:
    """Full concurrency below the threshold, then falling linearly to a tenth."""
    budget = Budget(Limits(max_rss=1000 * MB))

    assert budget.download_share(int(used * 1000 * MB)) == pytest.approx(share)


def test_budget_download_share_without_memory_limit_is_full() -> None:
    """Without --max-rss the memory never throttles downloads."""
    assert Budget(Limits()).download_share(10**12) == 1.0


@pytest.mark.parametrize(
    ("concurrency", "share", "limit"),
    [(16, 1.0, 16), (16, 0.5, 8), (16, 0.1, 1), (3, 0.1, 1), (1, 1.0, 1)],
    ids=["full", "half", "tenth", "rounds-up-to-one", "single"],
)
def test_budget_download_limit_keeps_at_least_one(
    concurrency: int, share: float, limit: int
) -> None:
    """The download limit scales with the share and never drops below one."""
    assert download_limit(concurrency, share) == limit


def run_command(
    flags: list[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``bifrost-async run`` in a subprocess and return its result."""
    return subprocess.run(
        [sys.executable, "-m", "bifrost_async", "run", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def summary_line(stderr: str) -> str:
    """The run.complete line of a run's log."""
    lines = [line for line in stderr.splitlines() if "run.complete" in line]
    assert lines, stderr
    return lines[-1]


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (["--max-iterations", "2"], "max-iterations"),
        (["--max-bytes", "1"], "max-bytes"),
        (["--max-rss", "1MB"], "max-rss"),
        (["--max-uptime", "2s"], "max-uptime"),
    ],
    ids=["max-iterations", "max-bytes", "max-rss", "max-uptime"],
)
def test_budget_limit_ends_a_run_with_code_0(
    flags: list[str],
    reason: str,
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Any,
    tmp_path: Path,
) -> None:
    """Each limit ends the run with code 0 after its commit; the summary names it."""
    for n in range(4):
        upload_numbers(s3, bucket, f"in/part-{n}.parquet", n * 10, 10)

    state = f"sqlite:///{tmp_path / 'state.db'}"
    base = [
        "--source",
        f"s3://{bucket}/in/",
        "--table",
        "ns.events",
        "--state",
        state,
        "--s3-endpoint",
        moto_endpoint,
        "--poll-interval",
        "0.2",
        "--batch-max-age",
        "0.5",
        "--concurrency",
        "1",
    ]

    result = run_command(base + flags, catalog_env)

    assert result.returncode == 0, result.stderr
    assert f"stopped_by={reason}" in summary_line(result.stderr)
    status = Ledger(state).status()
    assert status["in_flight"] == 0
    assert status["ingested"] >= 1
    ids = load_table().scan().to_arrow().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == status["rows"]
    if reason in ("max-bytes", "max-rss"):
        assert status["ingested"] == 1, "the limit stops new work after one object"
