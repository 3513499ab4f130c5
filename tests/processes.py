"""Ingester subprocesses for fault-injection tests and the soak: start, kill, restart.

Each run is ``python -m bifrost_async run ... --once`` with the catalog given through
``PYICEBERG_CATALOG__DEFAULT__*`` variables, its stderr in a log file per run, so a
failing test can show what the process said before it was killed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from bifrost_async.commit import BATCH_ID_PROPERTY, TableHandle
from bifrost_async.config import Route, Settings
from bifrost_async.discovery import ObjectRef
from bifrost_async.ledger import (
    Ledger,
    ObjectOutcome,
    Owner,
    batches_table,
    objects_table,
)
from bifrost_async.process import Prepared, prepare_object

__all__ = [
    "KillReport",
    "assert_exactly_once",
    "catalog_environment",
    "catalog_write_lock",
    "dead_owner",
    "ingester_command",
    "kill_until_drained",
    "leave_pending_batch",
    "listed",
    "open_postgres_schema",
    "start_ingester",
    "table_counter",
    "wait_for_text",
]


def ingester_command(
    sources: Sequence[str],
    table: str,
    state: str,
    endpoint: str,
    *extra: str,
) -> list[str]:
    """The ``run --once`` command line for one ingester process."""
    command = [sys.executable, "-m", "bifrost_async", "run", "--once"]
    for source in sources:
        command += ["--source", source]

    command += [
        "--table",
        table,
        "--state",
        state,
        "--s3-endpoint",
        endpoint,
        "--poll-interval",
        "0.2",
        "--log-level",
        "DEBUG",
        *extra,
    ]
    return command


def start_ingester(
    command: Sequence[str], env: Mapping[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """Start one ingester process with its stderr and stdout in ``log_path``."""
    log = log_path.open("wb")
    try:
        return subprocess.Popen(
            list(command), env=dict(env), stdout=log, stderr=subprocess.STDOUT
        )
    finally:
        log.close()


def wait_for_text(
    process: subprocess.Popen[bytes], log_path: Path, text: str, timeout: float = 60.0
) -> bool:
    """Wait until ``text`` appears in the log; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_path.read_text(errors="replace"):
            return True

        if process.poll() is not None:
            return text in log_path.read_text(errors="replace")

        time.sleep(0.02)

    raise TimeoutError(f"{text!r} did not appear in {log_path} within {timeout:.0f}s")


@dataclass
class KillReport:
    """What a kill loop did: kills delivered, runs that ended by themselves, logs."""

    seed: int
    kills: int = 0
    runs: int = 0
    exits: list[int] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def tail(self, lines: int = 40) -> str:
        """The end of the last log, for an assertion message."""
        if not self.logs:
            return ""

        text = self.logs[-1].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def kill_until_drained(
    command: Sequence[str],
    env: Mapping[str, str],
    log_dir: Path,
    seed: int,
    kills: int,
    ready_text: str = "bifrost_async",
    early_share: float = 0.25,
    window: float = 0.8,
    max_runs: int | None = None,
    before_run: Callable[[int], None] | None = None,
) -> KillReport:
    """SIGKILL the ingester ``kills`` times at seeded random moments, then drain.

    Most kills land a random time up to ``window`` seconds after the process first
    logs ``ready_text`` (it is working by then); a share ``early_share`` lands at a
    random moment from start, which covers start-up, recovery and listing. After the
    kills, the command runs until it exits 0 by itself (``--once`` drained).
    ``before_run`` is called with the run's number before each start (to add objects
    while the ingester is being killed, as a live source would).
    """
    rng = random.Random(seed)
    report = KillReport(seed=seed)
    limit = max_runs if max_runs is not None else kills * 3 + 10
    while report.runs < limit:
        log_path = log_dir / f"run-{report.runs:03d}.log"
        report.logs.append(log_path)
        if before_run is not None:
            before_run(report.runs)

        report.runs += 1
        process = start_ingester(command, env, log_path)
        if report.kills < kills:
            if rng.random() < early_share:
                time.sleep(rng.uniform(0.5, 3.0))
            elif wait_for_text(process, log_path, ready_text):
                time.sleep(rng.uniform(0.0, window))

            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
                report.kills += 1
                report.exits.append(-signal.SIGKILL)
                continue

        code = process.wait(timeout=300)
        report.exits.append(code)
        if code != 0:
            raise AssertionError(f"run {report.runs} exited {code}:\n{report.tail()}")

        if report.kills >= kills:
            return report

    raise AssertionError(f"not drained after {report.runs} runs:\n{report.tail()}")


