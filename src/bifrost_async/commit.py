"""Iceberg: the table handle, data-file writes and the one commit per batch.

This module owns every pyiceberg call and turns pyiceberg's exceptions into ours. Data
files are written by worker threads in parallel (``write_data_files``); a batch then
becomes visible in one snapshot whose summary carries ``bifrost.batch-id``, which is how
an unknown commit outcome is resolved (:meth:`TableHandle.find_batch`). It must not
decide which objects to ingest; the pipeline and the ledger do.

Calls here block: run them in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NoReturn

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from sqlalchemy import exc as sqlalchemy_errors
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from .errors import CatalogTransientError, CommitError, ConfigError, first_line
from .fetch import log_retry
from .maintenance import MIN_EXPIRABLE, expirable_snapshots

__all__ = [
    "BATCH_ID_PROPERTY",
    "CREATED_TABLE_PROPERTIES",
    "TableHandle",
    "write_data_files",
]

logger = logging.getLogger(__name__)

BATCH_ID_PROPERTY = "bifrost.batch-id"
NAME_MAPPING_PROPERTY = "schema.name-mapping.default"

# Properties of a table the ingester creates, under the route's own. Iceberg's default
# dictionary page limit (2 MB) keeps a column of distinct values dictionary-encoded
# through a whole object before the writer gives up on it; at 128 KiB it falls back to
# plain encoding early: a third less CPU to write and smaller files (benchmarks/
# README.md), while columns of few distinct values stay dictionary-encoded.
CREATED_TABLE_PROPERTIES = {"write.parquet.dict-size-bytes": str(128 * 1024)}

# Errors that mean "the catalog could not be reached": the commit may or may not have
# happened, so the outcome is looked up by batch id before any retry.
_UNREACHABLE = (
    OSError,
    TimeoutError,
    CommitStateUnknownException,
    sqlalchemy_errors.OperationalError,
    sqlalchemy_errors.InterfaceError,
)


# What a writer sees when another one created the catalog's tables a moment earlier.
_CREATE_RACES = (sqlalchemy_errors.IntegrityError, sqlalchemy_errors.ProgrammingError)


def open_catalog(name: str, properties: Mapping[str, str] | None = None) -> Catalog:
    """Load a catalog by name from pyiceberg's own configuration.

    ``properties`` are merged over that configuration (the demo and tests use them to
    point at a catalog of their own without touching the environment).

    Writers that start at once on a fresh SQL catalog race to create its tables; the
    loser sees a unique violation and simply loads the catalog again. A catalog that
    cannot be reached raises the driver's own error (one of ``_UNREACHABLE``) for the
    caller to retry; any other failure is a :class:`ConfigError`.
    """
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            return load_catalog(name, **dict(properties or {}))
        except _CREATE_RACES as exc:
            if attempt == attempts:
                raise_config_error(name, exc)

            time.sleep(0.1 * attempt)
        except _UNREACHABLE:
            raise  # not a setting at fault: the caller waits the catalog out
        except Exception as exc:  # pyiceberg raises ValueError and more for bad config
            raise_config_error(name, exc)

    raise AssertionError("unreachable: the last attempt returns or raises")


def raise_config_error(name: str, exc: BaseException | None) -> NoReturn:
    """Raise the configuration error for a catalog that cannot be loaded."""
    raise ConfigError(
        f"--catalog: cannot load catalog {name!r} from pyiceberg configuration "
        f"(.pyiceberg.yaml or PYICEBERG_CATALOG__{name.upper()}__URI): {exc}"
    ) from exc


def write_data_files(
    metadata: TableMetadata, io: Any, data: pa.Table | pa.RecordBatchReader
) -> list[DataFile]:
    """Write Arrow data as Parquet data files of the table; nothing is committed.

    The files are invisible until a snapshot references them; after a failed or
    abandoned batch they are orphans, safe to delete. A ``RecordBatchReader`` streams
    with bounded memory, but pyiceberg only streams into unpartitioned tables (a
    partitioned one raises ``NotImplementedError``, apache/iceberg-python#2152).
    """
    # _dataframe_to_data_files is the writer behind Table.append; calling it directly
    # lets worker threads write in parallel and one commit reference all the files.
    files = _dataframe_to_data_files(
        table_metadata=metadata, df=data, io=io, write_uuid=uuid.uuid4()
    )
    return list(files)


class TableHandle:
    """One Iceberg table for the life of a process, safe to share between threads.

    Writers read :attr:`metadata` to write data files; :meth:`commit` serializes
    commits. Commit conflicts and an unreachable catalog are retried with backoff,
    after checking whether the batch already landed.
    """

    def __init__(
        self,
        catalog_name: str,
        identifier: str,
        properties: Mapping[str, str] | None = None,
        attempts: int = 6,
        max_wait: float = 15.0,
        on_retry: Callable[[str], None] | None = None,
        table_properties: Mapping[str, str] | None = None,
    ) -> None:
        self.identifier = identifier
        self.table_properties = {**CREATED_TABLE_PROPERTIES, **(table_properties or {})}
        self.attempts = attempts
        self.max_wait = max_wait
        self.on_retry = on_retry
        self._lock = threading.RLock()
        self._table: Table | None = None
        self.catalog: Catalog = self.run_with_retry(
            "catalog", lambda: open_catalog(catalog_name, properties)
        )

    @property
    def table(self) -> Table | None:
        """The table as last loaded, or ``None`` if it does not exist yet."""
        return self._table

    def load(self) -> Table | None:
        """Load (or reload) the table; ``None`` if it does not exist."""
        with self._lock:
            try:
                self._table = self.run_with_retry(
                    "catalog", lambda: self.catalog.load_table(self.identifier)
                )
            except NoSuchTableError:
                self._table = None

            return self._table

    def ensure(self, schema: pa.Schema) -> Table:
        """Return the table, creating it from ``schema`` if it does not exist.

        A created table gets :attr:`table_properties`; an existing one is left as it
        is.
        """
        with self._lock:
            if self._table is not None:
                return self._table

            if self.load() is not None:
                assert self._table is not None
                return self._table

            namespace = self.identifier.rsplit(".", 1)[0]
            # SqlCatalog reports a race with another creator as an IntegrityError.
            try:
                self.catalog.create_namespace(namespace)
            except (NamespaceAlreadyExistsError, sqlalchemy_errors.IntegrityError):
                pass

            try:
                self._table = self.catalog.create_table(
                    self.identifier, schema=schema, properties=self.table_properties
                )
                logger.info(
                    "table.created table=%s columns=%d", self.identifier, len(schema)
                )
            except (TableAlreadyExistsError, sqlalchemy_errors.IntegrityError):
                self._table = self.catalog.load_table(self.identifier)

            return self._table

    def evolve(self, fields: Sequence[pa.Field]) -> Table:
        """Add optional columns to the table, by name (a separate schema commit).

        Idempotent: workers that found the same new columns call it one after the
        other, and only the one that changed the schema logs ``table.evolved``.
        """
        with self._lock:
            table = self.require()
            before = table.schema().schema_id

            def apply() -> Table:
                with table.update_schema() as update:
                    update.union_by_name(pa.schema(list(fields)))

                return table

            try:
                self.run_with_retry("catalog", apply)
            except CommitFailedException:
                pass  # another writer evolved it first; the refresh shows the result

            table = self.refresh()
            if table.schema().schema_id != before:
                logger.info(
                    "table.evolved table=%s columns=%s",
                    self.identifier,
                    ",".join(f.name for f in fields),
                )

            return table

    def expire_snapshots(self, horizon: float, at_least: int = MIN_EXPIRABLE) -> int:
        """Expire the snapshots older than ``horizon`` once ``at_least`` are due.

        Returns how many were expired. Metadata only, in one commit; a conflict with
        another writer (or with one that expired them first) leaves it to the next
        pass. The caller computes ``horizon`` (:func:`maintenance.expiry_horizon`).
        """
        with self._lock:
            table = self.require()
            expired = expirable_snapshots(table.metadata, horizon)
            if len(expired) < at_least:
                return 0

            def apply() -> None:
                table.maintenance.expire_snapshots().by_ids(expired).commit()

            try:
                self.run_with_retry("catalog", apply)
            except (CommitFailedException, ValueError) as exc:
                logger.debug(
                    "table.expire_skipped table=%s error=%s", self.identifier, exc
                )
                self.refresh()
                return 0

            logger.info(
                "table.expired table=%s snapshots=%d kept=%d",
                self.identifier,
                len(expired),
                len(table.metadata.snapshots),
            )
            return len(expired)

    def ensure_name_mapping(self) -> Table:
        """Give the table a name mapping, if it has none, for files without field ids.

        A separate property commit, made once; pyiceberg keeps the mapping up to date
        when the schema evolves later.
        """
        with self._lock:
            for _ in range(self.attempts):
                table = self.require()
                if table.metadata.name_mapping() is not None:
                    return table

                mapping = table.metadata.schema().name_mapping.model_dump_json()
                apply = partial(self.set_property, NAME_MAPPING_PROPERTY, mapping)
                try:
                    self.run_with_retry("catalog", apply)
                    logger.info("table.name_mapping table=%s", self.identifier)
                except CommitFailedException:
                    pass  # another writer changed the table: look again

                self.refresh()

            raise CatalogTransientError(
                f"table {self.identifier!r}: could not set its name mapping after "
                f"{self.attempts} attempts"
            )

    def set_property(self, name: str, value: str) -> None:
        """Set one table property in a commit of its own."""
        with self.require().transaction() as transaction:
            transaction.set_properties({name: value})

    def refresh(self) -> Table:
        """Reload the table's metadata from the catalog."""
        with self._lock:
            table = self.require()
            self._table = self.run_with_retry("catalog", table.refresh)
            return self._table

    def require(self) -> Table:
        """The table, which must exist by now."""
        if self._table is None:
            raise CommitError(f"table {self.identifier!r} does not exist")

        return self._table

    def find_batch(self, batch_id: str) -> int | None:
        """The snapshot that carries ``batch_id``, after a refresh, or None."""
        with self._lock:
            if self._table is None and self.load() is None:
                return None

            table = self.refresh()
            for snapshot in reversed(table.metadata.snapshots):
                summary = snapshot.summary
                if summary is not None and summary.get(BATCH_ID_PROPERTY) == batch_id:
                    return snapshot.snapshot_id

            return None

    def commit(self, batch_id: str, files: Sequence[DataFile]) -> int:
        """Make ``files`` visible in one snapshot tagged with ``batch_id``.

        Idempotent: if a snapshot with this batch id already exists (an earlier attempt
        whose answer was lost), its id is returned and nothing is committed again.
        """
        with self._lock:
            attempt = 0
            while True:
                attempt += 1
                try:
                    return self.commit_once(batch_id, files)
                except (CommitFailedException, *_UNREACHABLE) as exc:
                    landed = self.find_batch_safely(batch_id)
                    if landed is not None:
                        return landed

                    if attempt >= self.attempts:
                        raise CatalogTransientError(
                            f"table {self.identifier!r}: commit of batch {batch_id} "
                            f"failed {attempt} times: {exc}"
                        ) from exc

                    wait = min(self.max_wait, 0.2 * 2**attempt)
                    logger.warning(
                        "retry.scheduled kind=commit attempt=%d wait=%.2fs table=%s "
                        "error=%s",
                        attempt,
                        wait,
                        self.identifier,
                        exc,
                    )
                    if self.on_retry is not None:
                        self.on_retry("commit")

                    time.sleep(wait)

    def commit_once(self, batch_id: str, files: Sequence[DataFile]) -> int:
        """One commit attempt against freshly loaded metadata."""
        table = self.require()
        properties = {BATCH_ID_PROPERTY: batch_id}
        with table.transaction() as transaction:
            update = transaction.update_snapshot(snapshot_properties=properties)
            with update.fast_append() as append:
                for data_file in files:
                    append.append_data_file(data_file)

        snapshot = table.current_snapshot()
        assert snapshot is not None
        return snapshot.snapshot_id

    def find_batch_safely(self, batch_id: str) -> int | None:
        """Like :meth:`find_batch`, but waits out an unreachable catalog."""
        found: int | None = self.run_with_retry(
            "catalog", lambda: self.find_batch(batch_id)
        )
        return found

    def run_with_retry(self, kind: str, call: Callable[[], Any]) -> Any:
        """Run a catalog call, retrying while the catalog cannot be reached."""
        retrying = Retrying(
            retry=retry_if_exception_type(_UNREACHABLE + (CatalogTransientError,)),
            wait=wait_random_exponential(multiplier=0.5, max=self.max_wait),
            stop=stop_after_attempt(self.attempts),
            before_sleep=lambda state: self.note_retry(kind, state),
            reraise=True,
        )
        try:
            return retrying(call)
        except _UNREACHABLE as exc:
            raise CatalogTransientError(
                f"table {self.identifier!r}: catalog unreachable after "
                f"{self.attempts} attempts: {first_line(exc)}"
            ) from exc

    def note_retry(self, kind: str, state: Any) -> None:
        """Log and count one scheduled catalog retry."""
        log_retry(kind, state)
        if self.on_retry is not None:
            self.on_retry(kind)
