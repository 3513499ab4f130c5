"""The ledger on its own: owners alive or gone, claims, selection of changed objects."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from bifrost_async.discovery import ObjectRef
from bifrost_async.ledger import Ledger, ObjectOutcome, Owner

from .processes import open_postgres_schema

TABLE = "ns.events"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A fresh SQLite ledger."""
    opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield opened
    opened.close()


def owner_of(process: subprocess.Popen[bytes], host: str | None = None) -> Owner:
    """The ledger's owner record for a child process."""
    return Owner(
        owner_id=uuid.uuid4().hex,
        host=host or socket.gethostname(),
        pid=process.pid,
        started_at=psutil.Process(process.pid).create_time(),
    )


def sleeper() -> subprocess.Popen[bytes]:
    """A child process that sleeps until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def refs(*keys: str, etag: str = "e1") -> list[ObjectRef]:
    """Object references in bucket ``b`` with one ETag."""
    return [ObjectRef("b", key, 10, etag) for key in keys]


def test_dead_owners_sees_a_killed_process_on_this_host(ledger: Ledger) -> None:
    """A SIGKILLed owner is gone at once, before and after its parent reaps it."""
    me = Owner.for_this_process()
    child = sleeper()
    try:
        other = owner_of(child)
        ledger.register(me, 60)
        ledger.register(other, 600)
        assert ledger.dead_owners(me) == set()

        child.send_signal(signal.SIGKILL)
        time.sleep(0.2)  # a zombie now: killed, not reaped
        assert ledger.dead_owners(me) == {other.owner_id}
    finally:
        child.kill()
        child.wait()

    assert ledger.dead_owners(me) == {other.owner_id}


def test_dead_owners_waits_out_the_lease_of_another_host(ledger: Ledger) -> None:
    """An owner on another host is alive while its lease runs, gone after it."""
    me = Owner.for_this_process()
    far = Owner(uuid.uuid4().hex, "elsewhere.example", 1, time.time())
    ledger.register(me, 60)
    ledger.register(far, 60)
    assert ledger.dead_owners(me) == set()

    ledger.renew(far, -1)
    assert ledger.dead_owners(me) == {far.owner_id}


def test_dead_owners_sees_a_reused_pid_as_gone(ledger: Ledger) -> None:
    """A live pid with another start time is not the owner that registered."""
    me = Owner.for_this_process()
    impostor = Owner(uuid.uuid4().hex, me.host, me.pid, me.started_at - 100)
    ledger.register(me, 60)
    ledger.register(impostor, 600)

    assert ledger.dead_owners(me) == {impostor.owner_id}


def test_claim_is_won_by_one_owner_only(ledger: Ledger) -> None:
    """Two owners claiming overlapping objects each win a disjoint share."""
    first, second = Owner.for_this_process(), Owner.for_this_process()

    won_first = ledger.claim(TABLE, first, refs("a", "b"))
    won_second = ledger.claim(TABLE, second, refs("b", "c"))

    assert [o.key for o in won_first] == ["a", "b"]
    assert [o.key for o in won_second] == ["c"]


@pytest.mark.parametrize(
    ("mode", "expected"), [("ignore", []), ("ingest", ["a"])], ids=["ignore", "ingest"]
)
def test_select_new_follows_on_changed(
    ledger: Ledger, mode: str, expected: list[str]
) -> None:
    """A known key with a new ETag is new only with on_changed=ingest."""
    owner = Owner.for_this_process()
    ledger.claim(TABLE, owner, refs("a"))

    fresh = ledger.select_new(TABLE, refs("a", etag="e2"), mode)

    assert [o.key for o in fresh] == expected


def test_forget_owners_keeps_an_owner_with_a_pending_batch(ledger: Ledger) -> None:
    """A gone owner's row stays while it holds a pending batch, and goes after."""
    owner = Owner.for_this_process()
    ledger.register(owner, 60)
    (obj,) = ledger.claim(TABLE, owner, refs("a"))
    ledger.begin_batch(TABLE, owner, "batch-1", [ObjectOutcome(obj, 3)])

    assert ledger.forget_owners([owner.owner_id]) == 0

    ledger.abort_batch("batch-1")
    assert ledger.forget_owners([owner.owner_id]) == 1
    assert ledger.select_new(TABLE, refs("a")) == refs("a")


def test_ledger_status_reports_each_table(ledger: Ledger) -> None:
    """Per table: totals, the last pass's backlog, last commit and quarantined count."""
    from dataclasses import asdict

    from bifrost_async.hooks import PassReport

    me = Owner.for_this_process()
    ledger.register(me, 60)
    a, b, c = refs("a.parquet", "b.parquet", "c.parquet")
    ledger.claim(TABLE, me, [a, b, c])
    ledger.begin_batch(TABLE, me, "batch-1", [ObjectOutcome(a, 5), ObjectOutcome(b, 7)])
    ledger.confirm_batch("batch-1", 77)
    ledger.quarantine(TABLE, me, c, "s3://b/c.parquet: not a Parquet file")
    own = PassReport(listed=6, new=4, ingested=2, quarantined=1)
    report = PassReport(listed=6, new=4, ingested=2, quarantined=1)
    report.tables[TABLE] = own
    ledger.record_pass(me, time.time() - 2.5, asdict(report))

    status = ledger.status()

    table = status["tables"][TABLE]
    assert (status["ingested"], status["rows"]) == (2, 12)
    assert [(q["key"], q["reason"]) for q in status["quarantined"]] == [
        ("c.parquet", "s3://b/c.parquet: not a Parquet file")
    ]
    assert (table["ingested"], table["rows"], table["bytes"]) == (2, 12, 20)
    assert (table["quarantined"], table["backlog"], table["in_flight"]) == (1, 1, 0)
    assert table["last_commit"]["snapshot_id"] == 77
    assert table["last_commit"]["batch_id"] == "batch-1"
    assert table["last_pass"]["listed"] == 6
    assert table["last_pass"]["seconds"] >= 2.5


