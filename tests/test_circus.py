"""The shipped circus.ini under a real circusd: restarts, crash loops, signals, budgets.

Each test runs circusd from a copy of ``circus.ini`` in its own folder, with only the
endpoints (free ports), log paths and the command's path substituted; the watchers'
settings (respawn, the after_reap hook, graceful_timeout, ...) are the shipped ones.
Events (spawn, reap with exit codes) are read from circusd's pub/sub endpoint.
"""

from __future__ import annotations

import configparser
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from bifrost_async.endpoint import find_free_port
from bifrost_async.ledger import Ledger
from bifrost_async.respawn import hold_seconds, next_failure_count

from .conftest import ROOT
from .helpers import upload_numbers
from .processes import catalog_write_lock

BIN = Path(sys.executable).parent
CIRCUS_INI = ROOT / "circus.ini"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 60.0), (90, 60.0)],
    ids=["none", "first", "second", "third", "fourth", "capped", "many"],
)
def test_respawn_hold_grows_and_is_capped(failures: int, seconds: float) -> None:
    """The hold-back after failed exits doubles from 5 s and stops at 60 s."""
    assert hold_seconds(failures) == seconds


@pytest.mark.parametrize(
    ("count", "last", "now", "exit_code", "expected"),
    [
        (3, 100.0, 101.0, 0, 0),
        (3, 100.0, 101.0, 78, 4),
        (3, 100.0, 800.0, 1, 1),
        (0, 0.0, 5.0, None, 1),
    ],
    ids=[
        "planned-exit-resets",
        "failure-counts",
        "quiet-period-resets",
        "unknown-code",
    ],
)
def test_respawn_failure_count(
    count: int, last: float, now: float, exit_code: int | None, expected: int
) -> None:
    """Code 0 and ten quiet minutes reset the count; other exits add one."""
    assert next_failure_count(count, last, now, exit_code) == expected


