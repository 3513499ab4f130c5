"""Snapshot expiry: the table's metadata must not grow with every commit for months.

Each commit adds a snapshot, and pyiceberg keeps every snapshot of a table in memory
and in each metadata file, so commits get slower and the process grows with the
table's age. With ``expire-snapshots-after`` set, each pass expires the snapshots
older than that, the way Iceberg's table maintenance does (metadata only: data files
stay, as every append's files are still in the current snapshot).

Expiry must not outrun recovery: a pending batch of a writer that crashed is resolved
by finding its batch id in the snapshot history, so no snapshot younger than the
oldest pending batch of the table (less a lease, for clocks of other hosts) is ever
expired, and the setting itself is at least an hour. This module decides; the commit
goes through :meth:`~bifrost_async.commit.TableHandle.expire_snapshots`.
"""

from __future__ import annotations

from pyiceberg.table.metadata import TableMetadata

__all__ = ["MIN_EXPIRABLE", "expirable_snapshots", "expiry_horizon"]

# Expire only once this many snapshots are due: one metadata commit per pass for a
# single snapshot each time would cost more than it saves.
MIN_EXPIRABLE = 10


def expiry_horizon(
    now: float, expire_after: float, oldest_pending: float | None, margin: float
) -> float:
    """The time (seconds since the epoch) before which snapshots may be expired.

    ``oldest_pending`` is when the table's oldest pending batch began, if any; its
    snapshot, should it have landed, is not older than that, less ``margin``.
    """
    horizon = now - expire_after
    if oldest_pending is not None:
        horizon = min(horizon, oldest_pending - margin)

    return horizon


def expirable_snapshots(metadata: TableMetadata, horizon: float) -> list[int]:
    """Ids of snapshots older than ``horizon``, but never a branch or tag head."""
    horizon_ms = int(horizon * 1000)
    protected = {ref.snapshot_id for ref in metadata.refs.values()}
    if metadata.current_snapshot_id is not None:
        protected.add(metadata.current_snapshot_id)

    return [
        snapshot.snapshot_id
        for snapshot in metadata.snapshots
        if snapshot.timestamp_ms < horizon_ms and snapshot.snapshot_id not in protected
    ]
