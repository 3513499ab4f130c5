"""The progress bar of a backfill on a terminal, driven by the pipeline's hooks.

:class:`ProgressState` is the plain arithmetic (objects and bytes done out of what the
last listing found, throughput, ETA, quarantined count) and is tested directly;
:class:`ProgressDisplay` draws it with rich on stderr. The display is only for a
person at a terminal: it is off when stderr is not a terminal, for runs that are not
``--once`` and with ``--no-progress`` (:func:`is_progress_wanted`). It must not log
or touch the run; hooks only record what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Column
from rich.text import Text

from .discovery import ObjectRef
from .hooks import Hooks, PassReport

__all__ = ["ProgressDisplay", "ProgressState", "is_progress_wanted"]


def is_progress_wanted(stream: TextIO, once: bool, enabled: bool = True) -> bool:
    """Whether to draw a bar: a ``--once`` run, not switched off, on a terminal."""
    return bool(enabled and once and stream.isatty())


@dataclass
class Remaining:
    """What the last listing of one table left to do."""

    objects: int = 0
    bytes: int = 0


@dataclass
class ProgressState:
    """Counts of a run as the hooks report them; ``now`` is a ``time.monotonic``.

    The total is what is done plus what the latest listing of each table found new and
    not yet done, so it stays steady across passes (done objects are never listed as
    new again) and grows when files arrive during the run.
    """

    started: float = field(default_factory=time.monotonic)
    objects_done: int = 0
    bytes_done: int = 0
    rows_done: int = 0
    quarantined: int = 0
    passes: int = 0
    remaining: dict[str, Remaining] = field(default_factory=dict)

    def listed(self, table: str, listed: int, fresh: list[ObjectRef]) -> None:
        """A listing of ``table`` found ``fresh`` new objects (``listed`` in all)."""
        self.remaining[table] = Remaining(len(fresh), sum(obj.size for obj in fresh))

    def finished(self, table: str, outcome: str, obj: ObjectRef, rows: int) -> None:
        """One object was ingested (after its commit) or quarantined."""
        self.objects_done += 1
        self.bytes_done += obj.size
        self.rows_done += rows
        if outcome == "quarantined":
            self.quarantined += 1

        left = self.remaining.setdefault(table, Remaining())
        left.objects = max(0, left.objects - 1)
        left.bytes = max(0, left.bytes - obj.size)

    def passed(self, report: PassReport) -> None:
        """A pass ended."""
        self.passes += 1

    @property
    def total_objects(self) -> int:
        """Objects done plus objects still to do."""
        return self.objects_done + sum(r.objects for r in self.remaining.values())

    @property
    def total_bytes(self) -> int:
        """Bytes done plus bytes still to do."""
        return self.bytes_done + sum(r.bytes for r in self.remaining.values())

    def bytes_per_second(self, now: float) -> float:
        """Average throughput since the start, in bytes per second."""
        elapsed = now - self.started
        return self.bytes_done / elapsed if elapsed > 0 else 0.0

    def seconds_left(self, now: float) -> float | None:
        """The time the rest should take at the average throughput; None if unknown."""
        left = self.total_bytes - self.bytes_done
        if left <= 0:
            return 0.0

        rate = self.bytes_per_second(now)
        return left / rate if rate > 0 else None

    def describe(self, now: float) -> dict[str, str]:
        """The bar's texts: objects, bytes, rate, ETA and quarantined count.

        Before the first listing is in, the objects text says so and the rest is
        blank.
        """
        if not self.remaining:
            return dict.fromkeys(("bytes", "rate", "eta", "quarantined"), "") | {
                "objects": "listing sources..."
            }

        eta = self.seconds_left(now)
        done, total = format_bytes(self.bytes_done), format_bytes(self.total_bytes)
        return {
            "objects": f"{self.objects_done:,}/{self.total_objects:,} objects",
            "bytes": f"{done}/{total}",
            "rate": f"{format_bytes(self.bytes_per_second(now))}/s",
            "eta": "ETA " + ("-:--:--" if eta is None else format_seconds(eta)),
            "quarantined": f"{self.quarantined:,} quarantined",
        }

    def hooks(self) -> Hooks:
        """Pipeline hooks that feed this state."""
        return Hooks(
            on_listed=self.listed, on_object=self.finished, on_pass=self.passed
        )


def format_bytes(count: float) -> str:
    """A byte count in decimal units: ``512 B``, ``12.3 MB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"

        count /= 1000

    raise AssertionError("unreachable: TB ends the loop")


def format_seconds(seconds: float) -> str:
    """A duration as ``H:MM:SS``."""
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class StateColumn(ProgressColumn):
    """A column that shows one text of :meth:`ProgressState.describe` when drawn."""

    def __init__(
        self,
        state: ProgressState,
        name: str,
        style: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(table_column=Column(no_wrap=True))
        self.state = state
        self.name = name
        self.style = style
        self.clock = clock

    def render(self, task: Task) -> Text:
        """The current text, read from the state at drawing time."""
        return Text(self.state.describe(self.clock())[self.name], style=self.style)


class ProgressDisplay:
    """A rich progress bar on stderr for the length of a ``with`` block.

    While it is shown, rich redirects ``sys.stderr`` so that log lines (see
    ``logs.StderrHandler``) print above the bar.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.state = ProgressState()
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]ingest[/]"),
            BarColumn(),
            StateColumn(self.state, "objects"),
            StateColumn(self.state, "bytes"),
            StateColumn(self.state, "rate", "green"),
            StateColumn(self.state, "eta", "cyan"),
            StateColumn(self.state, "quarantined", "yellow"),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("ingest", total=None)

    def hooks(self) -> Hooks:
        """Hooks that update the state and move the bar."""
        state_hooks = self.state.hooks()

        def listed(table: str, listed: int, fresh: list[ObjectRef]) -> None:
            self.state.listed(table, listed, fresh)
            self.update()

        def finished(table: str, outcome: str, obj: ObjectRef, rows: int) -> None:
            self.state.finished(table, outcome, obj, rows)
            self.update()

        state_hooks.on_listed = listed
        state_hooks.on_object = finished
        return state_hooks

    def update(self) -> None:
        """Move the bar to the bytes done out of the bytes known."""
        self.progress.update(
            self.task,
            completed=self.state.bytes_done,
            total=max(self.state.total_bytes, 1),
        )

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Any:
        self.update()
        self.progress.stop()
        return None
