"""The ``bifrost-async`` command: run, status, retry-quarantined and demo.

Exit codes: 0 a clean end (a limit reached, a drained backfill, a signal); 78 a
configuration error, with one line naming the setting; 1 a run that could not go on
(S3 or the catalog failing past the retry budget); anything else a crash. A
configuration error waits ``--error-delay`` seconds before exiting, so a supervisor that
restarts it does not spin.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from .config import Settings, load_settings, normalize_state_url
from .errors import BifrostError, ConfigError
from .logs import configure_logging

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bifrost-async", description="Sync Parquet objects from S3 into Iceberg."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest new objects, pass after pass")
    run.add_argument("--source", action="append", help="s3://bucket/prefix/ (repeatable)")
    run.add_argument("--table", help="namespace.table to append to")
    run.add_argument("--catalog", help="pyiceberg catalog name (default: default)")
    run.add_argument("--config", help="TOML file with settings and [[route]] tables")
    run.add_argument("--state", help="ledger URL: sqlite:///path or postgresql://...")
    run.add_argument("--once", action="store_true", default=None,
                     help="make passes until one finds nothing new, then exit")
    run.add_argument("--concurrency", type=int, help="downloads in flight (default 16)")
    run.add_argument("--max-inflight-bytes", help="bytes in flight (default 256MiB)")
    run.add_argument("--max-iterations", type=int, help="exit 0 after N passes")
    run.add_argument("--max-bytes", help="exit 0 after downloading this much (e.g. 10GB)")
    run.add_argument("--max-rss", help="exit 0 once resident memory reaches this")
    run.add_argument("--max-uptime", help="exit 0 after this long (e.g. 6h)")
    run.add_argument("--poll-interval", help="seconds between passes (default 30)")
    run.add_argument("--grace-period", help="seconds a signalled stop may take (default 20)")
    run.add_argument("--batch-max-files", type=int, help="files per commit (default 200)")
    run.add_argument("--batch-max-bytes", help="bytes per commit (default 512MiB)")
    run.add_argument("--batch-max-age", help="seconds a batch may wait (default 10)")
    run.add_argument("--evolution", choices=("add", "freeze", "discard"),
                     help="what new columns do (default add)")
    run.add_argument("--on-changed", choices=("ignore", "ingest"),
                     help="an object rewritten with a new ETag (default ignore)")
    run.add_argument("--transform", help="module:function over a polars DataFrame")
    run.add_argument("--include", help="comma-separated name patterns that are data")
    run.add_argument("--s3-endpoint", help="override botocore's S3 endpoint")
    run.add_argument("--heartbeat-file", help="a file touched after every pass")
    run.add_argument("--zero-copy", action="store_true", default=None,
                     help="keep objects that match the table exactly as they are")
    add_common(run)

    status = commands.add_parser("status", help="what the ledger holds")
    status.add_argument("--state", default=Settings.state, help="ledger URL")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_common(status)

    retry = commands.add_parser(
        "retry-quarantined", help="put quarantined objects back for the next pass"
    )
    retry.add_argument("--state", default=Settings.state, help="ledger URL")
    retry.add_argument("--key", action="append", help="only this key (repeatable)")
    add_common(retry)

    demo = commands.add_parser("demo", help="a local end-to-end sync with sample data")
    demo.add_argument("--workdir", default="bifrost-demo", help="working folder")
    demo.add_argument("--files", type=int, default=12, help="files per prefix")
    demo.add_argument("--rows", type=int, default=8_000, help="rows per file")
    add_common(demo)
    return parser


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes."""
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    parser.add_argument("--log-format", choices=("text", "json"), default=None,
                        help="text (default) or json lines")
    parser.add_argument("--error-delay", type=float, default=None,
                        help="seconds to wait before exiting 78 (default 5 when not "
                        "on a terminal, else 0)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format or "text")
    try:
        return dispatch(args)
    except ConfigError as exc:
        print(f"bifrost-async: configuration error: {exc}", file=sys.stderr)
        delay = args.error_delay
        if delay is None:
            delay = 0.0 if sys.stderr.isatty() else 5.0
        time.sleep(delay)
        return EXIT_CONFIG
    except BifrostError as exc:
        logger.error("run.failed error=%s", exc)
        return EXIT_FAILED


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen subcommand."""
    if args.command == "run":
        return command_run(args)

    if args.command == "status":
        return command_status(args)

    if args.command == "retry-quarantined":
        return command_retry(args)

    return command_demo(args)


def command_run(args: argparse.Namespace) -> int:
    """``bifrost-async run``."""
    from .runner import run

    flags = {
        name: getattr(args, name)
        for name in (
            "source", "table", "catalog", "state", "once", "concurrency",
            "max_inflight_bytes", "max_iterations", "max_bytes", "max_rss",
            "max_uptime", "poll_interval", "grace_period", "batch_max_files",
            "batch_max_bytes", "batch_max_age", "evolution", "on_changed", "transform",
            "include", "s3_endpoint", "heartbeat_file", "log_format", "zero_copy",
        )
    }
    settings = load_settings(flags, args.config)
    if settings.log_format != (args.log_format or "text"):
        configure_logging(args.log_level, settings.log_format)

    result = anyio.run(run, settings)
    logger.info("%s", result.summary())
    return EXIT_OK


def command_status(args: argparse.Namespace) -> int:
    """``bifrost-async status``."""
    from .ledger import Ledger

    ledger = Ledger(normalize_state_url(args.state))
    try:
        status = ledger.status()
    finally:
        ledger.close()

    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print_status(status)

    return EXIT_OK


def print_status(status: dict[str, Any]) -> None:
    """The human form of ``status``."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(
        f"ingested [bold]{status['ingested']}[/] objects, {status['rows']:,} rows, "
        f"{status['bytes'] / 1e6:.1f} MB; in flight {status['in_flight']}; "
        f"quarantined [bold]{len(status['quarantined'])}[/]"
    )
    last = status["last_pass"]
    if last:
        ago = time.time() - last["finished_at"]
        console.print(
            f"last pass {ago:.0f}s ago, took {last['seconds']:.1f}s: listed "
            f"{last['listed']}, new {last['new']}, ingested {last['ingested']}"
        )

    if status["last_commits"]:
        commits = Table("batch", "table", "snapshot", "objects", "rows", title="last commits")
        for c in status["last_commits"]:
            commits.add_row(c["batch_id"], c["table"], str(c["snapshot_id"]),
                            str(c["objects"]), str(c["rows"]))
        console.print(commits)

    if status["quarantined"]:
        quarantined = Table("key", "reason", title="quarantined")
        for q in status["quarantined"]:
            quarantined.add_row(f"s3://{q['bucket']}/{q['key']}", q["reason"])
        console.print(quarantined)


def command_retry(args: argparse.Namespace) -> int:
    """``bifrost-async retry-quarantined``."""
    from .ledger import Ledger

    ledger = Ledger(normalize_state_url(args.state))
    try:
        released = ledger.retry_quarantined(args.key)
    finally:
        ledger.close()

    for item in released:
        print(f"retry s3://{item['bucket']}/{item['key']} (was: {item['reason']})")

    print(f"{len(released)} object(s) will be taken again on the next pass")
    return EXIT_OK


def command_demo(args: argparse.Namespace) -> int:
    """``bifrost-async demo``."""
    from .demo import run_demo

    return run_demo(Path(args.workdir).resolve(), args.files, args.rows)
