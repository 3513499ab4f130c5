"""Prometheus metrics: fed by a real run, scraped over HTTP from a free port."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bifrost_async.config import Settings
from bifrost_async.discovery import ObjectRef
from bifrost_async.endpoint import find_free_port
from bifrost_async.errors import ConfigError
from bifrost_async.metrics import METRICS, Metrics
from bifrost_async.runner import run

from .helpers import upload_numbers

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Fetch /metrics over HTTP and index every sample by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.anyio
async def test_metrics_scraped_after_a_real_run(
    s3: Any, bucket: str, make_settings: Callable[..., Settings]
) -> None:
    """A run's objects, bytes, rows, quarantines, commits and passes are served."""
    sizes = [upload_numbers(s3, bucket, f"m/{n}.parquet", n * 10, 10) for n in range(3)]
    s3.put_object(Bucket=bucket, Key="m/bad.parquet", Body=b"not parquet")
    settings = make_settings([f"s3://{bucket}/m/"], max_iterations=50)
    metrics = Metrics()
    port = find_free_port()

    with metrics.serve(port, "127.0.0.1"):
        result = await run(settings, metrics.hooks())
        samples = await anyio.to_thread.run_sync(scrape, port)

    table = (("table", "ns.events"),)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="m/")["Contents"]
    good_bytes = sum(o["Size"] for o in listed if o["Key"] != "m/bad.parquet")
    assert sum(sizes) == 30
    assert samples[("bifrost_objects_ingested_total", table)] == 3
    assert samples[("bifrost_rows_ingested_total", table)] == 30
    assert samples[("bifrost_bytes_ingested_total", table)] == good_bytes
    assert samples[("bifrost_objects_quarantined_total", table)] == 1
    assert (
        samples[("bifrost_commit_duration_seconds_count", table)]
        == result.report.commits
    )
    assert samples[("bifrost_backlog_objects", table)] == 0
    assert samples[("bifrost_backlog_bytes", table)] == 0
    assert samples[("bifrost_passes_total", ())] == result.passes
    assert samples[("bifrost_rss_bytes", ())] > 0
    assert samples[("bifrost_bytes_in_flight", ())] == 0
    assert samples[("bifrost_budget_remaining", (("limit", "iterations"),))] == (
        50 - result.passes
    )
    assert samples[("bifrost_retries_total", (("kind", "fetch"),))] == 0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_metrics_every_documented_name_is_exposed() -> None:
    """Each name in METRICS (and so in the README) is what the registry exposes."""
    metrics = Metrics()
    metrics.retried("fetch")
    metrics.listed("ns.t", 1, [ObjectRef("b", "k", 1, "e")])
    metrics.committed("ns.t", 0.1, 1)
    metrics.finished("ns.t", "ingested", ObjectRef("b", "k", 1, "e"), 1)
    metrics.finished("ns.t", "quarantined", ObjectRef("b", "q", 1, "e"), 0)
    metrics.passes.inc()

    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in metrics.registry.collect()
    }

    assert {name for name, *_ in METRICS} == exposed


def test_metrics_backlog_and_retries_follow_the_hooks() -> None:
    """The backlog is the latest listing less what is done; retries count by kind."""
    metrics = Metrics()
    hooks = metrics.hooks()
    objs = [ObjectRef("b", f"k{n}", 100, "e") for n in range(3)]
    assert hooks.on_listed and hooks.on_object and hooks.on_retry

    hooks.on_listed("ns.t", 5, objs)
    hooks.on_object("ns.t", "ingested", objs[0], 7)
    hooks.on_object("ns.t", "quarantined", objs[1], 0)
    for kind in ("fetch", "fetch", "commit"):
        hooks.on_retry(kind)

    value = metrics.registry.get_sample_value
    assert value("bifrost_backlog_objects", {"table": "ns.t"}) == 1
    assert value("bifrost_backlog_bytes", {"table": "ns.t"}) == 100
    assert value("bifrost_retries_total", {"kind": "fetch"}) == 2
    assert value("bifrost_retries_total", {"kind": "commit"}) == 1
    assert value("bifrost_rows_ingested_total", {"table": "ns.t"}) == 7


def test_metrics_port_in_use_is_a_configuration_error() -> None:
    """A port that cannot be bound raises ConfigError naming --metrics-port."""
    port = find_free_port()
    with Metrics().serve(port, "127.0.0.1"):
        with pytest.raises(ConfigError, match="--metrics-port"):
            with Metrics().serve(port, "127.0.0.1"):
                pass


def test_metrics_port_serves_a_running_sync(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """run --metrics-port serves live metrics while it syncs; SIGTERM ends it with 0."""
    for n in range(2):
        upload_numbers(s3, bucket, f"live/{n}.parquet", n * 10, 10)

    port = find_free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bifrost_async",
            "run",
            "--source",
            f"s3://{bucket}/live/",
            "--table",
            "ns.live",
            "--state",
            str(tmp_path / "state.db"),
            "--s3-endpoint",
            moto_endpoint,
            "--poll-interval",
            "0.2",
            "--batch-max-age",
            "0.2",
            "--metrics-port",
            str(port),
            "--metrics-addr",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=catalog_env,
        cwd=tmp_path,
    )
    live = (("table", "ns.live"),)
    try:
        samples = wait_for_samples(
            port,
            lambda got: (
                got.get(("bifrost_objects_ingested_total", live)) == 2
                and got.get(("bifrost_passes_total", ()), 0) >= 1
            ),
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert samples[("bifrost_rows_ingested_total", live)] == 20
    assert samples[("bifrost_backlog_objects", live)] == 0
    assert ("bifrost_bytes_in_flight", ()) in samples
    assert "metrics.serving addr=127.0.0.1 port=" in stderr


def wait_for_samples(
    port: int, ready: Callable[[Samples], bool], timeout: float = 120
) -> Samples:
    """Scrape until ``ready`` says yes; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            samples = scrape(port)
            if ready(samples):
                return samples
        except OSError:
            pass  # not listening yet

        if time.monotonic() > deadline:
            pytest.fail(f"the metrics on port {port} never became ready")

        time.sleep(0.2)