def test_ledger_retry_quarantined_by_table_records_an_event(ledger: Ledger) -> None:
    """Retrying one table's quarantined objects leaves the others and is recorded."""
    me = Owner.for_this_process()
    ledger.register(me, 60)
    (x,) = refs("x.parquet")
    ledger.claim("ns.one", me, [x])
    ledger.claim("ns.two", me, [x])
    ledger.quarantine("ns.one", me, x, "bad one")
    ledger.quarantine("ns.two", me, x, "bad two")

    released = ledger.retry_quarantined(["s3://b/x.parquet"], "ns.two")

    assert released == [
        {"table": "ns.two", "bucket": "b", "key": "x.parquet", "reason": "bad two"}
    ]
    assert [q["table"] for q in ledger.status()["quarantined"]] == ["ns.one"]
    event = ledger.events()[0]
    assert event["action"] == "retry-quarantined"
    assert event["detail"]["table"] == "ns.two"
    assert event["detail"]["objects"] == released
    assert ledger.select_new("ns.two", [x]) == [x]
    assert ledger.select_new("ns.one", [x]) == []


def test_dead_owners_keeps_a_writer_that_starts_while_it_reads(tmp_path: Path) -> None:
    """A writer that registers and claims between the ledger's two reads is alive."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    me, newcomer = Ledger(url), Ledger(url)
    mine = Owner.for_this_process()
    other = Owner(uuid.uuid4().hex, mine.host, mine.pid, mine.started_at)
    me.register(mine, 60)
    reads = 0

    def start_other_writer(*_args: object) -> None:
        nonlocal reads
        reads += 1
        if reads == 1:
            newcomer.register(other, 60)
            newcomer.claim(TABLE, other, refs("k1"))

    sa.event.listen(me.engine, "after_cursor_execute", start_other_writer)
    try:
        dead = me.dead_owners(mine)
    finally:
        sa.event.remove(me.engine, "after_cursor_execute", start_other_writer)
        me.close()
        newcomer.close()

    assert reads >= 2
    assert other.owner_id not in dead


@pytest.fixture(params=["sqlite", "postgresql"])
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A fresh ledger on SQLite, and on PostgreSQL in a schema of its own."""
    if request.param == "sqlite":
        opened = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        yield opened
        opened.close()
        return

    url = request.getfixturevalue("postgres_url")
    with open_postgres_schema(url) as schema_url:
        opened = Ledger(schema_url)
        yield opened
        opened.close()


@pytest.mark.parametrize("mode", ["ignore", "ingest"])
def test_select_new_streams_past_many_known_keys(any_ledger: Ledger, mode: str) -> None:
    """Over more known keys than one streamed chunk, only the unknown ones are new."""
    owner = Owner.for_this_process()
    known = [ObjectRef("b", f"k/{n:06d}", 10, "e1") for n in range(51_000)]
    any_ledger.claim(TABLE, owner, known)
    other_bucket = ObjectRef("c", "k/000001", 10, "e1")
    changed = ObjectRef("b", "k/000002", 10, "e2")
    listed = [*known[::7], ObjectRef("b", "k/new", 10, "e1"), other_bucket, changed]

    fresh = any_ledger.select_new(TABLE, listed, mode)

    expected = ["k/new", "k/000001"] + (["k/000002"] if mode == "ingest" else [])
    assert sorted(o.key for o in fresh) == sorted(expected)
    assert any_ledger.select_new("other.table", known[:3], mode) == known[:3]


def test_ledger_status_reports_a_table_with_a_pass_and_no_objects(
    ledger: Ledger,
) -> None:
    """A first pass that found nothing shows the table with zero totals."""
    from dataclasses import asdict

    from bifrost_async.hooks import PassReport

    me = Owner.for_this_process()
    ledger.register(me, 60)
    report = PassReport(listed=0, new=0)
    report.tables[TABLE] = PassReport(listed=0, new=0)
    ledger.record_pass(me, time.time() - 1, asdict(report))

    table = ledger.status()["tables"][TABLE]

    assert (table["ingested"], table["backlog"], table["last_commit"]) == (0, 0, None)
    assert table["last_pass"]["listed"] == 0


def test_ledger_retry_quarantined_matching_nothing_records_nothing(
    ledger: Ledger,
) -> None:
    """A retry whose keys match no quarantined object leaves no event behind."""
    me = Owner.for_this_process()
    ledger.register(me, 60)
    (x,) = refs("x.parquet")
    ledger.claim(TABLE, me, [x])
    ledger.quarantine(TABLE, me, x, "bad")

    released = ledger.retry_quarantined(["s3://b/other.parquet"])

    assert released == []
    assert ledger.events() == []
    assert len(ledger.status()["quarantined"]) == 1


def test_ledger_database_failure_after_open_is_a_ledger_error(
    ledger: Ledger, tmp_path: Path
) -> None:
    """A statement the database refuses names the ledger, in one line, not SQL."""
    import sqlite3

    from bifrost_async.errors import LedgerError

    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute("DROP TABLE bifrost_owners")

    with pytest.raises(LedgerError) as caught:
        ledger.register(Owner.for_this_process(), 60)

    message = str(caught.value)
    assert message.startswith(f"ledger 'sqlite:///{tmp_path / 'ledger.db'}' failed: ")
    assert "no such table: bifrost_owners" in message
    assert "\n" not in message
