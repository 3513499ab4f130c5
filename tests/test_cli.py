"""The command as users run it: exit codes, the summary line and ``status --json``."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bifrost_async import cli
from bifrost_async.config import load_settings
from bifrost_async.discovery import ObjectRef
from bifrost_async.endpoint import find_free_port

from .helpers import parquet_bytes, upload_numbers


def run_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bifrost_async`` with a time limit; capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "bifrost_async", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
    )


def orders_run(tmp_path: Path, endpoint: str) -> list[str]:
    """``run`` of one source into ``ns.t``, its ledger in ``tmp_path``."""
    return [
        "run",
        "--source",
        "s3://landing/orders/",
        "--table",
        "ns.t",
        "--state",
        str(tmp_path / "state.db"),
        "--s3-endpoint",
        endpoint,
    ]


def error_lines(stderr: str) -> list[str]:
    """The ERROR lines of a command's text log."""
    return [line for line in stderr.splitlines() if " ERROR " in line]


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["run"], "--source"),
        (["run", "--source", "http://nope/x", "--table", "ns.t"], "--source"),
        (["run", "--source", "s3://landing/x/", "--table", "flat"], "--table"),
        (
            [
                "run",
                "--source",
                "s3://landing/x/",
                "--table",
                "ns.t",
                "--max-bytes",
                "lots",
            ],
            "--max-bytes",
        ),
        (
            [
                "run",
                "--source",
                "s3://landing/x/",
                "--table",
                "ns.t",
                "--catalog",
                "nowhere",
            ],
            "--catalog",
        ),
    ],
    ids=["no-source", "bad-uri", "bad-table", "bad-size", "unknown-catalog"],
)
def test_cli_configuration_error_exits_78_with_one_line(
    args: list[str], setting: str, tmp_path: Path
) -> None:
    """A bad setting exits 78 with one stderr line that names it."""
    done = run_command(*args, "--error-delay", "0", cwd=tmp_path)

    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"bifrost-async: configuration error: {setting}")


