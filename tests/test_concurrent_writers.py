"""Several ingester processes on one table, sharing a PostgreSQL catalog and ledger.

The writers list overlapping prefixes at the same time; the unique claim in the ledger
keeps them apart and the catalog's optimistic commit serializes their snapshots. The
table must end with every source row exactly once, whatever order they ran in.
"""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog import load_catalog

from bifrost_async.ledger import Ledger

from .helpers import upload_numbers
from .processes import (
    assert_exactly_once,
    catalog_environment,
    ingester_command,
    open_postgres_schema,
    start_ingester,
    wait_for_text,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROWS_PER_OBJECT = 10
PREFIXES = ("a", "b", "c")
OBJECTS_PER_PREFIX = 30


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search path is a fresh schema, dropped afterwards."""
    with open_postgres_schema(postgres_url) as url:
        yield url


def upload_prefixes(s3: Any, bucket: str) -> Counter[int]:
    """Upload the objects of every prefix; return the ids they hold, as a multiset."""
    expected: Counter[int] = Counter()
    for p, prefix in enumerate(PREFIXES):
        for n in range(OBJECTS_PER_PREFIX):
            start = (p * OBJECTS_PER_PREFIX + n) * 1000
            upload_numbers(s3, bucket, f"in/{prefix}/{n:03d}.parquet", start, 10)
            expected.update(range(start, start + ROWS_PER_OBJECT))

    return expected


def writer_commands(
    bucket: str, table: str, state: str, endpoint: str
) -> list[list[str]]:
    """Three writers whose sources overlap: a+b, b+c, and the whole ``in/`` prefix."""
    sources = [
        [f"s3://{bucket}/in/a/", f"s3://{bucket}/in/b/"],
        [f"s3://{bucket}/in/b/", f"s3://{bucket}/in/c/"],
        [f"s3://{bucket}/in/"],
    ]
    options = ("--batch-max-files", "4", "--batch-max-age", "0.2", "--concurrency", "4")
    return [
        ingester_command(chosen, table, state, endpoint, *options) for chosen in sources
    ]


def run_writers(
    commands: list[list[str]],
    env: dict[str, str],
    log_dir: Path,
    kill_first: bool,
) -> list[Path]:
    """Start every writer at once; optionally SIGKILL the first mid-run and restart it.

    Returns the log files; every writer that was not killed must end with code 0.
    """
    logs = [log_dir / f"writer-{n}.log" for n in range(len(commands))]
    processes = [
        start_ingester(command, env, log)
        for command, log in zip(commands, logs, strict=True)
    ]
    if kill_first:
        first = processes[0]
        if wait_for_text(first, logs[0], "commit.complete") and first.poll() is None:
            first.send_signal(signal.SIGKILL)
            first.wait()
            logs.append(log_dir / "writer-0-again.log")
            processes.append(start_ingester(commands[0], env, logs[-1]))

    codes = [wait_exit(process) for process in processes]
    tails = "\n".join(log.read_text(errors="replace")[-2000:] for log in logs)
    ended = [code for code in codes if code != -signal.SIGKILL]
    assert ended == [0] * len(commands), f"exit codes {codes}:\n{tails}"
    return logs


def wait_exit(process: subprocess.Popen[bytes]) -> int:
    """Wait for a writer to end, killing it if it hangs."""
    try:
        return process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


@pytest.mark.parametrize("kill_first", [False, True], ids=["clean", "one-killed"])
def test_writers_on_postgres_land_every_object_once(
    kill_first: bool,
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    postgres_schema: str,
    tmp_path: Path,
) -> None:
    """Three writers with overlapping sources, one maybe killed; each row lands once."""
    expected = upload_prefixes(s3, bucket)
    properties = {
        "type": "sql",
        "uri": postgres_schema,
        "warehouse": f"file://{tmp_path / 'warehouse'}",
    }
    table_name = "writers.events"
    commands = writer_commands(bucket, table_name, postgres_schema, moto_endpoint)

    run_writers(commands, catalog_environment(properties), tmp_path, kill_first)

    table = load_catalog("default", **properties).load_table(table_name)
    objects = len(PREFIXES) * OBJECTS_PER_PREFIX
    assert_exactly_once(postgres_schema, table, expected, objects, table_name)
    ledger = Ledger(postgres_schema)
    try:
        assert ledger.status()["in_flight"] == 0
    finally:
        ledger.close()
