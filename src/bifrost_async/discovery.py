"""Listing: which objects under the configured prefixes are data.

This module owns the rules that tell data keys from the markers that Hadoop, Spark and
S3 consoles leave beside them, and the concurrent listing of every prefix. Selection
against the ledger is the ledger's job; fetching is ``fetch.py``'s.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from tenacity import AsyncRetrying

from .config import S3Location
from .s3 import translate_s3_errors

__all__ = ["ObjectRef", "is_data_key", "list_locations", "list_objects"]

logger = logging.getLogger(__name__)

_MARKER_SUFFIXES = ("/", "_$folder$", ".crc")
_MARKER_NAMES = ("_SUCCESS", "_metadata", "_common_metadata")


@dataclass(frozen=True, order=True)
class ObjectRef:
    """One S3 object as the listing saw it: an object is known by all four fields."""

    bucket: str
    key: str
    size: int
    etag: str

    @property
    def uri(self) -> str:
        """The object's ``s3://`` URI."""
        return f"s3://{self.bucket}/{self.key}"


def is_data_key(key: str, prefix: str, include: Sequence[str]) -> bool:
    """Tell whether a listed key is a data file rather than a marker or a side file.

    Markers (``_SUCCESS``, ``.crc``, ``_$folder$``, directory placeholders, Spark's
    ``_temporary/`` attempts) and hidden names (starting with ``.`` or ``_``, in any
    path segment below the prefix) never count. Of the rest, a key counts when its
    base name matches one of the ``include`` patterns.
    """
    if key.endswith(_MARKER_SUFFIXES):
        return False

    relative = key[len(prefix) :] if key.startswith(prefix) else key
    segments = relative.split("/")
    if any(segment.startswith((".", "_")) for segment in segments if segment):
        return False

    name = segments[-1]
    if name in _MARKER_NAMES:
        return False

    return any(fnmatch.fnmatchcase(name, pattern) for pattern in include)


async def list_objects(
    client: Any, location: S3Location, include: Sequence[str]
) -> list[ObjectRef]:
    """List every data object under one location, following every page.

    Raises ``S3TransientError`` or ``S3PermanentError`` if a page cannot be listed; a
    partial listing is never returned.
    """
    found: list[ObjectRef] = []
    skipped = 0
    paginator = client.get_paginator("list_objects_v2")
    with translate_s3_errors(location.bucket, location.prefix):
        pages = paginator.paginate(Bucket=location.bucket, Prefix=location.prefix)
        async for page in pages:
            for item in page.get("Contents", ()):
                key = item["Key"]
                if not is_data_key(key, location.prefix, include):
                    skipped += 1
                    continue

                found.append(
                    ObjectRef(
                        bucket=location.bucket,
                        key=key,
                        size=int(item["Size"]),
                        etag=str(item.get("ETag", "")).strip('"'),
                    )
                )

    logger.debug(
        "list.complete location=%s objects=%d skipped=%d", location, len(found), skipped
    )
    return found


class Retrying(Protocol):
    """What listing needs of a retry policy (``fetch.RetryPolicy`` is one)."""

    def retrying(self, kind: str) -> AsyncRetrying:
        """A tenacity loop for one operation of the given kind."""
        ...


async def list_locations(
    client: Any,
    locations: Iterable[tuple[S3Location, Sequence[str]]],
    policy: Retrying | None = None,
) -> dict[S3Location, list[ObjectRef]]:
    """List several locations concurrently in one task group.

    The result maps each location to its objects, in key order. Each location is
    listed again from its first page on a transient failure, under ``policy``. If a
    listing still fails, the others are cancelled and the error propagates (inside an
    exception group, as task groups raise).
    """
    results: dict[S3Location, list[ObjectRef]] = {}

    async def list_one(location: S3Location, include: Sequence[str]) -> None:
        if policy is None:
            results[location] = sorted(await list_objects(client, location, include))
            return

        async for attempt in policy.retrying("list"):
            with attempt:
                results[location] = sorted(
                    await list_objects(client, location, include)
                )

    async with anyio.create_task_group() as group:
        for location, include in locations:
            group.start_soon(list_one, location, include)

    return results
