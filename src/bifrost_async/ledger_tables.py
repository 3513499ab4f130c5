"""The ledger's database: its five tables, the engine and what differs by dialect.

SQLite (one writer, WAL and a busy timeout) or PostgreSQL (several writers; an advisory
lock serializes creating the tables). Database URLs are masked before they reach a
message. What the rows mean, and the protocol over them, is ``ledger.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .errors import ConfigError

__all__ = [
    "batches_table",
    "check_sqlite_location",
    "check_tables",
    "create_engine",
    "create_tables",
    "describe_url",
    "events_table",
    "insert_ignoring_duplicates",
    "objects_table",
    "owners_table",
    "passes_table",
]

# The PostgreSQL advisory lock key that serializes creating the ledger's tables.
_DDL_LOCK = 0x62696672

metadata = sa.MetaData()

objects_table = sa.Table(
    "bifrost_objects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("bucket", sa.String(255), nullable=False),
    sa.Column("key", sa.String(1024), nullable=False),
    sa.Column("etag", sa.String(255), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("claim_id", sa.String(64)),
    sa.Column("batch_id", sa.String(64)),
    sa.Column("rows", sa.BigInteger),
    sa.Column("snapshot_id", sa.BigInteger),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint(
        "table_name", "bucket", "key", "etag", name="uq_bifrost_object"
    ),
    sa.Index("ix_bifrost_objects_state", "table_name", "state"),
    sa.Index("ix_bifrost_objects_batch", "batch_id"),
    sa.Index("ix_bifrost_objects_claim", "claim_id"),
)

batches_table = sa.Table(
    "bifrost_batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("table_name", sa.String(255), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("objects", sa.Integer, nullable=False),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("snapshot_id", sa.BigInteger),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("committed_at", sa.Float),
    sa.Index("ix_bifrost_batches_state", "table_name", "state"),
)

owners_table = sa.Table(
    "bifrost_owners",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
)

passes_table = sa.Table(
    "bifrost_passes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
)

events_table = sa.Table(
    "bifrost_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)


def create_engine(url: str) -> Engine:
    """An engine for the ledger; SQLite gets WAL and a busy timeout for many writers."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def set_sqlite_pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine

    return sa.create_engine(url, pool_pre_ping=True)


def describe_url(url: str) -> str:
    """A database URL fit for messages: any password is masked."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def check_sqlite_location(url: str, create: bool) -> None:
    """Refuse a SQLite ledger whose folder (or, without ``create``, file) is missing.

    SQLite would otherwise fail with "unable to open database file", or create an
    empty ledger where a mistyped path was meant to show an existing one.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (
        None,
        "",
        ":memory:",
    ):
        return

    path = Path(parsed.database).expanduser()
    if not path.parent.is_dir():
        raise ConfigError(
            f"--state: folder {str(path.parent)!r} of the ledger does not exist"
        )

    if not create and not path.exists():
        raise ConfigError(
            f"--state: no ledger at {str(path)!r}; a run creates it there"
        )


def check_tables(engine: Engine, url: str) -> None:
    """Refuse a database that holds no ledger (for commands that only read it)."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table(objects_table.name):
            raise ConfigError(
                f"--state: {describe_url(url)!r} holds no ledger; a run creates it"
            )


def create_tables(engine: Engine) -> None:
    """Create the ledger's tables where they are missing.

    On PostgreSQL, writers that start at once on an empty database would race to
    create the same tables (a unique violation in ``pg_type``); a transaction-scoped
    advisory lock lets one create them while the others wait and then find them.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DDL_LOCK}
            )

        metadata.create_all(conn)


def insert_ignoring_duplicates(engine: Engine, table: sa.Table) -> Any:
    """An INSERT that skips rows breaking a unique rule, in the engine's dialect."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()

    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()
