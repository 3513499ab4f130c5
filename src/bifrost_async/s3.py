"""The S3 client and the one place where botocore's exceptions become ours.

Endpoint, credentials and region come from botocore's standard settings
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, profiles, ...);
``--s3-endpoint`` only overrides the endpoint. botocore's own retries are switched off:
tenacity retries in ``fetch.py`` so that every retry is logged once and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore import exceptions as botocore_errors

from .errors import (
    ObjectChangedError,
    S3PermanentError,
    S3TransientError,
    TruncatedBodyError,
)

__all__ = ["open_s3_client", "translate_s3_errors"]

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "503",
        "500",
        "502",
        "504",
    }
)
_TRANSIENT_EXCEPTIONS = (
    botocore_errors.EndpointConnectionError,
    botocore_errors.ConnectionClosedError,
    botocore_errors.ReadTimeoutError,
    botocore_errors.ConnectTimeoutError,
    botocore_errors.ResponseStreamingError,
    botocore_errors.IncompleteReadError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientConnectionError,
    asyncio.TimeoutError,
    ConnectionError,
)


@contextlib.asynccontextmanager
async def open_s3_client(
    endpoint_url: str | None = None, max_pool_connections: int = 16
) -> AsyncIterator[Any]:
    """Open one aiobotocore S3 client for the whole process.

    The connection pool is sized to the download concurrency, so that no request waits
    for a connection that an unread body holds.
    """
    config = AioConfig(
        max_pool_connections=max_pool_connections,
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=60,
    )
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=endpoint_url, config=config
    ) as client:
        yield client


@contextlib.contextmanager
def translate_s3_errors(bucket: str, key: str) -> Iterator[None]:
    """Turn botocore and aiohttp errors raised inside into transient/permanent ones."""
    try:
        yield
    except botocore_errors.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        detail = error.get("Message", "")
        message = f"s3://{bucket}/{key}: S3 answered {code or status} ({detail})"
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            raise S3TransientError(message) from exc

        if code in ("NoSuchKey", "PreconditionFailed", "404", "412"):
            raise ObjectChangedError(message) from exc

        raise S3PermanentError(message) from exc
    except botocore_errors.FlexibleChecksumError as exc:
        # botocore validates the body against the object's checksum before the caller
        # can compare sizes: a short or damaged body shows up here.
        raise TruncatedBodyError(
            f"s3://{bucket}/{key}: body does not match its checksum (truncated or "
            f"damaged in transit): {exc}"
        ) from exc
    except botocore_errors.NoCredentialsError as exc:
        raise S3PermanentError(
            f"s3://{bucket}/{key}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY or a profile"
        ) from exc
    except _TRANSIENT_EXCEPTIONS as exc:
        raise S3TransientError(
            f"s3://{bucket}/{key}: {type(exc).__name__}: {exc}"
        ) from exc