def test_cli_run_then_status_json(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A drained run exits 0 with its summary; status --json reports the ledger."""
    for n in range(3):
        upload_numbers(s3, bucket, f"cli/{n}.parquet", n * 10, 10)

    s3.put_object(Bucket=bucket, Key="cli/9-bad.parquet", Body=b"not parquet at all")
    s3.put_object(Bucket=bucket, Key="cli/_SUCCESS", Body=b"")
    state = f"sqlite:///{tmp_path / 'state.db'}"

    done = run_command(
        "run",
        "--source",
        f"s3://{bucket}/cli/",
        "--table",
        "ns.cli",
        "--once",
        "--state",
        state,
        "--s3-endpoint",
        moto_endpoint,
        "--batch-max-age",
        "0.5",
        env=catalog_env,
        cwd=tmp_path,
    )

    assert done.returncode == 0, done.stderr
    summary = done.stderr.strip().splitlines()[-1]
    assert "run.complete objects=3 quarantined=1 rows=30" in summary
    assert "stopped_by=drained" in summary
    assert "4/4 objects" not in done.stderr  # no progress bar off a terminal

    status = run_command("status", "--state", state, "--json", env=catalog_env)
    report = json.loads(status.stdout)
    table = report["tables"]["ns.cli"]
    assert report["ingested"] == 3
    assert [q["key"] for q in report["quarantined"]] == ["cli/9-bad.parquet"]
    assert "not a Parquet file" in report["quarantined"][0]["reason"]
    assert (table["ingested"], table["rows"], table["quarantined"]) == (3, 30, 1)
    assert table["backlog"] == 0
    assert table["last_pass"]["listed"] == 4
    assert isinstance(table["last_commit"]["snapshot_id"], int)

    wide = dict(catalog_env, COLUMNS="200")
    human = run_command("status", "--state", state, env=wide)
    assert human.returncode == 0, human.stderr
    assert "ingested 3 objects, 30 rows" in human.stdout
    assert "ns.cli" in human.stdout
    assert f"s3://{bucket}/cli/9-bad.parquet" in human.stdout


def test_cli_unreachable_s3_exits_1_naming_the_source(
    catalog_env: dict[str, str], tmp_path: Path
) -> None:
    """S3 failing past the retry budget exits 1 with one ERROR naming the prefix."""
    endpoint = f"http://127.0.0.1:{find_free_port()}"

    done = run_command(
        *orders_run(tmp_path, endpoint), "--once", env=catalog_env, cwd=tmp_path
    )

    assert done.returncode == 1, done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1
    assert "s3://landing/orders/" in errors[0]
    assert "retry.scheduled kind=list" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_retry_quarantined_puts_objects_back(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """After a fix, retry-quarantined lets the next run take the object again.

    The endpoint comes from botocore's own AWS_ENDPOINT_URL_S3 here, not a flag.
    """
    env = dict(catalog_env, AWS_ENDPOINT_URL_S3=moto_endpoint)
    s3.put_object(
        Bucket=bucket, Key="rq/a.parquet", Body=parquet_bytes(pa.table({"id": [1, 2]}))
    )
    s3.put_object(Bucket=bucket, Key="rq/b.parquet", Body=b"broken")
    state = str(tmp_path / "state.db")
    run_args = (
        "run",
        "--source",
        f"s3://{bucket}/rq/",
        "--table",
        "ns.rq",
        "--once",
        "--state",
        state,
    )
    assert run_command(*run_args, env=env, cwd=tmp_path).returncode == 0
    s3.put_object(
        Bucket=bucket, Key="rq/b.parquet", Body=parquet_bytes(pa.table({"id": [3]}))
    )

    retry = ("retry-quarantined", "--state", state, "--key", "rq/b.parquet")
    other_table = run_command(*retry, "--table", "ns.x")
    retried = run_command(*retry, "--table", "ns.rq")
    again = run_command(*run_args, env=env, cwd=tmp_path)
    status = json.loads(run_command("status", "--state", state, "--json").stdout)

    assert "0 object(s) will be taken again" in other_table.stdout
    assert "1 object(s) will be taken again" in retried.stdout
    assert again.returncode == 0, again.stderr
    assert "objects=1 quarantined=0 rows=1" in again.stderr
    assert status["quarantined"] == []
    assert status["events"][0]["action"] == "retry-quarantined"
    assert status["events"][0]["detail"]["objects"][0]["key"] == "rq/b.parquet"


def closed_postgres_url() -> str:
    """A PostgreSQL URL on a local port where nothing listens."""
    return f"postgresql+psycopg2://postgres:s3cret@127.0.0.1:{find_free_port()}/test"


def test_cli_status_of_a_missing_ledger_exits_78_and_creates_nothing(
    tmp_path: Path,
) -> None:
    """``status`` on a mistyped SQLite path names it and leaves no empty ledger."""
    path = tmp_path / "mistyped.db"

    done = run_command("status", "--state", str(path), "--error-delay", "0")

    assert done.returncode == 78, done.stderr
    assert done.stderr.strip() == (
        f"bifrost-async: configuration error: --state: no ledger at {str(path)!r}; "
        "a run creates it there"
    )
    assert not path.exists()


@pytest.mark.parametrize("command", ["status", "retry-quarantined"])
def test_cli_unreachable_ledger_exits_1_with_one_line(
    command: str, tmp_path: Path
) -> None:
    """A ledger database that is down is one ERROR line, its password masked."""
    done = run_command(command, "--state", closed_postgres_url(), cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1
    assert "could not be opened" in errors[0]
    assert "s3cret" not in done.stderr


def test_cli_run_waits_out_an_unreachable_catalog_then_exits_1(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """A catalog that is down is retried with a WARNING each time, then exit 1."""
    env = dict(os.environ, PYICEBERG_CATALOG__DEFAULT__URI=closed_postgres_url())

    done = run_command(
        *orders_run(tmp_path, moto_endpoint), "--once", env=env, cwd=tmp_path
    )

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    retries = done.stderr.count("retry.scheduled kind=catalog")
    assert retries == 5, done.stderr
    assert "catalog unreachable after 6 attempts" in done.stderr


def test_cli_sigterm_during_start_up_exits_0_with_a_log_line(
    moto_endpoint: str, tmp_path: Path
) -> None:
    """A signal before the passes begin (here: waiting for the catalog) exits 0."""
    env = dict(os.environ, PYICEBERG_CATALOG__DEFAULT__URI=closed_postgres_url())
    command = [
        sys.executable,
        "-m",
        "bifrost_async",
        *orders_run(tmp_path, moto_endpoint),
    ]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    assert process.stderr is not None
    for line in process.stderr:
        if "retry.scheduled kind=catalog" in line:
            break

    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()

    assert process.wait(timeout=30) == 0, rest
    assert "run.stopped reason=signal SIGTERM outside a pass" in rest


def test_cli_validate_missing_bucket_exits_1_with_one_line(
    moto_endpoint: str, catalog_env: dict[str, str], tmp_path: Path
) -> None:
    """``validate`` against a bucket that does not exist is one ERROR line."""
    done = run_command(
        "validate",
        "--source",
        "s3://no-such-bucket-here/x/",
        "--table",
        "ns.t",
        "--state",
        str(tmp_path / "state.db"),
        "--s3-endpoint",
        moto_endpoint,
        env=catalog_env,
        cwd=tmp_path,
    )

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = error_lines(done.stderr)
    assert len(errors) == 1
    assert "no-such-bucket-here" in errors[0]


@pytest.mark.parametrize("form", [[], ["--json"]], ids=["text", "json"])
def test_cli_status_into_a_closed_pipe_exits_0_quietly(
    form: list[str], tmp_path: Path
) -> None:
    """``status | head -c0``: the reader going away is not an error."""
    from bifrost_async.ledger import Ledger

    state = f"sqlite:///{tmp_path / 'state.db'}"
    Ledger(state).close()
    process = subprocess.Popen(
        [sys.executable, "-m", "bifrost_async", "status", "--state", state, *form],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    errors = process.stderr.read()

    assert process.wait(timeout=60) == 0, errors
    assert errors == ""


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    """The root logger; it and the signal handlers are put back after ``cli.main``.

    ``cli.main`` configures logging and, for ``run``, makes SIGTERM and SIGINT end the
    process: in the test process both must be undone.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    signals = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield root
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for signum, handler in signals.items():
            signal.signal(signum, handler)


ROUTE_FLAGS = ["--source", "s3://landing/x/", "--table", "ns.t"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", *ROUTE_FLAGS, "--log-level", "LOUD"], "--log-level: 'LOUD'"),
        (["status", "--log-level", "LOUD"], "--log-level: 'LOUD'"),
        (["run", *ROUTE_FLAGS, "--metrics-port", "99999"], "--metrics-port: 99999"),
        (["run", *ROUTE_FLAGS, "--metrics-port", "0"], "--metrics-port: 0"),
        (["run", *ROUTE_FLAGS, "--s3-endpoint", "not-a-url"], "--s3-endpoint: "),
        (
            ["run", *ROUTE_FLAGS, "--heartbeat-file", "no/such/folder/hb"],
            "--heartbeat-file: the folder of 'no/such/folder/hb' does not exist",
        ),
        (
            ["run", "--source", "s3://landing/x/"],
            "--table: no table given; add --table namespace.table with --source",
        ),
        (
            ["run", *ROUTE_FLAGS, "--state", "mysql://h/db"],
            "--state: 'mysql://h/db'",
        ),
    ],
    ids=[
        "log-level",
        "log-level-of-status",
        "port-too-high",
        "port-zero",
        "endpoint",
        "heartbeat-folder",
        "source-without-table",
        "state",
    ],
)
def test_cli_main_bad_flag_exits_78_with_one_line(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    root_logging: logging.Logger,
) -> None:
    """A flag that used to give a traceback is one configuration error line, exit 78."""
    code = cli.main([*args, "--error-delay", "0"])

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 78
    assert len(lines) == 1
    assert lines[0].startswith(f"bifrost-async: configuration error: {message}")


