"""The table handle: creating, evolving and reaching the catalog."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from bifrost_async.commit import TableHandle
from bifrost_async.endpoint import find_free_port
from bifrost_async.errors import CatalogTransientError


def test_table_handle_evolve_twice_with_the_same_columns_logs_once(
    catalog_properties: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers adding the same new column: one schema change, one log line."""
    handle = TableHandle("default", "ns.grow", catalog_properties)
    handle.ensure(pa.schema([pa.field("id", pa.int64())]))
    new = [pa.field("note", pa.string())]

    with caplog.at_level(logging.INFO, logger="bifrost_async.commit"):
        handle.evolve(new)
        table = handle.evolve(new)

    evolved = [r for r in caplog.records if r.getMessage().startswith("table.evolved")]
    assert [r.getMessage() for r in evolved] == [
        "table.evolved table=ns.grow columns=note"
    ]
    assert table.schema().column_names == ["id", "note"]
    assert len(table.schemas()) == 2


def test_table_handle_gives_up_on_an_unreachable_catalog(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A catalog that cannot be reached is retried, then a transient error, not 78."""
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:{find_free_port()}/test"

    with pytest.raises(CatalogTransientError, match="catalog unreachable after 3"):
        TableHandle(
            "default", "ns.t", {"type": "sql", "uri": uri}, attempts=3, max_wait=0.1
        )

    retries = [
        r for r in caplog.records if "retry.scheduled kind=catalog" in r.getMessage()
    ]
    assert len(retries) == 2


def test_table_handle_creates_a_table_with_its_properties(
    catalog_properties: dict[str, str],
) -> None:
    """A created table gets the ingester's defaults under the route's properties."""
    handle = TableHandle(
        "default",
        "ns.made",
        catalog_properties,
        table_properties={"write.parquet.compression-codec": "snappy"},
    )

    table = handle.ensure(pa.schema([pa.field("id", pa.int64())]))

    assert table.properties["write.parquet.dict-size-bytes"] == "131072"
    assert table.properties["write.parquet.compression-codec"] == "snappy"


def test_table_handle_leaves_an_existing_table_s_properties(
    catalog_properties: dict[str, str],
) -> None:
    """A table that exists already is used as it is, its properties untouched."""
    from pyiceberg.catalog import load_catalog

    catalog = load_catalog("default", **catalog_properties)
    catalog.create_namespace("ns")
    catalog.create_table("ns.theirs", schema=pa.schema([pa.field("id", pa.int64())]))
    handle = TableHandle("default", "ns.theirs", catalog_properties)

    table = handle.ensure(pa.schema([pa.field("id", pa.int64())]))

    assert "write.parquet.dict-size-bytes" not in table.properties
