"""Every source object lands exactly once: SIGKILLs at random moments, then restarts.

The table's rows are compared as a multiset with the source rows (by a unique id per
row), the ledger must hold every object committed once, and every snapshot's batch id
must be one the ledger confirmed, once.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bifrost_async.commit import BATCH_ID_PROPERTY
from bifrost_async.ledger import Ledger, batches_table, objects_table

from .helpers import upload_numbers
from .processes import ingester_command, kill_until_drained, table_counter

ROWS_PER_OBJECT = 20


def test_seed() -> int:
    """The seed of this run: ``BIFROST_TEST_SEED`` or a fresh one (always printed)."""
    value = os.environ.get("BIFROST_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


test_seed.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def assert_exactly_once(
    ledger_url: str, table: Any, expected: Counter[int], objects: int, table_name: str
) -> None:
    """The table holds exactly the expected ids; the ledger agrees with the table."""
    landed = table_counter(table, "id")
    missing = expected - landed
    doubled = landed - expected
    assert not missing and not doubled, (
        f"missing {len(missing)} ids (e.g. {sorted(missing)[:5]}), "
        f"doubled {len(doubled)} ids (e.g. {sorted(doubled)[:5]})"
    )

    ledger = Ledger(ledger_url)
    try:
        with ledger.engine.connect() as conn:
            states = Counter(
                conn.execute(
                    sa.select(objects_table.c.state).where(
                        objects_table.c.table_name == table_name
                    )
                ).scalars()
            )
            confirmed = list(
                conn.execute(
                    sa.select(batches_table.c.batch_id).where(
                        batches_table.c.table_name == table_name,
                        batches_table.c.state == "committed",
                        batches_table.c.snapshot_id.is_not(None),
                    )
                ).scalars()
            )
    finally:
        ledger.close()

    assert states == Counter({"committed": objects})
    tagged = [
        s.summary.additional_properties.get(BATCH_ID_PROPERTY)
        for s in table.metadata.snapshots
        if s.summary is not None and s.summary.operation.value == "append"
    ]
    assert Counter(tagged) == Counter(confirmed)


@pytest.mark.slow
def test_sigkill_at_random_moments_lands_every_object_once(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Twenty SIGKILLs while objects keep arriving; the table ends with each row once."""
    seed = test_seed()
    print(f"kill test seed={seed} (rerun with BIFROST_TEST_SEED={seed})")
    expected: Counter[int] = Counter()
    uploaded = 0

    def upload(count: int) -> None:
        nonlocal uploaded
        for n in range(uploaded, uploaded + count):
            start = n * 1000
            upload_numbers(s3, bucket, f"in/{n:04d}.parquet", start, ROWS_PER_OBJECT)
            expected.update(range(start, start + ROWS_PER_OBJECT))

        uploaded += count

    upload(100)
    state = f"sqlite:///{tmp_path / 'state.db'}"
    command = ingester_command(
        [f"s3://{bucket}/in/"], "ns.events", state, moto_endpoint,
        "--batch-max-files", "5", "--batch-max-age", "0.3", "--concurrency", "8",
    )
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    report = kill_until_drained(
        command, catalog_env, log_dir, seed, kills=20,
        before_run=lambda run: upload(10) if 0 < run <= 20 else None,
    )

    assert report.kills == 20, f"seed={seed}"
    assert uploaded == 300
    assert_exactly_once(state, load_table(), expected, uploaded, "ns.events")