def table_counter(table: Any, column: str) -> Counter[Any]:
    """The values of one column of an Iceberg table, as a multiset."""
    values = table.scan(selected_fields=(column,)).to_arrow().column(column)
    return Counter(values.to_pylist())


def assert_exactly_once(
    ledger_url: str,
    table: Any,
    expected: Counter[int],
    objects: int,
    table_name: str,
    column: str = "id",
) -> None:
    """The table holds exactly the expected ids; the ledger agrees with the table."""
    landed = table_counter(table, column)
    missing = expected - landed
    doubled = landed - expected
    assert not missing and not doubled, (
        f"missing {len(missing)} ids (e.g. {sorted(missing)[:5]}), "
        f"doubled {len(doubled)} ids (e.g. {sorted(doubled)[:5]})"
    )

    ledger = Ledger(ledger_url)
    try:
        with ledger.engine.connect() as conn:
            states = Counter(
                conn.execute(
                    sa.select(objects_table.c.state).where(
                        objects_table.c.table_name == table_name
                    )
                ).scalars()
            )
            confirmed = list(
                conn.execute(
                    sa.select(batches_table.c.batch_id).where(
                        batches_table.c.table_name == table_name,
                        batches_table.c.state == "committed",
                        batches_table.c.snapshot_id.is_not(None),
                    )
                ).scalars()
            )
    finally:
        ledger.close()

    assert states == Counter({"committed": objects})
    tagged = [
        s.summary.additional_properties.get(BATCH_ID_PROPERTY)
        for s in table.metadata.snapshots
        if s.summary is not None and s.summary.operation.value == "append"
    ]
    assert Counter(tagged) == Counter(confirmed)


@contextlib.contextmanager
def open_postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test; yields a URL whose search path is it.

    The pyiceberg catalog tables and the ledger tables both land in the schema, so runs
    never see each other's rows; the schema is dropped afterwards.
    """
    name = f"bifrost_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))

        separator = "&" if "?" in base_url else "?"
        yield f"{base_url}{separator}options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))

        engine.dispose()


def catalog_environment(properties: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``PYICEBERG_CATALOG__DEFAULT__*`` variables."""
    env = dict(os.environ)
    for name, value in properties.items():
        env[f"PYICEBERG_CATALOG__DEFAULT__{name.upper()}"] = value

    return env


@contextlib.contextmanager
def catalog_write_lock(catalog_db: Path) -> Iterator[None]:
    """Hold the SQLite catalog's write lock; readers go on, commits wait."""
    conn = sqlite3.connect(catalog_db, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def dead_owner() -> Owner:
    """An owner whose process has exited on this host (as after a SIGKILL)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(process.pid).create_time()
    process.wait()
    return Owner(uuid.uuid4().hex, socket.gethostname(), process.pid, started)


def listed(s3: Any, bucket: str, key: str) -> ObjectRef:
    """An object as the listing sees it."""
    head = s3.head_object(Bucket=bucket, Key=key)
    return ObjectRef(bucket, key, head["ContentLength"], head["ETag"].strip('"'))


def leave_pending_batch(
    s3: Any,
    bucket: str,
    key: str,
    settings: Settings,
    commit: bool,
    prepare: Callable[[bytes, ObjectRef, TableHandle, Route], Prepared | None] = (
        prepare_object
    ),
) -> str:
    """Do what a killed writer did: claim, prepare, begin a batch, maybe commit; stop.

    ``prepare`` turns the object's bytes into its data files (the normal path by
    default; in place it registers the object itself).
    """
    owner = dead_owner()
    route = settings.routes[0]
    ledger = Ledger(settings.state)
    handle = TableHandle(route.catalog, route.table, settings.catalog_properties)
    handle.load()
    obj = listed(s3, bucket, key)
    ledger.register(owner, settings.lease_seconds)
    (claimed,) = ledger.claim(route.table, owner, [obj])
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    prepared = prepare(data, claimed, handle, route)
    assert prepared is not None, f"{key} was not prepared"
    batch_id = uuid.uuid4().hex
    ledger.begin_batch(
        route.table, owner, batch_id, [ObjectOutcome(claimed, prepared.rows)]
    )
    if commit:
        handle.commit(batch_id, prepared.files)

    ledger.close()
    return batch_id