class EventLog:
    """Collects circusd's pub/sub events in a thread: (watcher, action, message)."""

    def __init__(self, endpoint: str) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"watcher.")
        self.socket.connect(endpoint)
        self.running = True
        self.thread = threading.Thread(target=self.collect, daemon=True)
        self.thread.start()

    def collect(self) -> None:
        """Receive events until closed."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        while self.running:
            if poller.poll(100):
                topic, message = self.socket.recv_multipart()
                _, watcher, action = topic.decode().split(".", 2)
                self.events.append((watcher, action, json.loads(message)))

    def of(self, watcher: str, action: str) -> list[dict[str, Any]]:
        """The events of one watcher and action so far."""
        return [m for w, a, m in list(self.events) if (w, a) == (watcher, action)]

    def close(self) -> None:
        """Stop collecting."""
        self.running = False
        self.thread.join(5)
        self.socket.close(linger=0)
        self.context.term()


class Circus:
    """A running circusd, its folder, endpoints and events."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.endpoint = f"tcp://127.0.0.1:{find_free_port()}"
        self.pubsub = f"tcp://127.0.0.1:{find_free_port()}"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.events: EventLog | None = None

    def write_ini(self, watchers: dict[str, dict[str, str]]) -> Path:
        """Copy circus.ini with this run's endpoints, one section per watcher."""
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep case
        parser.read(CIRCUS_INI)
        shipped = dict(parser["watcher:bifrost"])
        parser.remove_section("watcher:bifrost")
        parser["circus"]["endpoint"] = self.endpoint
        parser["circus"]["pubsub_endpoint"] = self.pubsub
        parser["circus"]["logoutput"] = str(self.folder / "circusd.log")
        for name, overrides in watchers.items():
            section = dict(shipped)
            section["cmd"] = section["cmd"].replace(".venv/bin/", f"{BIN}/", 1)
            section["stderr_stream.filename"] = str(self.folder / f"{name}.log")
            section["stdout_stream.filename"] = str(self.folder / f"{name}.out.log")
            section.update(overrides)
            parser[f"watcher:{name}"] = section

        path = self.folder / "circus.ini"
        with path.open("w") as stream:
            parser.write(stream)

        return path

    def start(self, watchers: dict[str, dict[str, str]]) -> None:
        """Start circusd with its watchers held, subscribe, then start the watchers."""
        held = {
            name: dict(values, autostart="false") for name, values in watchers.items()
        }
        ini = self.write_ini(held)
        self.process = subprocess.Popen(
            [str(BIN / "circusd"), str(ini)],
            cwd=self.folder,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(lambda: self.ctl("status").returncode == 0, 30, "circusd to answer")
        self.events = EventLog(self.pubsub)
        time.sleep(0.5)  # let the subscription reach circusd before the first event
        for name in watchers:
            self.command("start", name)

    def ctl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        """Run circusctl against this circusd."""
        return subprocess.run(
            [
                str(BIN / "circusctl"),
                "--endpoint",
                self.endpoint,
                "--timeout",
                str(timeout),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 5,
        )

    def command(self, *args: str) -> str:
        """Run a circusctl command, again while circusd answers that it is busy."""
        deadline = time.monotonic() + 30
        while True:
            result = self.ctl(*args)
            if result.returncode == 0 and "error" not in result.stdout:
                return result.stdout

            if time.monotonic() > deadline:
                raise AssertionError(
                    f"circusctl {args}: {result.stdout}{result.stderr}"
                )

            time.sleep(0.3)

    def log(self, name: str) -> str:
        """What a watcher wrote to its stderr log so far."""
        path = self.folder / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def shut_down(self) -> None:
        """Quit circusd (a second try if it is busy), then terminate, then kill."""
        if self.events is not None:
            self.events.close()

        process = self.process
        if process is None or process.poll() is not None:
            return

        for _ in range(2):
            self.ctl("quit", timeout=5)
            try:
                process.wait(timeout=40)
                return
            except subprocess.TimeoutExpired:
                continue

        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")

        time.sleep(0.1)


@pytest.fixture
def circus(tmp_path: Path, catalog_env: dict[str, str]) -> Iterator[Circus]:
    """A circusd for one test, shut down on every path."""
    instance = Circus(tmp_path, catalog_env)
    try:
        yield instance
    finally:
        instance.shut_down()


def write_bifrost_toml(folder: Path, bucket: str, endpoint: str, **values: Any) -> str:
    """Write the bifrost.toml the shipped command reads; return the ledger URL."""
    state = f"sqlite:///{folder / 'state.db'}"
    settings = {
        "state": state,
        "s3_endpoint": endpoint,
        "poll_interval": "0.2",
        "batch_max_age": "0.5",
        **values,
    }
    lines = [
        f"{name} = {json.dumps(value)}"
        for name, value in settings.items()
        if value is not None
    ]
    lines += [
        "",
        "[[route]]",
        f'sources = ["s3://{bucket}/in/"]',
        'table = "ns.events"',
    ]
    (folder / "bifrost.toml").write_text("\n".join(lines) + "\n")
    return state


def query_ledger(state: str, sql: str) -> int:
    """One number from the ledger's SQLite file; 0 while it has no tables yet."""
    path = Path(state.removeprefix("sqlite:///"))
    if not path.exists():
        return 0

    try:
        with sqlite3.connect(path, timeout=5) as conn:
            return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.OperationalError:
        return 0


def pending_batches(state: str) -> int:
    """Batches begun in the ledger and not yet confirmed or aborted."""
    return query_ledger(
        state, "select count(*) from bifrost_batches where state = 'pending'"
    )


def committed_rows(state: str) -> int:
    """Rows of the objects the ledger records as committed."""
    return query_ledger(
        state, "select sum(rows) from bifrost_objects where state = 'committed'"
    )


def assert_landed_once(state: str, load_table: Any, expected_ids: list[int]) -> None:
    """The table holds each expected id once, and the ledger agrees."""
    status = Ledger(state).status()
    ids = load_table().scan().to_arrow().column("id").to_pylist()
    assert sorted(ids) == sorted(expected_ids)
    assert (status["rows"], status["in_flight"]) == (len(expected_ids), 0)


def test_circus_restarts_after_each_budget_and_lands_every_object_once(
    circus: Circus, s3: Any, bucket: str, moto_endpoint: str, load_table: Any
) -> None:
    """With max_iterations = 1, circusd restarts the worker; each object lands once."""
    state = write_bifrost_toml(circus.folder, bucket, moto_endpoint, max_iterations=1)
    waves, per_wave = 4, 3
    for n in range(per_wave):
        upload_numbers(s3, bucket, f"in/w0-{n}.parquet", n * 10, 10)

    circus.start({"bifrost": {}})
    assert circus.events is not None
    for wave in range(1, waves):
        wait_until(
            lambda w=wave: len(circus.events.of("bifrost", "reap")) >= w,  # type: ignore[union-attr]
            60,
            f"exit number {wave}",
        )
        for n in range(per_wave):
            start = (wave * per_wave + n) * 10
            upload_numbers(s3, bucket, f"in/w{wave}-{n}.parquet", start, 10)

    total = waves * per_wave * 10
    wait_until(lambda: committed_rows(state) == total, 90, "every object")
    circus.command("stop", "bifrost")

    reaps = circus.events.of("bifrost", "reap")
    assert len(circus.events.of("bifrost", "spawn")) >= waves
    assert all(r["exit_code"] == 0 for r in reaps), reaps
    assert circus.log("bifrost").count("stopped_by=max-iterations") >= waves - 1
    assert_landed_once(state, load_table, list(range(total)))


def test_circus_holds_back_a_broken_setting_and_a_crashing_worker(
    circus: Circus, tmp_path: Path, bucket: str, moto_endpoint: str, shared: Path
) -> None:
    """A config error and crasher.py: at most 4 starts in 30 s, circusctl answers."""
    write_bifrost_toml(circus.folder, bucket, moto_endpoint, concurrency="lots")
    spawn_log = tmp_path / "spawns.log"
    circus.env = dict(circus.env, SPAWN_LOG=str(spawn_log))
    crasher = shared / "cases" / "circus_restart" / "crasher.py"
    circus.start({"bifrost": {}, "crasher": {"cmd": f"{sys.executable} {crasher}"}})
    assert circus.events is not None

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert "bifrost: active" in circus.ctl("status", timeout=2).stdout
        time.sleep(1)

    starts = {
        name: len(circus.events.of(name, "spawn")) for name in ("bifrost", "crasher")
    }
    assert 2 <= starts["bifrost"] <= 4, starts
    assert 2 <= starts["crasher"] <= 4, starts
    assert len(spawn_log.read_text().splitlines()) == starts["crasher"]
    assert {r["exit_code"] for r in circus.events.of("bifrost", "reap")} == {78}
    errors = [
        line for line in circus.log("bifrost").splitlines() if "configuration" in line
    ]
    assert errors and all("--concurrency: 'lots'" in line for line in errors)

    assert circus.process is not None
    assert stop_circusd(circus.process) == 0


def stop_circusd(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM circusd, once more if the first one was dropped; its exit code.

    circusd runs one command at a time and drops a quit that arrives while another
    runs (here: a spawn waiting out ``warmup_delay`` after a respawn hold), as
    circus-tent/circus#690 describes; the README tells operators to send it again.
    """
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=30)


def test_circus_stop_during_a_commit_leaves_no_partial_data(
    circus: Circus, s3: Any, bucket: str, moto_endpoint: str, load_table: Any
) -> None:
    """circusctl stop (SIGTERM) while a commit waits: it lands, nothing partial.

    The commit is held in flight with the SQLite catalog's write lock, taken once a
    first object has made the table; the stop arrives while it waits.
    """
    state = write_bifrost_toml(
        circus.folder, bucket, moto_endpoint, batch_max_files=4, concurrency=2
    )
    count = 40
    upload_numbers(s3, bucket, "in/part-000.parquet", 0, 100)
    circus.start({"bifrost": {}})
    assert circus.events is not None
    wait_until(lambda: committed_rows(state) == 100, 60, "the table's first object")
    with catalog_write_lock(circus.folder / "catalog.db"):
        for n in range(1, count):
            upload_numbers(s3, bucket, f"in/part-{n:03d}.parquet", n * 100, 100)

        wait_until(lambda: pending_batches(state) > 0, 60, "a commit held in flight")
        circus.command("stop", "bifrost")
        wait_until(
            lambda: "budget.stop" in circus.log("bifrost"), 30, "the stop request"
        )

    # circusd publishes no exit code for a process it stopped; the log shows the run
    # ended through its summary (the code-0 path), not through a forced exit. circusd
    # may still be copying the last lines from the pipe when `stop` answers.
    wait_until(
        lambda: "run.complete" in circus.log("bifrost"), 30, "the run's summary line"
    )
    log = circus.log("bifrost")
    assert "stopped_by=signal SIGTERM" in log
    assert "run.forced" not in log and "Traceback" not in log
    status = Ledger(state).status()
    assert pending_batches(state) == 0
    assert status["in_flight"] == 0
    ids = load_table().scan().to_arrow().column("id").to_pylist()
    assert len(ids) == len(set(ids)) == status["rows"]
    assert len(ids) % 100 == 0, "only whole files are in the table"

    circus.command("start", "bifrost")
    wait_until(lambda: committed_rows(state) == count * 100, 90, "the rest")
    circus.command("stop", "bifrost")
    assert_landed_once(state, load_table, list(range(count * 100)))


def test_circus_memory_budget_ends_the_run_with_code_0(
    circus: Circus, s3: Any, bucket: str, moto_endpoint: str
) -> None:
    """A small max_rss ends the run with code 0 and the summary names the budget."""
    write_bifrost_toml(circus.folder, bucket, moto_endpoint, max_rss="1MB")
    for n in range(3):
        upload_numbers(s3, bucket, f"in/part-{n}.parquet", n * 10, 10)

    circus.start({"bifrost": {}})
    assert circus.events is not None
    wait_until(lambda: len(circus.events.of("bifrost", "reap")) >= 1, 60, "an exit")  # type: ignore[union-attr]
    circus.command("stop", "bifrost")

    assert circus.events.of("bifrost", "reap")[0]["exit_code"] == 0
    wait_until(
        lambda: "run.complete" in circus.log("bifrost"), 15, "the run's summary line"
    )
    summary = [
        line for line in circus.log("bifrost").splitlines() if "run.complete" in line
    ]
    assert summary and "stopped_by=max-rss" in summary[0]
