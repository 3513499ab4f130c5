"""What a pass reports, and the hooks that watch a run (progress, metrics).

The ingester fills a :class:`PassReport` per pass (and one per table inside it) and
calls each :class:`Hooks` callback as things happen. Plain data and plain callables:
nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .discovery import ObjectRef

if TYPE_CHECKING:
    from .pipeline import Ingester

__all__ = ["Hooks", "PassReport", "combine_hooks"]


@dataclass
class PassReport:
    """What one pass did."""

    listed: int = 0
    new: int = 0
    ingested: int = 0
    quarantined: int = 0
    failed: int = 0
    rows: int = 0
    bytes: int = 0
    fetched: int = 0
    commits: int = 0
    first_failure: str | None = None
    tables: dict[str, PassReport] = field(default_factory=dict)

    def add(self, other: PassReport) -> None:
        """Add another report's counts (and its per-table counts) to this one."""
        for name in (
            "listed",
            "new",
            "ingested",
            "quarantined",
            "failed",
            "rows",
            "bytes",
            "fetched",
            "commits",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))

        self.first_failure = self.first_failure or other.first_failure
        for table, counts in other.tables.items():
            self.tables.setdefault(table, PassReport()).add(counts)


@dataclass
class Hooks:
    """Optional callbacks for progress and metrics; every one may be left out.

    ``on_start(ingester)`` once the ingester exists; ``on_listed(table, listed, new)``
    after selection, with the count listed and the new objects; ``on_object(table,
    outcome, obj, rows)`` per object ``"ingested"`` (after its commit) or
    ``"quarantined"``; ``on_commit(table, seconds, rows)`` per batch; ``on_retry(kind)``
    per scheduled retry (also from worker threads); ``on_pass(report)`` per pass.
    Callbacks run on the event loop (``on_retry`` also in threads) and must not block.
    """

    on_start: Callable[[Ingester], None] | None = None
    on_listed: Callable[[str, int, list[ObjectRef]], None] | None = None
    on_object: Callable[[str, str, ObjectRef, int], None] | None = None
    on_commit: Callable[[str, float, int], None] | None = None
    on_retry: Callable[[str], None] | None = None
    on_pass: Callable[[PassReport], None] | None = None


def combine_hooks(*many: Hooks) -> Hooks:
    """One set of hooks that calls each of ``many`` in turn."""
    combined = Hooks()
    for name in (
        "on_start",
        "on_listed",
        "on_object",
        "on_commit",
        "on_retry",
        "on_pass",
    ):
        calls = [getattr(h, name) for h in many if getattr(h, name) is not None]
        if calls:
            setattr(combined, name, chain_calls(calls))

    return combined


def chain_calls(calls: list[Callable[..., None]]) -> Callable[..., None]:
    """A callable that calls each of ``calls`` with the same arguments."""

    def call_all(*args: Any) -> None:
        for call in calls:
            call(*args)

    return call_all
