"""The quarantine copy: a quarantined object, and why, under a prefix people can see.

Optional (``--quarantine-prefix``). The ledger stays the record of what was quarantined;
this module only copies the object server-side and writes a small JSON file with the
reason beside it, so that people can look at bad files without the ledger. It must not
decide what is quarantined.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from .config import parse_s3_uri
from .discovery import ObjectRef
from .errors import BifrostError
from .s3 import translate_s3_errors

__all__ = ["copy_to_quarantine", "quarantine_key"]

logger = logging.getLogger(__name__)

# CopyObject copies at most 5 GiB in one request; bigger objects would need a
# multipart copy, which is not worth it for files that failed to ingest.
_MAX_COPY = 5 * 1024**3


def quarantine_key(prefix: str, obj: ObjectRef) -> tuple[str, str]:
    """Where an object's quarantine copy goes: ``<prefix><bucket>/<key>``."""
    location = parse_s3_uri(prefix, "--quarantine-prefix")
    return location.bucket, f"{location.prefix}{obj.bucket}/{obj.key}"


async def copy_to_quarantine(
    client: Any, obj: ObjectRef, reason: str, prefix: str, table: str
) -> bool:
    """Copy ``obj`` under ``prefix`` beside a ``.quarantine.json`` holding the reason.

    Idempotent: a repeated call overwrites the same two objects. The copy only takes
    the version the listing saw (``CopySourceIfMatch`` on its ETag). Never raises for
    S3 failures: they are logged at WARNING and ``False`` is returned, since the ledger
    already holds the reason. Objects over 5 GiB get the JSON file only.
    """
    bucket, key = quarantine_key(prefix, obj)
    note = {
        "source": obj.uri,
        "etag": obj.etag,
        "size": obj.size,
        "table": table,
        "reason": reason,
        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
        "copied": obj.size <= _MAX_COPY,
    }
    try:
        if obj.size <= _MAX_COPY:
            with translate_s3_errors(bucket, key):
                await client.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": obj.bucket, "Key": obj.key},
                    CopySourceIfMatch=f'"{obj.etag}"',
                )

        with translate_s3_errors(bucket, f"{key}.quarantine.json"):
            await client.put_object(
                Bucket=bucket,
                Key=f"{key}.quarantine.json",
                Body=json.dumps(note, indent=2).encode(),
                ContentType="application/json",
            )
    except BifrostError as exc:
        logger.warning("quarantine.copy_failed uri=%s error=%s", obj.uri, exc)
        return False

    logger.debug("quarantine.copied uri=%s to=s3://%s/%s", obj.uri, bucket, key)
    return True
