"""The exceptions bifrost-async raises, and what each one means for the caller.

Every error is rooted in :class:`BifrostError`. Two branches decide what happens next:
a transient error is safe to retry (the same request may succeed later), a permanent one
is not. Third-party exceptions (botocore, pyiceberg, pyarrow, polars) are turned into
these at one boundary per integration (``fetch.py``, ``commit.py``, ``process.py``).

::

    BifrostError
    ├── ConfigError                 a setting is wrong; the process exits 78
    ├── RunError                    objects could not be fetched or committed
    ├── TransientError              retry with backoff, then give up
    │   ├── S3TransientError        5xx, throttling, timeouts, connection resets
    │   ├── TruncatedBodyError      a body shorter than the listed size
    │   ├── CatalogTransientError   catalog unreachable, commit conflict
    │   └── LedgerError             the ledger database unreachable or failing
    └── PermanentError              never retried
        ├── S3PermanentError        access denied, archived object, missing bucket
        │   └── ObjectChangedError  deleted or rewritten since it was listed
        ├── CommitError             the catalog refused a commit for good
        └── BadInputError           the object itself is at fault: quarantine it
            ├── UnreadableFileError the Parquet reader refused the bytes
            └── ConformError        the data does not fit the table
"""

from __future__ import annotations

import logging

__all__ = [
    "BadInputError",
    "BifrostError",
    "CatalogTransientError",
    "CommitError",
    "ConfigError",
    "ConformError",
    "LedgerError",
    "ObjectChangedError",
    "PermanentError",
    "RunError",
    "S3PermanentError",
    "S3TransientError",
    "TransientError",
    "TruncatedBodyError",
    "UnreadableFileError",
    "first_line",
    "single_error",
]


logger = logging.getLogger(__name__)


class BifrostError(Exception):
    """The root of every error bifrost-async raises on purpose."""


class ConfigError(BifrostError):
    """A setting is missing or invalid; the message names the setting."""


class RunError(BifrostError):
    """Objects could not be fetched or committed for reasons outside the objects."""


class TransientError(BifrostError):
    """A failure that a later attempt of the same request may not meet."""


class PermanentError(BifrostError):
    """A failure that every later attempt would meet again."""


class S3TransientError(TransientError):
    """S3 answered with a 5xx or throttling code, timed out, or reset the connection."""


class TruncatedBodyError(TransientError):
    """An object body ended before the size the listing promised."""


class CatalogTransientError(TransientError):
    """The catalog was unreachable or a commit lost a race with another writer."""


class LedgerError(TransientError):
    """The ledger database could not be reached or failed a statement.

    The run ends (exit 1) rather than retrying a write whose outcome is unknown; the
    next start resolves whatever was in flight, as after a crash.
    """


class S3PermanentError(PermanentError):
    """S3 refused the request for a reason that retrying will not change."""


class ObjectChangedError(S3PermanentError):
    """The object was deleted, or rewritten (another ETag), after it was listed.

    Not a failure of the run: the object is skipped for this pass, and the next
    listing shows what is there now.
    """


class CommitError(PermanentError):
    """The catalog refused a commit for a reason that retrying will not change."""


class BadInputError(PermanentError):
    """The object itself cannot be ingested; it is quarantined with this message."""


class UnreadableFileError(BadInputError):
    """The Parquet reader refused the object's bytes."""


class ConformError(BadInputError):
    """The object's data does not fit the table's schema (the column is named)."""


def first_line(error: BaseException | None) -> str:
    """The first line of a driver's error message (psycopg2 adds hints below it)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first of a group's errors when all are ours; otherwise the group itself."""
    leaves = list(leaf_errors(group))
    if leaves and all(isinstance(leaf, BifrostError) for leaf in leaves):
        for other in leaves[1:]:
            logger.debug("run.also_failed error=%s", other)

        return leaves[0]

    return group


def leaf_errors(error: BaseException) -> list[BaseException]:
    """The errors inside nested exception groups, depth first."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaf_errors(inner)]

    return [error]