def test_cli_main_endpoint_with_credentials_does_not_echo_them(
    capsys: pytest.CaptureFixture[str], root_logging: logging.Logger
) -> None:
    """An endpoint with a user and password exits 78 without printing the secret."""
    endpoint = "http://AKIDEXAMPLE:wJalrXUtnFEMIexample@127.0.0.1:9000"

    code = cli.main(
        ["run", *ROUTE_FLAGS, "--s3-endpoint", endpoint, "--error-delay", "0"]
    )

    err = capsys.readouterr().err
    assert code == 78
    assert err.startswith("bifrost-async: configuration error: --s3-endpoint: ")
    assert "wJalrXUtnFEMIexample" not in err
    assert "AKIDEXAMPLE" not in err


@pytest.mark.parametrize(
    ("text", "flags", "message"),
    [
        ("concurrency = 4.5\n", [], "--concurrency: 4.5 is not a whole number"),
        ('once = "no"\n', [], "--once: 'no' is not true or false"),
        ('log-level = "LOUD"\n', [], "--log-level: 'LOUD'"),
        ("", ["--error-delay", "-1"], "--error-delay: '-1' must not be negative"),
        ("", ["--error-delay", "nan"], "--error-delay: 'nan' is not a number"),
    ],
    ids=["float-count", "text-boolean", "log-level", "delay-negative", "delay-nan"],
)
def test_cli_main_bad_setting_waits_the_file_error_delay(
    tmp_path: Path,
    text: str,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    root_logging: logging.Logger,
) -> None:
    """A bad setting exits 78, waiting the file's error-delay when no flag gives one."""
    config = tmp_path / "bifrost.toml"
    config.write_text(
        "error-delay = 0\n"
        + text
        + '[[route]]\nsources = ["s3://landing/p/"]\ntable = "ns.t"\n'
    )

    code = cli.main(["run", "--config", str(config), *flags])

    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 78
    assert len(lines) == 1
    assert lines[0].startswith(f"bifrost-async: configuration error: {message}")


