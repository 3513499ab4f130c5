"""The ``bifrost-async`` command: run, status, retry-quarantined and demo.

Exit codes: 0 a clean end (a limit reached, a drained backfill, a signal); 78 a
configuration error, with one line naming the setting; 1 a run that could not go on
(S3, the catalog or the ledger failing past the retry budget); 2 a command line that
argparse refused; 70 a crash (a bug: the traceback is logged); 130 a second signal or
the grace period running out. A configuration error waits ``--error-delay`` seconds
before exiting, so a supervisor that restarts it does not spin.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import __version__
from .config import Settings, find_error_delay, load_settings, normalize_state_url
from .errors import BifrostError, ConfigError, single_error
from .logs import configure_logging
from .setting_values import LOG_LEVELS, parse_error_delay, read_log_level
from .signals import exit_on_signal, ignore_signals

if TYPE_CHECKING:
    from .hooks import Hooks

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 78
EXIT_CRASH = 70


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bifrost-async", description="Sync Parquet objects from S3 into Iceberg."
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="ingest new objects, pass after pass")
    add_route_flags(run)
    run.add_argument(
        "--once",
        action="store_true",
        default=None,
        help="make passes until one finds nothing new, then exit",
    )
    run.add_argument("--max-inflight-bytes", help="bytes in flight (default 256MiB)")
    run.add_argument("--max-iterations", type=int, help="exit 0 after N passes")
    run.add_argument(
        "--max-bytes", help="exit 0 after downloading this much (e.g. 10GB)"
    )
    run.add_argument("--max-rss", help="exit 0 once resident memory reaches this")
    run.add_argument("--max-uptime", help="exit 0 after this long (e.g. 6h)")
    run.add_argument("--poll-interval", help="seconds between passes (default 30)")
    run.add_argument(
        "--expire-snapshots-after",
        help="expire the table's snapshots older than this (at least 1h; default off)",
    )
    run.add_argument(
        "--grace-period", help="seconds a signalled stop may take (default 20)"
    )
    run.add_argument(
        "--batch-max-files", type=int, help="files per commit (default 200)"
    )
    run.add_argument("--batch-max-bytes", help="bytes per commit (default 512MiB)")
    run.add_argument("--batch-max-age", help="seconds a batch may wait (default 10)")
    run.add_argument("--heartbeat-file", help="a file touched after every pass")
    run.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress bar, even on a terminal",
    )
    run.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port"
    )
    run.add_argument(
        "--metrics-addr", help="address the metrics server binds (default 0.0.0.0)"
    )
    run.add_argument(
        "--lineage",
        action="store_true",
        default=None,
        help="add source URI, ETag and ingestion time to every row",
    )
    run.add_argument(
        "--quarantine-prefix", help="s3://bucket/prefix/ to copy quarantined objects to"
    )
    run.add_argument(
        "--stream-above",
        help="decoded size above which a file is written in chunks (default 128MiB)",
    )
    run.add_argument(
        "--zero-copy",
        nargs="?",
        const="copy",
        choices=("copy", "in-place", "off"),
        default=None,
        help="keep objects that match the table exactly as they are: copied into "
        "the warehouse (copy, the default) or registered where they lie (in-place)",
    )
    add_common(run)

    validate = commands.add_parser(
        "validate",
        help="a dry run: what a run would ingest, land, evolve or quarantine",
    )
    add_route_flags(validate)
    validate.add_argument(
        "--limit", type=int, help="check only the first N new objects of each table"
    )
    validate.add_argument("--json", action="store_true", help="print JSON")
    add_common(validate)

    status = commands.add_parser("status", help="what the ledger holds")
    status.add_argument("--state", default=Settings.state, help="ledger URL")
    status.add_argument("--json", action="store_true", help="print JSON")
    add_common(status)

    retry = commands.add_parser(
        "retry-quarantined", help="put quarantined objects back for the next pass"
    )
    retry.add_argument("--state", default=Settings.state, help="ledger URL")
    retry.add_argument(
        "--key", action="append", help="only this key or s3://bucket/key (repeatable)"
    )
    retry.add_argument("--table", help="only objects of this table")
    add_common(retry)

    demo = commands.add_parser("demo", help="a local end-to-end sync with sample data")
    demo.add_argument("--workdir", default="bifrost-demo", help="working folder")
    demo.add_argument("--files", type=int, default=12, help="files per prefix")
    demo.add_argument("--rows", type=int, default=8_000, help="rows per file")
    add_common(demo)
    return parser


def add_route_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that say where objects come from and where they go (run, validate)."""
    parser.add_argument(
        "--source", action="append", help="s3://bucket/prefix/ (repeatable)"
    )
    parser.add_argument("--table", help="namespace.table to append to")
    parser.add_argument("--catalog", help="pyiceberg catalog name (default: default)")
    parser.add_argument("--config", help="TOML file with settings and [[route]] tables")
    parser.add_argument(
        "--state", help="ledger URL: sqlite:///path or postgresql://user@host/db"
    )
    parser.add_argument(
        "--concurrency", type=int, help="downloads in flight (default 16)"
    )
    parser.add_argument(
        "--evolution",
        choices=("add", "freeze", "discard"),
        help="what new columns do (default add)",
    )
    parser.add_argument(
        "--on-changed",
        choices=("ignore", "ingest"),
        help="an object rewritten with a new ETag (default ignore)",
    )
    parser.add_argument("--transform", help="module:function over a polars DataFrame")
    parser.add_argument("--include", help="comma-separated name patterns that are data")
    parser.add_argument("--s3-endpoint", help="override botocore's S3 endpoint")
    parser.add_argument(
        "--naive-timezone",
        help="IANA zone naive timestamps are read in (default: refuse)",
    )


