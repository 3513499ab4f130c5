"""The quarantine copy against a moto S3 server, alone and inside a run."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bifrost_async.discovery import ObjectRef
from bifrost_async.quarantine import copy_to_quarantine, quarantine_key
from bifrost_async.runner import run
from bifrost_async.s3 import open_s3_client

from .helpers import upload_numbers

pytestmark = pytest.mark.anyio


def test_quarantine_key_keeps_bucket_and_key_under_the_prefix() -> None:
    """A copy lands at ``<prefix><source bucket>/<source key>``."""
    obj = ObjectRef("landing", "orders/dt=1/a.parquet", 3, "e")

    assert quarantine_key("s3://bad/q", obj) == (
        "bad",
        "q/landing/orders/dt=1/a.parquet",
    )


async def test_quarantine_run_copies_bad_objects_with_their_reason(
    s3: Any, bucket: str, make_settings: Callable[..., Any]
) -> None:
    """Each quarantined object is copied under the prefix beside a JSON reason."""
    upload_numbers(s3, bucket, "in/good.parquet", 0, 5)
    s3.put_object(Bucket=bucket, Key="in/bad.parquet", Body=b"id,label\n1,a\n")
    settings = make_settings(
        [f"s3://{bucket}/in/"], quarantine_prefix=f"s3://{bucket}/quarantine/"
    )

    result = await run(settings)

    assert (result.report.ingested, result.report.quarantined) == (1, 1)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="quarantine/")
    keys = sorted(item["Key"] for item in listed["Contents"])
    copy = f"quarantine/{bucket}/in/bad.parquet"
    assert keys == [copy, f"{copy}.quarantine.json"]
    body = s3.get_object(Bucket=bucket, Key=copy)["Body"].read()
    assert body == b"id,label\n1,a\n"
    note = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{copy}.quarantine.json")["Body"].read()
    )
    assert note["source"] == f"s3://{bucket}/in/bad.parquet"
    assert note["table"] == "ns.events"
    assert "not a Parquet file" in note["reason"]


async def test_quarantine_copy_of_a_vanished_object_fails_softly(
    s3: Any, bucket: str, moto_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An object deleted since listing is not copied; the failure is only logged."""
    gone = ObjectRef(bucket, "in/gone.parquet", 8, "0" * 32)

    async with open_s3_client(moto_endpoint, 2) as client:
        copied = await copy_to_quarantine(
            client, gone, "reason", f"s3://{bucket}/q/", "ns.events"
        )

    assert copied is False
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="q/")
    assert any("quarantine.copy_failed" in r.msg for r in caplog.records)
