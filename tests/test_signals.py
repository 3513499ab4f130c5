"""SIGTERM during a commit, outside circus: finish the commit and exit 0, or, on a
second signal, exit at once with nothing partial.

The commit is held in flight deterministically: a first run creates the table from
one object, then the test takes the SQLite catalog's write lock (``BEGIN IMMEDIATE``)
before the run under test starts, so that run's first commit waits on its catalog
update while the signal arrives, and goes on when the lock is let go.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bifrost_async.ledger import Ledger

from .helpers import upload_numbers
from .processes import (
    assert_exactly_once,
    catalog_write_lock,
    ingester_command,
    start_ingester,
    wait_for_text,
)

pytestmark = pytest.mark.slow

OBJECTS = 12
ROWS = 100


def wait_for_count(
    process: subprocess.Popen[bytes], log: Path, text: str, count: int
) -> None:
    """Wait until ``text`` appears ``count`` times in the log, or the process ends."""
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count(text) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{text!r} x{count} never came:\n{log.read_text()}")

        time.sleep(0.02)


@contextmanager
def held_commit(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], Path, list[str], str]]:
    """An ingester whose first commit waits on the catalog's lock while inside.

    The table already holds object 0 (a first run made it); the other objects wait
    for the run under test. Yields the process, its log, its command and its ledger
    URL once that run has begun its first commit; the lock is let go on leaving.
    """
    state = f"sqlite:///{tmp_path / 'state.db'}"
    command = ingester_command(
        [f"s3://{bucket}/in/"],
        "ns.events",
        state,
        moto_endpoint,
        "--batch-max-files",
        "4",
        "--batch-max-age",
        "30",
        "--concurrency",
        "4",
        "--grace-period",
        "30",
    )
    upload_numbers(s3, bucket, "in/000.parquet", 0, ROWS)
    first = start_ingester(command, catalog_env, tmp_path / "first.log")
    assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()

    for n in range(1, OBJECTS):
        upload_numbers(s3, bucket, f"in/{n:03d}.parquet", n * 1000, ROWS)

    log = tmp_path / "run.log"
    with catalog_write_lock(tmp_path / "catalog.db"):
        process = start_ingester(command, catalog_env, log)
        wait_for_count(process, log, "commit.begin", 1)
        yield process, log, command, state


def expected_ids() -> Counter[int]:
    """Every id of every uploaded object, once."""
    return Counter(i for n in range(OBJECTS) for i in range(n * 1000, n * 1000 + ROWS))


def test_sigterm_during_a_commit_finishes_it_and_exits_0(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """SIGTERM while a commit waits on the catalog: it lands, then the run ends 0."""
    with held_commit(s3, bucket, moto_endpoint, catalog_env, tmp_path) as held:
        process, log, command, state = held
        process.send_signal(signal.SIGTERM)
        wait_for_text(process, log, "budget.stop")

    code = process.wait(timeout=60)

    text = log.read_text()
    assert code == 0, text
    assert "stopped_by=signal SIGTERM" in text and "run.forced" not in text
    stop_at = text.index("budget.stop")
    assert text.count("commit.complete", stop_at) == 1, "the held commit landed"
    rows = load_table().scan().to_arrow().num_rows
    ledger = Ledger(state)
    try:
        status = ledger.status()
    finally:
        ledger.close()

    assert status["in_flight"] == 0
    assert rows == status["rows"] == status["ingested"] * ROWS == 5 * ROWS

    again = start_ingester(command, catalog_env, tmp_path / "again.log")
    assert again.wait(timeout=120) == 0
    assert_exactly_once(state, load_table(), expected_ids(), OBJECTS, "ns.events")


def test_second_sigterm_exits_at_once_without_a_partial_commit(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Two SIGTERMs while a commit waits: exit 130 at once; the next run redoes it."""
    with held_commit(s3, bucket, moto_endpoint, catalog_env, tmp_path) as held:
        process, log, command, state = held
        process.send_signal(signal.SIGTERM)
        wait_for_text(process, log, "budget.stop")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)

    assert code == 130, log.read_text()
    assert "run.forced reason=second signal" in log.read_text()
    assert load_table().scan().to_arrow().num_rows == ROWS, "only the first run's"

    again = start_ingester(command, catalog_env, tmp_path / "again.log")
    assert again.wait(timeout=120) == 0, (tmp_path / "again.log").read_text()
    assert "recover.batch" in (tmp_path / "again.log").read_text()
    assert_exactly_once(state, load_table(), expected_ids(), OBJECTS, "ns.events")


class StopRecorder:
    """Just what ``watch_signals`` asks of an ingester: a budget and a drop switch."""

    def __init__(self) -> None:
        from bifrost_async.budget import Budget, Limits

        self.budget = Budget(Limits())
        self.dropped = False

    def drop_in_flight(self) -> None:
        self.dropped = True


@pytest.mark.anyio
async def test_watch_signals_makes_a_later_signal_a_second_one() -> None:
    """After a signalled stop, the command's own handler comes back exiting 130."""
    import os

    import anyio

    from bifrost_async.runner import FORCED_EXIT, watch_signals
    from bifrost_async.signals import ExitOnSignal

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, ExitOnSignal(0))
    signal.signal(signal.SIGINT, ExitOnSignal(0))
    recorder = StopRecorder()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch_signals, recorder, 60.0)
            await anyio.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)
            with anyio.fail_after(10):
                await recorder.budget.stop_event.wait()

            group.cancel_scope.cancel()

        after = signal.getsignal(signal.SIGTERM)
        assert isinstance(after, ExitOnSignal)
        assert after.code == FORCED_EXIT
        assert recorder.dropped
        assert recorder.budget.stop_reason == "signal SIGTERM"
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
