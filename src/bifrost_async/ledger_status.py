"""What ``bifrost-async status`` shows: the ledger's totals, tables, passes and commits.

Read-only queries over the ledger's tables (``ledger_tables.py``), shaped as plain
dicts for the command's text and JSON forms.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .ledger_tables import batches_table, objects_table, passes_table

__all__ = ["OPEN_STATES", "read_status"]


def read_status(
    engine: Engine, events: list[dict[str, Any]], last: int = 5
) -> dict[str, Any]:
    """What the ledger holds: totals, quarantined objects, commits, passes, tables.

    The top-level ``ingested`` (a count) and ``quarantined`` (a list of objects
    with ``key`` and ``reason``) are read by external checks: keep their names.
    ``tables`` maps each table to its own totals, backlog, last pass and commit.
    """
    with engine.connect() as conn:
        counts = conn.execute(
            sa.select(
                objects_table.c.table_name,
                objects_table.c.state,
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(objects_table.c.size), 0),
                sa.func.coalesce(sa.func.sum(objects_table.c.rows), 0),
            ).group_by(objects_table.c.table_name, objects_table.c.state)
        ).all()
        quarantined = (
            conn.execute(
                sa.select(
                    objects_table.c.table_name,
                    objects_table.c.bucket,
                    objects_table.c.key,
                    objects_table.c.etag,
                    objects_table.c.reason,
                    objects_table.c.updated_at,
                )
                .where(objects_table.c.state == "quarantined")
                .order_by(objects_table.c.updated_at)
            )
            .mappings()
            .all()
        )
        commits = (
            conn.execute(
                sa.select(batches_table)
                .where(batches_table.c.state == "committed")
                .order_by(batches_table.c.committed_at.desc())
                .limit(last)
            )
            .mappings()
            .all()
        )
        passes = (
            conn.execute(
                sa.select(passes_table).order_by(passes_table.c.id.desc()).limit(200)
            )
            .mappings()
            .all()
        )
        tables = sorted(
            {row[0] for row in counts}
            | set(
                conn.execute(sa.select(batches_table.c.table_name).distinct()).scalars()
            )
        )
        last_commits = {
            table: conn.execute(
                sa.select(batches_table)
                .where(
                    batches_table.c.table_name == table,
                    batches_table.c.state == "committed",
                )
                .order_by(batches_table.c.committed_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
            for table in tables
        }

    pass_records = [read_pass(p) for p in passes]
    committed = [row for row in counts if row[1] == "committed"]
    return {
        "ingested": sum(int(row[2]) for row in committed),
        "bytes": sum(int(row[3]) for row in committed),
        "rows": sum(int(row[4]) for row in committed),
        "in_flight": sum(int(row[2]) for row in counts if row[1] in OPEN_STATES),
        "quarantined": [
            {
                "table": q["table_name"],
                "bucket": q["bucket"],
                "key": q["key"],
                "etag": q["etag"],
                "reason": q["reason"],
                "at": q["updated_at"],
            }
            for q in quarantined
        ],
        "last_commits": [commit_record(c) for c in commits],
        "last_pass": pass_records[0] if pass_records else None,
        "tables": {
            table: table_status(
                table,
                [row for row in counts if row[0] == table],
                last_commits.get(table),
                pass_records,
            )
            for table in sorted(set(tables) | tables_in_passes(pass_records))
        },
        "events": events,
    }


OPEN_STATES = ("claimed", "pending")


def read_pass(row: Any) -> dict[str, Any]:
    """A pass row as a plain record: times, its duration and its summary's counts."""
    return {
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "seconds": row["finished_at"] - row["started_at"],
        **json.loads(row["summary"]),
    }


def tables_in_passes(passes: Sequence[dict[str, Any]]) -> set[str]:
    """Every table named in the per-table counts of these passes."""
    return {table for record in passes for table in record.get("tables") or {}}


def commit_record(row: Any) -> dict[str, Any]:
    """A committed batch as a plain record."""
    return {
        "batch_id": row["batch_id"],
        "table": row["table_name"],
        "snapshot_id": row["snapshot_id"],
        "objects": row["objects"],
        "rows": row["rows"],
        "bytes": row["bytes"],
        "at": row["committed_at"],
    }


def table_status(
    table: str,
    counts: Sequence[Any],
    last_commit: Any,
    passes: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """One table's part of :meth:`Ledger.status`.

    ``backlog`` is what the table's latest pass listed as new and did not finish
    (ingest or quarantine); None when no pass of this table is on record.
    """
    by_state = {row[1]: (int(row[2]), int(row[3]), int(row[4])) for row in counts}
    committed = by_state.get("committed", (0, 0, 0))
    last_pass = next((p for p in passes if table in (p.get("tables") or {})), None)
    pass_status: dict[str, Any] | None = None
    backlog: int | None = None
    if last_pass is not None:
        own = last_pass["tables"][table]
        backlog = max(0, own["new"] - own["ingested"] - own["quarantined"])
        pass_status = {
            "started_at": last_pass["started_at"],
            "finished_at": last_pass["finished_at"],
            "seconds": last_pass["seconds"],
            **{
                name: own[name] for name in ("listed", "new", "ingested", "quarantined")
            },
        }

    return {
        "ingested": committed[0],
        "bytes": committed[1],
        "rows": committed[2],
        "in_flight": sum(by_state.get(state, (0, 0, 0))[0] for state in OPEN_STATES),
        "quarantined": by_state.get("quarantined", (0, 0, 0))[0],
        "backlog": backlog,
        "last_pass": pass_status,
        "last_commit": commit_record(last_commit) if last_commit is not None else None,
    }
