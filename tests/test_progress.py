"""The progress bar: its arithmetic from the hooks, its drawing, and when it shows."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
from rich.console import Console

from bifrost_async.discovery import ObjectRef
from bifrost_async.hooks import PassReport
from bifrost_async.progress import ProgressDisplay, ProgressState, is_progress_wanted

from .helpers import upload_numbers


def ref(name: str, size: int) -> ObjectRef:
    """An object of the given size in bucket ``b``."""
    return ObjectRef("b", f"p/{name}.parquet", size, "e")


def test_progress_state_counts_done_out_of_listed() -> None:
    """Objects and bytes done count out of the listing; quarantined ones are counted."""
    state = ProgressState(started=0.0)
    a, b, c = ref("a", 100), ref("b", 200), ref("c", 300)

    state.listed("ns.t", 5, [a, b, c])
    state.finished("ns.t", "ingested", a, 10)
    state.finished("ns.t", "quarantined", b, 0)

    assert (state.objects_done, state.total_objects) == (2, 3)
    assert (state.bytes_done, state.total_bytes) == (300, 600)
    assert (state.rows_done, state.quarantined) == (10, 1)
    assert state.describe(10.0) == {
        "objects": "2/3 objects",
        "bytes": "300 B/600 B",
        "rate": "30 B/s",
        "eta": "ETA 0:00:10",
        "quarantined": "1 quarantined",
    }


def test_progress_state_says_listing_before_the_first_listing() -> None:
    """Until a listing is in, the bar says it lists rather than showing 0/0."""
    state = ProgressState(started=0.0)

    assert state.describe(1.0)["objects"] == "listing sources..."
    assert state.describe(1.0)["eta"] == ""


def test_progress_state_total_is_steady_across_passes() -> None:
    """A later pass that lists only the leftovers keeps the total where it was."""
    state = ProgressState(started=0.0)
    a, b, c = ref("a", 100), ref("b", 200), ref("c", 300)
    state.listed("ns.t", 3, [a, b, c])
    state.finished("ns.t", "ingested", a, 1)
    state.finished("ns.t", "ingested", b, 1)
    state.passed(PassReport())

    state.listed("ns.t", 3, [c])
    state.finished("ns.t", "ingested", c, 1)

    assert (state.objects_done, state.total_objects) == (3, 3)
    assert state.seconds_left(5.0) == 0.0
    assert state.passes == 1


def test_progress_state_grows_with_new_files_and_tables() -> None:
    """Files that arrive during the run, and other tables, add to the total."""
    state = ProgressState(started=0.0)
    state.listed("ns.t", 1, [ref("a", 1_500_000)])
    state.listed("ns.u", 2, [ref("x", 2_000_000), ref("y", 3_000_000)])
    state.listed("ns.t", 2, [ref("a", 1_500_000), ref("b", 500_000)])

    assert state.total_objects == 4
    assert state.describe(1.0)["bytes"] == "0 B/7.0 MB"
    assert state.seconds_left(1.0) is None
    assert state.describe(1.0)["eta"] == "ETA -:--:--"


def test_progress_display_draws_counts_from_hooks() -> None:
    """The bar drawn on a terminal shows objects, bytes and the quarantined count."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    display = ProgressDisplay(console)
    hooks = display.hooks()
    a, b = ref("a", 1_000_000), ref("b", 2_000_000)
    assert hooks.on_listed is not None and hooks.on_object is not None

    with display:
        hooks.on_listed("ns.t", 2, [a, b])
        hooks.on_object("ns.t", "ingested", a, 5)
        hooks.on_object("ns.t", "quarantined", b, 0)

    drawn = out.getvalue()
    assert "2/2 objects" in drawn
    assert "3.0 MB/3.0 MB" in drawn
    assert "1 quarantined" in drawn


@pytest.fixture
def terminal() -> Iterator[TextIO]:
    """The writing end of a real pseudo-terminal."""
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w")
    yield stream
    stream.close()
    os.close(leader)


@pytest.mark.parametrize(
    ("on_terminal", "once", "enabled", "wanted"),
    [
        (True, True, True, True),
        (False, True, True, False),
        (True, False, True, False),
        (True, True, False, False),
    ],
    ids=["terminal", "not-a-terminal", "not-once", "no-progress"],
)
def test_progress_is_wanted_only_on_a_terminal(
    terminal: TextIO, on_terminal: bool, once: bool, enabled: bool, wanted: bool
) -> None:
    """A bar is drawn only for --once on a terminal, unless --no-progress."""
    stream = terminal if on_terminal else io.StringIO()

    assert is_progress_wanted(stream, once, enabled) is wanted


def run_on_terminal(args: list[str], env: dict[str, str], cwd: Path) -> str:
    """Run the command with stderr on a pseudo-terminal; return what it drew."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bifrost_async", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=dict(env, COLUMNS="200", TERM="xterm"),
        cwd=cwd,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break

        if not chunk:
            break

        chunks.append(chunk)

    os.close(leader)
    assert process.wait(timeout=180) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize(
    ("flags", "drawn"),
    [([], True), (["--no-progress"], False)],
    ids=["bar", "no-progress"],
)
def test_progress_run_once_on_a_terminal(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
    flags: list[str],
    drawn: bool,
) -> None:
    """run --once on a terminal draws the bar unless --no-progress; logs still show."""
    for n in range(3):
        upload_numbers(s3, bucket, f"tty/{n}.parquet", n * 10, 10)

    s3.put_object(Bucket=bucket, Key="tty/bad.parquet", Body=b"not parquet")

    output = run_on_terminal(
        [
            "run",
            "--source",
            f"s3://{bucket}/tty/",
            "--table",
            "ns.tty",
            "--once",
            "--state",
            str(tmp_path / "state.db"),
            "--s3-endpoint",
            moto_endpoint,
            "--batch-max-age",
            "0.2",
            *flags,
        ],
        catalog_env,
        tmp_path,
    )

    assert ("4/4 objects" in output) is drawn
    assert ("1 quarantined" in output) is drawn
    assert "object.quarantined" in output
    assert "run.complete objects=3 quarantined=1" in output