def add_common(parser: argparse.ArgumentParser) -> None:
    """Flags every subcommand takes."""
    parser.add_argument("--log-level", help=f"{', '.join(LOG_LEVELS)} (default INFO)")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="text (default) or json lines",
    )
    parser.add_argument(
        "--error-delay",
        help="seconds to wait before exiting 78 (default 5 when not "
        "on a terminal, else 0)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return its exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        exit_on_signal()

    try:
        configure_common(args)
        return dispatch_unwrapped(args)
    except ConfigError as exc:
        if args.log_format == "json":
            logger.error("config.error error=%s", exc)
        else:
            print(f"bifrost-async: configuration error: {exc}", file=sys.stderr)

        delay = find_error_delay(args.error_delay, getattr(args, "config", None))
        if delay is None:
            delay = 0.0 if sys.stderr.isatty() else 5.0
        time.sleep(delay)
        return EXIT_CONFIG
    except BifrostError as exc:
        logger.error("run.failed error=%s", exc)
        return EXIT_FAILED
    except BrokenPipeError:
        # The reader of our output went away (``status --json | head``): not a fault.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception:
        # Through the log, so the traceback is redacted like every other line.
        logger.critical("run.crashed", exc_info=True)
        return EXIT_CRASH


def dispatch_unwrapped(args: argparse.Namespace) -> int:
    """Run the chosen subcommand; one of our errors comes out of task groups alone."""
    try:
        return dispatch(args)
    except BaseExceptionGroup as group:
        raise single_error(group) from None


def configure_common(args: argparse.Namespace) -> None:
    """Check the flags every subcommand takes, then configure logging from them."""
    if args.error_delay is not None:
        parse_error_delay(args.error_delay)

    configure_logging(
        read_log_level(args.log_level or "INFO"), args.log_format or "text"
    )


def configure_from_settings(args: argparse.Namespace, settings: Settings) -> None:
    """Configure logging again when the file asks for another level or format."""
    flags = ((args.log_level or "INFO").upper(), args.log_format or "text")
    if (settings.log_level, settings.log_format) != flags:
        configure_logging(settings.log_level, settings.log_format)


def dispatch(args: argparse.Namespace) -> int:
    """Run the chosen subcommand."""
    if args.command == "run":
        return command_run(args)

    if args.command == "status":
        return command_status(args)

    if args.command == "validate":
        return command_validate(args)

    if args.command == "retry-quarantined":
        return command_retry(args)

    return command_demo(args)


def command_run(args: argparse.Namespace) -> int:
    """``bifrost-async run``."""
    from .hooks import combine_hooks
    from .progress import ProgressDisplay, is_progress_wanted
    from .runner import run

    flags = {
        name: getattr(args, name)
        for name in (
            "source",
            "table",
            "catalog",
            "state",
            "once",
            "concurrency",
            "max_inflight_bytes",
            "max_iterations",
            "max_bytes",
            "max_rss",
            "max_uptime",
            "poll_interval",
            "grace_period",
            "batch_max_files",
            "batch_max_bytes",
            "batch_max_age",
            "evolution",
            "on_changed",
            "transform",
            "include",
            "s3_endpoint",
            "heartbeat_file",
            "log_level",
            "log_format",
            "error_delay",
            "progress",
            "metrics_port",
            "metrics_addr",
            "lineage",
            "quarantine_prefix",
            "naive_timezone",
            "stream_above",
            "zero_copy",
            "expire_snapshots_after",
        )
    }
    settings = load_settings(flags, args.config)
    if settings.crash_markers:
        from .isolation import enable_crash_log

        enable_crash_log(settings.crash_markers)

    configure_from_settings(args, settings)
    with contextlib.ExitStack() as stack:
        hooks = [open_metrics(stack, settings.metrics_port, settings.metrics_addr)]
        if is_progress_wanted(sys.stderr, settings.once, settings.progress):
            hooks.append(stack.enter_context(ProgressDisplay()).hooks())

        result = anyio.run(run, settings, combine_hooks(*hooks))

    logger.info("%s", result.summary())
    ignore_signals()
    return EXIT_OK


def open_metrics(stack: contextlib.ExitStack, port: int | None, addr: str) -> Hooks:
    """Metrics hooks served on ``port`` until ``stack`` closes; none without a port."""
    from .hooks import Hooks
    from .metrics import Metrics

    if port is None:
        return Hooks()

    metrics = Metrics()
    stack.enter_context(metrics.serve(port, addr))
    return metrics.hooks()


def command_validate(args: argparse.Namespace) -> int:
    """``bifrost-async validate``: a dry run that commits nothing."""
    from .validate import validate

    flags = {
        name: getattr(args, name)
        for name in (
            "source",
            "table",
            "catalog",
            "state",
            "concurrency",
            "evolution",
            "on_changed",
            "transform",
            "include",
            "s3_endpoint",
            "naive_timezone",
            "log_level",
            "log_format",
            "error_delay",
        )
    }
    settings = load_settings(flags, args.config)
    configure_from_settings(args, settings)
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit: {args.limit!r} must be at least 1")

    checks = anyio.run(validate, settings, args.limit)
    if args.json:
        report = {"tables": {check.table: check.as_dict() for check in checks}}
        print(json.dumps(report, indent=2))
    else:
        print_validation(checks)

    return EXIT_OK


def open_console() -> Any:
    """A rich console for stdout that never wraps a line and exits 0 on a closed pipe.

    Lines are printed whole when the output is not a terminal (``status | grep``), and
    a reader that stops early (``status | head``) ends the command cleanly: rich's own
    answer to a broken pipe is exit 1.
    """
    from rich.console import Console

    class PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError  # main() takes it as a clean end

    return PipeConsole(highlight=False, soft_wrap=True)


def print_validation(checks: Sequence[Any]) -> None:
    """The human form of ``validate``: one table of verdicts per route."""
    from rich.table import Table
    from rich.text import Text

    from .progress import format_bytes

    styles = {
        "land": "green",
        "create": "green",
        "evolve": "cyan",
        "quarantine": "red",
        "unchecked": "yellow",
    }
    console = open_console()
    for check in checks:
        table = Table("object", "size", "rows", "verdict", "detail", title=check.table)
        table.columns[0].overflow = "fold"
        for v in check.objects:
            table.add_row(
                v.key,
                format_bytes(v.size),
                "" if v.rows is None else f"{v.rows:,}",
                Text(v.action, style=styles[v.action]),
                describe_verdict(v),
            )

        if check.objects:
            console.print(table)

        counts = ", ".join(f"{n} {a}" for a, n in check.counts().items() if n)
        existing = "exists" if check.exists else "does not exist yet"
        console.print(
            f"{check.table} ({existing}): listed {check.listed:,}, new {check.new:,}, "
            f"checked {len(check.objects):,}"
            + (f": {counts}" if counts else "")
            + "; nothing was committed"
        )


def describe_verdict(verdict: Any) -> str:
    """The detail column of ``validate``: new columns, or the reason without the URI."""
    parts = []
    if verdict.columns:
        names = verdict.columns
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        parts.append(f"{len(names)} column(s): {shown}")

    if verdict.reason:
        parts.append(verdict.reason.removeprefix(f"{verdict.uri}: "))

    return "; ".join(parts)


def command_status(args: argparse.Namespace) -> int:
    """``bifrost-async status``."""
    from .ledger import Ledger

    ledger = Ledger(normalize_state_url(args.state), create=False)
    try:
        status = ledger.status()
    finally:
        ledger.close()

    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print_status(status)

    return EXIT_OK


def print_status(status: dict[str, Any], now: float | None = None) -> None:
    """The human form of ``status``: totals, then one block per table."""
    from rich.table import Table

    now = time.time() if now is None else now
    console = open_console()
    console.print(
        f"ingested [bold]{status['ingested']:,}[/] objects, {status['rows']:,} rows, "
        f"{status['bytes'] / 1e6:,.1f} MB; in flight {status['in_flight']}; "
        f"quarantined [bold]{len(status['quarantined'])}[/]"
    )
    for name, table in status["tables"].items():
        backlog = "?" if table["backlog"] is None else f"{table['backlog']:,}"
        console.print(
            f"[bold]{name}[/]: {table['ingested']:,} objects, {table['rows']:,} rows, "
            f"{table['bytes'] / 1e6:,.1f} MB; backlog {backlog}; in flight "
            f"{table['in_flight']}; quarantined {table['quarantined']}"
        )
        last_pass, commit = table["last_pass"], table["last_commit"]
        if last_pass:
            console.print(
                f"  last pass {describe_age(now, last_pass['finished_at'])}, took "
                f"{last_pass['seconds']:.1f}s: listed {last_pass['listed']:,}, new "
                f"{last_pass['new']:,}, ingested {last_pass['ingested']:,}, "
                f"quarantined {last_pass['quarantined']:,}"
            )

        if commit:
            console.print(
                f"  last commit {describe_age(now, commit['at'])}: snapshot "
                f"{commit['snapshot_id']}, {commit['objects']:,} objects, "
                f"{commit['rows']:,} rows"
            )

    if status["quarantined"]:
        quarantined = Table("table", "object", "reason", title="quarantined")
        quarantined.columns[1].overflow = "fold"
        for q in status["quarantined"]:
            uri = f"s3://{q['bucket']}/{q['key']}"
            reason = (q["reason"] or "").removeprefix(f"{uri}: ")
            quarantined.add_row(q["table"], uri, reason)

        console.print(quarantined)

    for event in status.get("events", [])[:1]:
        objects = event["detail"].get("objects", [])
        console.print(
            f"last operator action: {event['action']} of {len(objects)} object(s), "
            f"{describe_age(now, event['at'])}"
        )


def describe_age(now: float, at: float | None) -> str:
    """``12s ago``, ``5m ago``, ``3h ago`` or ``2d ago``; empty when never."""
    if not at:
        return ""

    seconds = max(0.0, now - at)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit} ago"

    return f"{seconds:.0f}s ago"


def command_retry(args: argparse.Namespace) -> int:
    """``bifrost-async retry-quarantined``."""
    from .ledger import Ledger

    ledger = Ledger(normalize_state_url(args.state), create=False)
    try:
        released = ledger.retry_quarantined(args.key, args.table)
    finally:
        ledger.close()

    for item in released:
        uri = f"s3://{item['bucket']}/{item['key']}"
        reason = (item["reason"] or "").removeprefix(f"{uri}: ")
        print(f"retry {uri} in {item['table']} (was: {reason})")

    print(f"{len(released)} object(s) will be taken again on the next pass")
    return EXIT_OK


def command_demo(args: argparse.Namespace) -> int:
    """``bifrost-async demo``."""
    from .demo import run_demo

    return run_demo(Path(args.workdir).resolve(), args.files, args.rows)
