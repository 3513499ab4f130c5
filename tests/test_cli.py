"""The command as users run it: exit codes, the summary line and ``status --json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

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
        "run",
        "--source",
        "s3://landing/orders/",
        "--table",
        "ns.t",
        "--once",
        "--state",
        str(tmp_path / "state.db"),
        "--s3-endpoint",
        endpoint,
        env=catalog_env,
        cwd=tmp_path,
    )

    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
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
