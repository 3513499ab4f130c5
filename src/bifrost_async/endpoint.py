"""A local S3 endpoint: a moto server process on 127.0.0.1, for the demo and tests.

The server runs in its own process (in-process it would share the GIL with the
ingester) on a free port, and is stopped when the context ends. Nothing here is used by
a production run.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

__all__ = ["find_free_port", "run_moto_server", "wait_for_http"]


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers HTTP at all (any status), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{url} did not answer within {timeout:.0f}s"
                ) from None

            time.sleep(0.1)


@contextlib.contextmanager
def run_moto_server(port: int | None = None) -> Iterator[str]:
    """Start a moto S3 server process and yield its endpoint URL."""
    port = port or find_free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MOTO_ALLOW_NONEXISTENT_REGION="true")
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_http(url + "/moto-api/")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