@pytest.mark.parametrize(
    ("flags", "file_level", "level"),
    [
        (["--log-level", "warning"], "DEBUG", logging.WARNING),
        ([], "debug", logging.DEBUG),
    ],
    ids=["flag-wins", "file"],
)
def test_cli_configure_from_settings_applies_the_file_log_level(
    tmp_path: Path,
    flags: list[str],
    file_level: str,
    level: int,
    root_logging: logging.Logger,
) -> None:
    """Logging follows the file's log-level unless the --log-level flag was given."""
    config = tmp_path / "bifrost.toml"
    config.write_text(
        f'log-level = "{file_level}"\n'
        '[[route]]\nsources = ["s3://landing/p/"]\ntable = "ns.t"\n'
    )
    args = cli.build_parser().parse_args(["run", "--config", str(config), *flags])
    settings = load_settings({"log_level": args.log_level}, args.config)

    cli.configure_common(args)
    cli.configure_from_settings(args, settings)

    assert root_logging.level == level


def test_cli_parser_leaves_file_settings_unset() -> None:
    """Flags the file may also hold default to None, so the file can win."""
    args = cli.build_parser().parse_args(["run"])

    assert (args.log_level, args.metrics_addr, args.error_delay) == (None, None, None)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param(["--zero-copy"], "copy", id="bare-is-copy"),
        pytest.param(["--zero-copy", "in-place", "--once"], "in-place", id="in-place"),
    ],
)
def test_cli_zero_copy_flag_takes_an_optional_mode(
    arguments: list[str], expected: str | None
) -> None:
    """A bare --zero-copy means copy; a mode word may follow it."""
    from bifrost_async.cli import build_parser

    args = build_parser().parse_args(["run", "--source", "s3://b/p/", *arguments])

    assert args.zero_copy == expected


def test_cli_status_lines_stay_whole_when_piped(tmp_path: Path) -> None:
    """Off a terminal, a table's status line is one line, however long."""
    from bifrost_async.ledger import Ledger, ObjectOutcome, Owner

    state = f"sqlite:///{tmp_path / 'state.db'}"
    ledger = Ledger(state)
    me = Owner.for_this_process()
    ledger.register(me, 60)
    obj = ObjectRef("b", "k.parquet", 10, "e")
    table = "a_rather_long_namespace.with_an_even_longer_table_name_for_status"
    ledger.claim(table, me, [obj])
    ledger.begin_batch(table, me, "batch-1", [ObjectOutcome(obj, 3)])
    ledger.confirm_batch("batch-1", 1)
    ledger.close()

    done = run_command("status", "--state", state, env=dict(os.environ, COLUMNS="80"))

    assert done.returncode == 0, done.stderr
    assert any(
        line.startswith(f"{table}: 1 objects") and line.endswith("quarantined 0")
        for line in done.stdout.splitlines()
    ), done.stdout


def test_cli_configuration_error_is_a_json_line_with_log_format_json(
    tmp_path: Path,
) -> None:
    """With ``--log-format json`` the configuration error is one JSON log line."""
    done = run_command(
        "run",
        "--source",
        "s3://landing/x/",
        "--log-format",
        "json",
        "--error-delay",
        "0",
        cwd=tmp_path,
    )

    assert done.returncode == 78, done.stderr
    [line] = done.stderr.strip().splitlines()
    record = json.loads(line)
    assert (record["level"], record["event"]) == ("ERROR", "config.error")
    assert record["fields"]["error"].startswith("--table: no table given")


def test_cli_version_names_the_package_version() -> None:
    """``--version`` prints the command and the package's version."""
    from bifrost_async import __version__

    done = run_command("--version")

    assert done.returncode == 0
    assert done.stdout.strip() == f"bifrost-async {__version__}"
