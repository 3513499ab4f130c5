"""Ledger scale: plan one pass over a million ledger entries and a million listed keys.

Fills a fresh ledger (SQLite in a temporary folder, and PostgreSQL in a schema of its
own when the server answers) with ``--entries`` committed objects of one table, lists
``--listed`` objects of which all but ``--new`` are already in the ledger, and times
``Ledger.select_new`` (the set operation of every pass) and ``Ledger.claim`` of the new
ones. The figures are printed and written to ``benchmarks/results/ledger_scale.json``.

    .venv/bin/python benchmarks/ledger_scale.py --entries 1000000 --listed 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bifrost_async.budget import current_rss
from bifrost_async.discovery import ObjectRef
from bifrost_async.ledger import Ledger, Owner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.processes import open_postgres_schema  # noqa: E402  # needs ROOT on the path

TABLE = "bench.events"
BUCKET = "landing"
POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def parse_args() -> argparse.Namespace:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--listed", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=10_000)
    parser.add_argument("--postgres", default=POSTGRES, help="'' to skip PostgreSQL")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/ledger_scale.json"
    )
    return parser.parse_args()


def key_of(number: int) -> str:
    """The key of object ``number``: a date partition and a part file."""
    month = 1 + number // 100_000 % 12
    return f"events/dt=2024-{month:02d}-01/part-{number:08d}.parquet"


def fill(ledger: Ledger, entries: int) -> float:
    """Insert ``entries`` committed objects in one INSERT ... SELECT; return seconds."""
    started = time.monotonic()
    dialect = ledger.engine.dialect.name
    if dialect == "postgresql":
        numbers = "SELECT generate_series(0, :last) AS n"
        key = (
            "'events/dt=2024-' || lpad((1 + n / 100000 % 12)::text, 2, '0') || "
            "'-01/part-' || lpad(n::text, 8, '0') || '.parquet'"
        )
    else:
        numbers = (
            "WITH RECURSIVE seq(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq "
            "WHERE n < :last) SELECT n FROM seq"
        )
        key = (
            "'events/dt=2024-' || printf('%02d', 1 + n / 100000 % 12) || "
            "'-01/part-' || printf('%08d', n) || '.parquet'"
        )

    statement = sa.text(
        "INSERT INTO bifrost_objects (table_name, bucket, key, etag, size, state, "
        "owner, batch_id, rows, updated_at) "
        f"SELECT :table, :bucket, {key}, 'e' || n, 1024, 'committed', 'bench', "
        f"'b' || (n / 200), 10, 0 FROM ({numbers}) AS numbers"
    )
    with ledger.engine.begin() as conn:
        conn.execute(statement, {"table": TABLE, "bucket": BUCKET, "last": entries - 1})

    if dialect == "postgresql":
        with ledger.engine.begin() as conn:
            conn.execute(sa.text("ANALYZE bifrost_objects"))

    return time.monotonic() - started


def listing(entries: int, listed: int, new: int) -> list[ObjectRef]:
    """``listed`` objects in key order: all in the ledger but the last ``new``."""
    first = entries - (listed - new)
    numbers = range(first, first + listed)
    return sorted(ObjectRef(BUCKET, key_of(n), 1024, f"e{n}") for n in numbers)


def measure(ledger: Ledger, args: argparse.Namespace) -> dict[str, Any]:
    """Fill the ledger, then time one select and one claim."""
    filled = fill(ledger, args.entries)
    listed = listing(args.entries, args.listed, args.new)
    rss_before = current_rss()

    started = time.monotonic()
    fresh = ledger.select_new(TABLE, listed)
    select_seconds = time.monotonic() - started
    rss_after = current_rss()
    if len(fresh) != args.new:
        raise AssertionError(f"select_new found {len(fresh)} new, expected {args.new}")

    owner = Owner.for_this_process()
    ledger.register(owner, 60)
    started = time.monotonic()
    won = ledger.claim(TABLE, owner, fresh)
    claim_seconds = time.monotonic() - started
    if len(won) != args.new:
        raise AssertionError(f"claimed {len(won)}, expected {args.new}")

    started = time.monotonic()
    again = ledger.select_new(TABLE, listed)
    second_select = time.monotonic() - started
    if again:
        raise AssertionError(f"{len(again)} objects still new after the claim")

    return {
        "fill_seconds": round(filled, 2),
        "select_new_seconds": round(select_seconds, 2),
        "select_new_again_seconds": round(second_select, 2),
        "claim_seconds": round(claim_seconds, 2),
        "claimed": len(won),
        "rss_growth_mb_during_select": round((rss_after - rss_before) / 1e6, 1),
    }


@contextmanager
def sqlite_ledger() -> Iterator[Ledger]:
    """A ledger in a SQLite file of a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(f"sqlite:///{Path(folder) / 'ledger.db'}")
        try:
            yield ledger
        finally:
            ledger.close()


@contextmanager
def postgres_ledger(url: str) -> Iterator[Ledger]:
    """A ledger in a fresh PostgreSQL schema, dropped afterwards."""
    with open_postgres_schema(url) as schema_url:
        ledger = Ledger(schema_url)
        try:
            yield ledger
        finally:
            ledger.close()


def main() -> None:
    """Measure on SQLite and, where it answers, PostgreSQL."""
    args = parse_args()
    report: dict[str, Any] = {
        "entries": args.entries,
        "listed": args.listed,
        "new": args.new,
    }
    with sqlite_ledger() as ledger:
        report["sqlite"] = measure(ledger, args)
        print("sqlite", json.dumps(report["sqlite"]), flush=True)

    if args.postgres:
        with postgres_ledger(args.postgres) as ledger:
            report["postgresql"] = measure(ledger, args)
            print("postgresql", json.dumps(report["postgresql"]), flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
