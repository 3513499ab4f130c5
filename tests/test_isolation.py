"""A file that kills the process is quarantined after restarts instead of looping."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bifrost_async.discovery import ObjectRef
from bifrost_async.errors import UnreadableFileError
from bifrost_async.isolation import (
    check_in_subprocess,
    crash_log_path,
    guard_object,
    marker_path,
)

from .helpers import numbers, parquet_bytes, upload_numbers

OBJ = ObjectRef("landing", "in/a.parquet", 10, "etag-1")
DEAD_PID = 999_999_999


def leave_marker(directory: Path, mode: str, crashed: bool) -> Path:
    """The marker a process left behind, with its crash log written or empty."""
    marker = marker_path(str(directory), OBJ)
    marker.write_text(f"{mode}\n{DEAD_PID}\n{OBJ.uri}\n")
    log = crash_log_path(str(directory), DEAD_PID)
    log.write_text("Fatal Python error: Segmentation fault\n" if crashed else "")
    return marker


def test_isolation_marker_lives_only_while_the_object_is_processed(
    tmp_path: Path,
) -> None:
    """The marker exists inside the block and is gone after it, also after an error."""
    marker = marker_path(str(tmp_path), OBJ)

    with pytest.raises(ValueError), guard_object(str(tmp_path), OBJ, b""):
        assert marker.read_text().startswith("shared\n")
        raise ValueError("the file's fault")

    assert not marker.exists()


def test_isolation_object_in_a_crashed_process_is_checked_then_processed_alone(
    tmp_path: Path,
) -> None:
    """After a crash among others, a readable file passes the check and runs alone."""
    marker = leave_marker(tmp_path, "shared", crashed=True)

    with guard_object(str(tmp_path), OBJ, parquet_bytes(numbers(0, 3))):
        assert marker.read_text().startswith("alone\n")

    assert not marker.exists()


def test_isolation_object_that_crashed_alone_is_refused_unread(tmp_path: Path) -> None:
    """An object that ended a process while processed alone is refused unread."""
    leave_marker(tmp_path, "alone", crashed=True)

    with (
        pytest.raises(UnreadableFileError, match="processing it alone ended"),
        guard_object(str(tmp_path), OBJ, b"unused"),
    ):
        pytest.fail("the block must not run")

    assert not marker_path(str(tmp_path), OBJ).exists()


def test_isolation_marker_of_a_process_killed_from_outside_is_ignored(
    tmp_path: Path,
) -> None:
    """A SIGKILL leaves an empty crash log: the object is processed as usual."""
    marker = leave_marker(tmp_path, "alone", crashed=False)

    with guard_object(str(tmp_path), OBJ, b"unused"):
        assert marker.read_text().startswith("shared\n")

    assert not marker.exists()


def test_isolation_subprocess_check_leaves_ordinary_reader_errors_to_the_caller() -> (
    None
):
    """Bytes that make the reader raise (not crash) pass the check quietly."""
    check_in_subprocess(b"PAR1 not really parquet PAR1", OBJ)


def test_isolation_subprocess_check_that_hangs_is_refused() -> None:
    """A check that does not end in time refuses the object, naming it."""
    big = parquet_bytes(numbers(0, 200_000))

    with pytest.raises(UnreadableFileError, match="did not end within"):
        check_in_subprocess(big, OBJ, timeout=0.01)


def test_isolation_aborting_file_is_quarantined_after_two_restarts(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A file that aborts the process is quarantined after two restarts; others land."""
    (tmp_path / "aborting.py").write_text(
        "import os\n\n"
        "def shape(frame):\n"
        "    if frame['id'].min() >= 100:\n"
        "        os.abort()  # stands for a segfault in native code\n"
        "    return frame\n"
    )
    (tmp_path / "bifrost.toml").write_text(
        f'crash-markers = "{tmp_path / "markers"}"\n'
    )
    upload_numbers(s3, bucket, "in/a.parquet", 0, 5)
    upload_numbers(s3, bucket, "in/b.parquet", 100, 5)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    env = dict(catalog_env, PYTHONPATH=str(tmp_path))
    args = [
        sys.executable, "-m", "bifrost_async", "run",
        "--config", str(tmp_path / "bifrost.toml"),
        "--source", f"s3://{bucket}/in/", "--table", "ns.events",
        "--transform", "aborting:shape", "--once", "--state", state,
        "--s3-endpoint", moto_endpoint, "--batch-max-age", "0.2",
    ]  # fmt: skip

    codes = [
        subprocess.run(args, capture_output=True, env=env, timeout=180).returncode
        for _ in range(3)
    ]

    assert codes == [-signal.SIGABRT, -signal.SIGABRT, 0]
    status = subprocess.run(
        [sys.executable, "-m", "bifrost_async", "status", "--state", state, "--json"],
        capture_output=True,
        env=env,
        timeout=60,
        check=True,
    )
    report = json.loads(status.stdout)
    assert report["ingested"] == 1
    [entry] = report["quarantined"]
    assert entry["key"] == "in/b.parquet"
    assert "processing it alone ended the process" in entry["reason"]
    left = sorted(os.listdir(tmp_path / "markers"))
    assert len(left) == 2 and all(name.startswith("crash-") for name in left)
