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

from bifrost_async.commit import BATCH_ID_PROPERTY
from bifrost_async.config import Settings
from bifrost_async.ledger import (
    Ledger,
)
from bifrost_async.runner import run

from .helpers import upload_numbers
from .processes import (
    assert_exactly_once,
    ingester_command,
    kill_until_drained,
    leave_pending_batch,
)

ROWS_PER_OBJECT = 20


def test_seed() -> int:
    """The seed of this run: ``BIFROST_TEST_SEED`` or a fresh one (always printed)."""
    value = os.environ.get("BIFROST_TEST_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**31)


test_seed.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@pytest.mark.slow
def test_sigkill_at_random_moments_lands_every_object_once(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    load_table: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """Twenty SIGKILLs while objects keep arriving; each row lands exactly once."""
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
        [f"s3://{bucket}/in/"],
        "ns.events",
        state,
        moto_endpoint,
        "--batch-max-files",
        "5",
        "--batch-max-age",
        "0.3",
        "--concurrency",
        "8",
    )
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    report = kill_until_drained(
        command,
        catalog_env,
        log_dir,
        seed,
        kills=20,
        before_run=lambda run: upload(10) if 0 < run <= 20 else None,
    )

    assert report.kills == 20, f"seed={seed}"
    assert uploaded == 300
    assert_exactly_once(state, load_table(), expected, uploaded, "ns.events")


@pytest.mark.anyio
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "not-landed"])
async def test_recover_resolves_a_pending_batch_from_table_history(
    landed: bool,
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
) -> None:
    """A batch killed before its ledger write is confirmed if it landed, else redone."""
    upload_numbers(s3, bucket, "in/a.parquet", 0, 10)
    upload_numbers(s3, bucket, "in/b.parquet", 10, 10)
    settings = make_settings([f"s3://{bucket}/in/"])
    batch_id = leave_pending_batch(s3, bucket, "in/a.parquet", settings, commit=landed)

    result = await run(settings)

    assert result.report.ingested == (1 if landed else 2)
    expected = Counter(range(20))
    assert_exactly_once(settings.state, load_table(), expected, 2, "ns.events")
    status = Ledger(settings.state).status()
    assert (batch_id in {c["batch_id"] for c in status["last_commits"]}) is landed


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "again_ingested", "expected"),
    [
        ("ignore", 0, list(range(10))),
        ("ingest", 1, list(range(10)) + list(range(100, 105))),
    ],
    ids=["ignore", "ingest"],
)
async def test_changed_object_follows_on_changed(
    mode: str,
    again_ingested: int,
    expected: list[int],
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
) -> None:
    """An object rewritten under its key is ignored, or ingested once as new data."""
    settings = make_settings([f"s3://{bucket}/in/"], on_changed=mode)
    upload_numbers(s3, bucket, "in/a.parquet", 0, 10)
    await run(settings)
    upload_numbers(s3, bucket, "in/a.parquet", 100, 5)

    again = await run(settings)
    third = await run(settings)

    assert (again.report.ingested, third.report.ingested) == (again_ingested, 0)
    assert sorted(load_table().scan().to_arrow().column("id").to_pylist()) == expected


@pytest.mark.anyio
async def test_snapshot_markers_stay_fixed_size(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[..., Any],
) -> None:
    """Summaries carry one batch id and table properties do not grow with objects."""
    settings = make_settings([f"s3://{bucket}/in/"], batch_max_files=100)
    upload_numbers(s3, bucket, "in/first.parquet", 0, 5)
    await run(settings)
    properties = dict(load_table().properties)
    for n in range(40):
        upload_numbers(s3, bucket, f"in/many-{n:02d}.parquet", 100 + n * 5, 5)

    await run(settings)

    table = load_table()
    assert dict(table.properties) == properties
    small, big = (s.summary.additional_properties for s in table.metadata.snapshots)
    assert small.keys() == big.keys()
    assert len(big[BATCH_ID_PROPERTY]) == len(small[BATCH_ID_PROPERTY]) == 32
    assert not [value for value in big.values() if "many-" in value]
