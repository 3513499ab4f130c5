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
