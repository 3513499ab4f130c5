"""Prometheus metrics of a run, fed by the pipeline's hooks and served over HTTP.

Counters and the commit histogram are updated by the hooks as things happen; the
gauges of the moment (bytes and downloads in flight, resident memory, what is left of
each budget) are read from the running ingester when Prometheus scrapes. Every metric
lives in the :class:`Metrics` object's own registry, so several runs in one process
(tests) never share counts. The names and labels are listed in the README and in
:data:`METRICS`; renaming one breaks dashboards, so don't.

This module must not log per object or change what the run does.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from .budget import current_rss
from .discovery import ObjectRef
from .errors import ConfigError
from .hooks import Hooks, PassReport

if TYPE_CHECKING:
    from .pipeline import Ingester

__all__ = ["METRICS", "Metrics"]

logger = logging.getLogger(__name__)

# Exposed name, type, labels, meaning: the README's table is made from the same facts.
METRICS = (
    ("bifrost_objects_ingested_total", "counter", "table", "objects committed"),
    ("bifrost_bytes_ingested_total", "counter", "table", "Parquet bytes committed"),
    ("bifrost_rows_ingested_total", "counter", "table", "rows committed"),
    ("bifrost_objects_quarantined_total", "counter", "table", "objects quarantined"),
    ("bifrost_retries_total", "counter", "kind", "scheduled retries"),
    ("bifrost_commit_duration_seconds", "histogram", "table", "commit latency"),
    ("bifrost_backlog_objects", "gauge", "table", "listed as new, not yet done"),
    ("bifrost_backlog_bytes", "gauge", "table", "bytes of the backlog"),
    ("bifrost_passes_total", "counter", "", "passes finished"),
    ("bifrost_bytes_in_flight", "gauge", "", "bytes reserved by downloads"),
    ("bifrost_downloads_in_flight", "gauge", "", "downloads running"),
    ("bifrost_rss_bytes", "gauge", "", "resident memory of the process"),
    ("bifrost_budget_remaining", "gauge", "limit", "what is left of each limit set"),
)

RETRY_KINDS = ("list", "fetch", "commit", "catalog")
COMMIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The metrics of one run; :meth:`hooks` feeds them, :meth:`serve` exposes them."""

    def __init__(self) -> None:
        # The *_created series only double what a scraper already knows; this switch
        # is process-wide, which suits the command (one run per process).
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry()
        self.ingester: Ingester | None = None
        self.backlog: dict[str, tuple[int, int]] = {}
        registry = self.registry
        self.objects = Counter(
            "bifrost_objects_ingested",
            "Objects committed to the table.",
            ["table"],
            registry=registry,
        )
        self.bytes = Counter(
            "bifrost_bytes_ingested",
            "Parquet bytes of the objects committed.",
            ["table"],
            registry=registry,
        )
        self.rows = Counter(
            "bifrost_rows_ingested",
            "Rows committed to the table.",
            ["table"],
            registry=registry,
        )
        self.quarantined = Counter(
            "bifrost_objects_quarantined",
            "Objects quarantined (bad input).",
            ["table"],
            registry=registry,
        )
        self.retries = Counter(
            "bifrost_retries",
            "Retries scheduled, by kind (list, fetch, commit, catalog).",
            ["kind"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "bifrost_commit_duration_seconds",
            "Seconds from a batch's pending record to its confirmation.",
            ["table"],
            buckets=COMMIT_BUCKETS,
            registry=registry,
        )
        self.backlog_objects = Gauge(
            "bifrost_backlog_objects",
            "Objects the latest listing found new that are not yet done.",
            ["table"],
            registry=registry,
        )
        self.backlog_bytes = Gauge(
            "bifrost_backlog_bytes",
            "Bytes of the backlog objects.",
            ["table"],
            registry=registry,
        )
        self.passes = Counter("bifrost_passes", "Passes finished.", registry=registry)
        registry.register(LiveCollector(self))

    def start(self, ingester: Ingester) -> None:
        """Remember the running ingester and show every table's series at zero.

        Series that exist from the start let ``rate()`` and alerts see the first
        increase.
        """
        self.ingester = ingester
        for route in ingester.settings.routes:
            for counter in (self.objects, self.bytes, self.rows, self.quarantined):
                counter.labels(route.table)

            self.commit_seconds.labels(route.table)
            self.set_backlog(route.table, *self.backlog.get(route.table, (0, 0)))

        for kind in RETRY_KINDS:
            self.retries.labels(kind)

    def listed(self, table: str, listed: int, fresh: list[ObjectRef]) -> None:
        """A listing found ``fresh`` new objects: that is the table's backlog now."""
        self.set_backlog(table, len(fresh), sum(obj.size for obj in fresh))

    def finished(self, table: str, outcome: str, obj: ObjectRef, rows: int) -> None:
        """Count one object ingested or quarantined and take it off the backlog."""
        if outcome == "quarantined":
            self.quarantined.labels(table).inc()
        else:
            self.objects.labels(table).inc()
            self.bytes.labels(table).inc(obj.size)
            self.rows.labels(table).inc(rows)

        objects, size = self.backlog.get(table, (0, 0))
        self.set_backlog(table, max(0, objects - 1), max(0, size - obj.size))

    def set_backlog(self, table: str, objects: int, size: int) -> None:
        """Set both backlog gauges of a table."""
        self.backlog[table] = (objects, size)
        self.backlog_objects.labels(table).set(objects)
        self.backlog_bytes.labels(table).set(size)

    def committed(self, table: str, seconds: float, rows: int) -> None:
        """Observe one commit's latency."""
        self.commit_seconds.labels(table).observe(seconds)

    def retried(self, kind: str) -> None:
        """Count one scheduled retry (called from worker threads too)."""
        self.retries.labels(kind).inc()

    def passed(self, report: PassReport) -> None:
        """Count a finished pass."""
        self.passes.inc()

    def hooks(self) -> Hooks:
        """Pipeline hooks that feed these metrics."""
        return Hooks(
            on_start=self.start,
            on_listed=self.listed,
            on_object=self.finished,
            on_commit=self.committed,
            on_retry=self.retried,
            on_pass=self.passed,
        )

    @contextlib.contextmanager
    def serve(self, port: int, addr: str = "0.0.0.0") -> Iterator[int]:
        """Serve ``/metrics`` on ``addr:port`` in a thread until the block ends.

        Yields the port. A port that cannot be bound is a :class:`ConfigError`.
        """
        try:
            server, thread = start_http_server(port, addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port: cannot listen on {addr}:{port} ({exc}); choose "
                "another port"
            ) from exc

        logger.info("metrics.serving addr=%s port=%d", addr, port)
        try:
            yield port
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


class LiveCollector(Collector):
    """Gauges read from the running ingester when Prometheus scrapes."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """Bytes and downloads in flight, RSS and each budget's remainder."""
        ingester = self.metrics.ingester
        rss = current_rss()
        yield gauge(
            "bifrost_bytes_in_flight",
            "Bytes reserved by downloads not yet done.",
            ingester.bytes_in_flight.used if ingester else 0,
        )
        yield gauge(
            "bifrost_downloads_in_flight",
            "Downloads running now.",
            ingester.downloads_in_flight if ingester else 0,
        )
        yield gauge("bifrost_rss_bytes", "Resident memory of this process.", rss)
        remaining = GaugeMetricFamily(
            "bifrost_budget_remaining",
            "What is left of each limit that is set (iterations, bytes, "
            "uptime_seconds, rss_bytes).",
            labels=["limit"],
        )
        if ingester is not None:
            for limit, value in budget_remaining(ingester, rss).items():
                remaining.add_metric([limit], value)

        yield remaining


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    """A single-sample gauge."""
    return GaugeMetricFamily(name, documentation, value=value)


def budget_remaining(ingester: Ingester, rss: int) -> dict[str, float]:
    """What is left of each limit the run has (limits not set are left out)."""
    left = ingester.budget.remaining()
    values = {
        "iterations": left["iterations"],
        "bytes": left["bytes"],
        "uptime_seconds": left["uptime"],
    }
    max_rss = ingester.budget.limits.max_rss
    if max_rss is not None:
        values["rss_bytes"] = max_rss - rss

    return {
        limit: max(0.0, value) for limit, value in values.items() if value is not None
    }
