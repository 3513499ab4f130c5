"""Isolation: keeping a file that crashes the process from crashing it forever.

A native reader or writer can abort the whole process (a segfault or an abort in C++
code), which no ``except`` can catch. The supervisor restarts the ingester and the
ledger hands the same object out again, so the crash would repeat without end. This
module leaves a marker file on local disk while an object is processed and removes it
afterwards, whatever happens short of the process dying. An object that still has a
marker when it is taken again crashed a process: it is first read in a separate
process (``check_in_subprocess``) and then processed alone, and quarantined if that
child dies too or if it ended a process while it was processed alone. It must not
decide anything else about objects. Markers are local files: a restart on another
machine does not see them.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import hashlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .discovery import ObjectRef
from .errors import UnreadableFileError

__all__ = ["check_in_subprocess", "enable_crash_log", "guard_object"]

logger = logging.getLogger(__name__)

_CHECK = """
import sys
import pyarrow.parquet as pq
parquet = pq.ParquetFile(
    sys.argv[1], coerce_int96_timestamp_unit="us", page_checksum_verification=True
)
parquet.read(use_threads=False).to_pylist()
"""


class SoloLock:
    """Many objects are processed at once, or one suspect object alone.

    A crash while a suspect is processed alone can only be that object's fault; a crash
    among several objects marks all of them suspects, so an innocent neighbour is
    checked and processed alone next time, never quarantined for it. Waiting suspects
    go first, so they are not starved.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._solo = False
        self._waiting = 0

    @contextlib.contextmanager
    def hold(self, solo: bool) -> Iterator[None]:
        """Hold the lock shared, or alone when ``solo``."""
        with self._condition:
            if solo:
                self._waiting += 1
                self._condition.wait_for(lambda: not self._solo and not self._shared)
                self._waiting -= 1
                self._solo = True
            else:
                self._condition.wait_for(lambda: not self._solo and not self._waiting)
                self._shared += 1

        try:
            yield
        finally:
            with self._condition:
                if solo:
                    self._solo = False
                else:
                    self._shared -= 1

                self._condition.notify_all()


_SOLO = SoloLock()


def marker_path(directory: str, obj: ObjectRef) -> Path:
    """The marker of one object version (bucket, key and ETag)."""
    digest = hashlib.sha256(f"{obj.uri}\n{obj.etag}".encode()).hexdigest()[:32]
    return Path(directory) / digest


def enable_crash_log(directory: str) -> Path:
    """Have this process write a fatal signal's traceback to ``crash-<pid>.log``.

    Called once by the command at start. Only a crash the process saw itself (SIGSEGV,
    SIGABRT, SIGBUS, SIGFPE, SIGILL) writes it: a SIGKILL from outside (a supervisor,
    the OOM killer) leaves the log empty, so it never makes an object a suspect. The
    log is removed at a normal exit when it is still empty.
    """
    path = crash_log_path(directory, os.getpid())
    path.parent.mkdir(parents=True, exist_ok=True)
    stream = path.open("a")
    faulthandler.enable(file=stream, all_threads=True)

    def remove_if_empty() -> None:
        faulthandler.disable()
        stream.close()
        if path.stat().st_size == 0:
            path.unlink(missing_ok=True)

    atexit.register(remove_if_empty)
    return path


def crash_log_path(directory: str, pid: int) -> Path:
    """Where process ``pid`` writes the traceback of a fatal signal."""
    return Path(directory) / f"crash-{pid}.log"


@contextlib.contextmanager
def guard_object(directory: str, obj: ObjectRef, data: bytes) -> Iterator[None]:
    """Process ``obj`` inside; objects that were in a crashed process are checked.

    An object whose marker survived a native crash of its process (the process's crash
    log is not empty) is first read in a separate process (:func:`check_in_subprocess`),
    then processed alone. An object that crashed a process while it was processed
    alone is refused unread. Raises :class:`UnreadableFileError` in those cases. A
    marker left by a process killed from outside is ignored. The marker is removed
    when the block ends, also by an error.
    """
    marker = marker_path(directory, obj)
    mode = read_marker(directory, marker)
    if mode is not None:
        logger.warning("isolation.suspect uri=%s alone=%s", obj.uri, mode == "alone")
        try:
            if mode == "alone":
                raise UnreadableFileError(
                    f"{obj.uri}: processing it alone ended the process (a native "
                    "crash in a reader, writer or transform); not tried again"
                )

            check_in_subprocess(data, obj)
        except UnreadableFileError:
            marker.unlink(missing_ok=True)
            raise

    solo = mode is not None
    with _SOLO.hold(solo):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(
            f"{'alone' if solo else 'shared'}\n{os.getpid()}\n{obj.uri}\n"
        )
        try:
            yield
        finally:
            marker.unlink(missing_ok=True)


def read_marker(directory: str, marker: Path) -> str | None:
    """``shared`` or ``alone`` for a marker left by a native crash; None otherwise."""
    try:
        mode, pid, _ = marker.read_text().split("\n", 2)
    except (FileNotFoundError, ValueError):
        return None

    log = crash_log_path(directory, int(pid)) if pid.isdigit() else None
    if log is None or not log.exists() or log.stat().st_size == 0:
        logger.debug("isolation.stale_marker marker=%s", marker)
        return None

    return mode


def check_in_subprocess(data: bytes, obj: ObjectRef, timeout: float = 600.0) -> None:
    """Read the bytes fully in a child process; raise if the child dies or hangs.

    An ordinary reader error in the child is not raised here: the caller reads the
    object again and turns that error into its usual reason.
    """
    with tempfile.NamedTemporaryFile(suffix=".parquet") as copy:
        copy.write(data)
        copy.flush()
        try:
            child = subprocess.run(
                [sys.executable, "-c", _CHECK, copy.name],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise UnreadableFileError(
                f"{obj.uri}: reading it in a separate process did not end within "
                f"{timeout:.0f}s, after it had ended an earlier process"
            ) from exc

    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        raise UnreadableFileError(
            f"{obj.uri}: the Parquet reader crashed ({name}) in a separate process, "
            "after the file had ended an earlier process"
        )
