"""Listing: every page of every prefix, concurrently, with markers left out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bifrost_async.config import DEFAULT_INCLUDE, S3Location
from bifrost_async.discovery import is_data_key, list_locations
from bifrost_async.fetch import RetryPolicy
from bifrost_async.s3 import open_s3_client


@pytest.mark.parametrize(
    "key",
    [
        "in/part-00000-1b2c.snappy.parquet",
        "in/dt=2024-06-01/data.parquet",
        "in/x.parq",
        "in/part-00001",
    ],
    ids=["spark-part", "hive-partition", "parq", "part-without-suffix"],
)
def test_is_data_key_accepts_data(key: str) -> None:
    """Parquet names and Spark part files count as data."""
    assert is_data_key(key, "in/", DEFAULT_INCLUDE)


@pytest.mark.parametrize(
    "key",
    [
        "in/",
        "in/dt=2024-06-01/",
        "in/_SUCCESS",
        "in/dt=2024-06-01_$folder$",
        "in/.part-00000.parquet.crc",
        "in/part-00000.parquet.crc",
        "in/_metadata",
        "in/_common_metadata",
        "in/_temporary/0/task/part-00000.parquet",
        "in/.hidden.parquet",
        "in/_staging/x.parquet",
        "in/notes.csv",
        "in/listing.json",
    ],
    ids=lambda key: key.removeprefix("in/") or "prefix-marker",
)
def test_is_data_key_skips_markers_and_side_files(key: str) -> None:
    """Markers, checksums, summaries, attempts and hidden names are not data."""
    assert not is_data_key(key, "in/", DEFAULT_INCLUDE)


def test_is_data_key_hidden_check_starts_below_the_prefix() -> None:
    """A configured prefix may itself contain an underscore segment."""
    assert is_data_key("_landing/a.parquet", "_landing/", DEFAULT_INCLUDE)


def test_is_data_key_honours_a_custom_include() -> None:
    """A user's include patterns decide what counts as data."""
    assert is_data_key("in/a.pq", "in/", ("*.pq",))
    assert not is_data_key("in/a.parquet", "in/", ("*.pq",))


@pytest.mark.anyio
async def test_list_locations_follows_every_page_of_every_prefix(
    s3: Any, bucket: str, moto_endpoint: str
) -> None:
    """Three prefixes, one of them over two pages, are listed whole and concurrently."""
    keys = {
        "big/": [f"big/part-{n:05d}.parquet" for n in range(1_150)],
        "small/": [f"small/f{n}.parquet" for n in range(30)],
        "mixed/": ["mixed/a.parquet", "mixed/_SUCCESS", "mixed/a.parquet.crc"],
    }
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x" * 3),
                [key for group in keys.values() for key in group],
            )
        )

    locations = [(S3Location(bucket, prefix), DEFAULT_INCLUDE) for prefix in keys]
    async with open_s3_client(moto_endpoint) as client:
        found = await list_locations(client, locations, RetryPolicy())

    listed = {loc.prefix: [obj.key for obj in objs] for loc, objs in found.items()}
    assert listed == {
        "big/": sorted(keys["big/"]),
        "small/": sorted(keys["small/"]),
        "mixed/": ["mixed/a.parquet"],
    }
    sample = found[S3Location(bucket, "mixed/")][0]
    assert (sample.size, len(sample.etag)) == (3, 32)
