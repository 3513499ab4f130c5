"""The exceptions bifrost-async raises, and what each one means for the caller.

Every error is rooted in :class:`BifrostError`. Two branches decide what happens next:
a transient error is safe to retry (the same request may succeed later), a permanent one
is not. Third-party exceptions (botocore, pyiceberg, pyarrow, polars) are turned into
these at one boundary per integration (``fetch.py``, ``commit.py``, ``process.py``).

::

    BifrostError
    ├── ConfigError                 a setting is wrong; the process exits 78
    ├── TransientError              retry with backoff, then give up
    │   ├── S3TransientError        5xx, throttling, timeouts, connection resets
    │   ├── TruncatedBodyError      a body shorter than the listed size
    │   └── CatalogTransientError   catalog unreachable, commit conflict
    └── PermanentError              never retried
        ├── S3PermanentError        access denied, archived object, vanished key
        ├── CommitError             the catalog refused a commit for good
        └── BadInputError           the object itself is at fault: quarantine it
            ├── UnreadableFileError the Parquet reader refused the bytes
            └── ConformError        the data does not fit the table
"""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "BifrostError",
    "CatalogTransientError",
    "CommitError",
    "ConfigError",
    "ConformError",
    "PermanentError",
    "S3PermanentError",
    "S3TransientError",
    "TransientError",
    "TruncatedBodyError",
    "UnreadableFileError",
]


class BifrostError(Exception):
    """The root of every error bifrost-async raises on purpose."""


class ConfigError(BifrostError):
    """A setting is missing or invalid; the message names the setting."""


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


class S3PermanentError(PermanentError):
    """S3 refused the request for a reason that retrying will not change."""


class CommitError(PermanentError):
    """The catalog refused a commit for a reason that retrying will not change."""


class BadInputError(PermanentError):
    """The object itself cannot be ingested; it is quarantined with this message."""


class UnreadableFileError(BadInputError):
    """The Parquet reader refused the object's bytes."""


class ConformError(BadInputError):
    """The object's data does not fit the table's schema (the column is named)."""
