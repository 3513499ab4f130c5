"""Fixtures shared by the tests: a moto S3 server process, catalogs, ledgers, inputs.

Everything that talks to S3 talks HTTP to a real moto server on 127.0.0.1; everything
that commits uses a real pyiceberg SqlCatalog (SQLite, or PostgreSQL where writers
meet). Inputs under ``../shared`` are read in place and never copied.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bifrost_async.config import Route, Settings, parse_s3_uri
from bifrost_async.endpoint import run_moto_server

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI") == "true"
POSTGRES_URL = os.environ.get(
    "BIFROST_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def skip_or_fail(reason: str) -> None:
    """Skip where a resource cannot be had; under CI=true that is a failure."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)")

    pytest.skip(reason)


@pytest.fixture
def anyio_backend() -> str:
    """aiobotocore runs on asyncio only."""
    return "asyncio"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server process for the whole session, with dummy credentials."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_REGION", "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with run_moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client to arrange objects on the moto server."""
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def catalog_properties(tmp_path: Path) -> dict[str, str]:
    """A SQLite pyiceberg catalog and a local warehouse in the test's folder."""
    return {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"file://{tmp_path / 'warehouse'}",
    }


@pytest.fixture
def catalog_env(catalog_properties: dict[str, str]) -> dict[str, str]:
    """The same catalog as PYICEBERG_CATALOG__DEFAULT__* variables, for subprocesses."""
    env = dict(os.environ)
    for name, value in catalog_properties.items():
        env[f"PYICEBERG_CATALOG__DEFAULT__{name.upper()}"] = value

    return env


@pytest.fixture
def make_settings(
    tmp_path: Path, moto_endpoint: str, catalog_properties: dict[str, str]
) -> Callable[..., Settings]:
    """Build Settings for one route into ``ns.<table>`` against the test catalog."""

    def build(
        sources: list[str],
        table: str = "ns.events",
        route: dict[str, Any] | None = None,
        **values: Any,
    ) -> Settings:
        defaults: dict[str, Any] = {
            "state": f"sqlite:///{tmp_path / 'state.db'}",
            "once": True,
            "s3_endpoint": moto_endpoint,
            "catalog_properties": catalog_properties,
            "poll_interval": 0.2,
            "batch_max_age": 1.0,
        }
        defaults.update(values)
        return Settings(
            routes=(
                Route(
                    sources=tuple(parse_s3_uri(s) for s in sources),
                    table=table,
                    **(route or {}),
                ),
            ),
            **defaults,
        )

    return build


@pytest.fixture
def load_table(catalog_properties: dict[str, str]) -> Callable[[str], Any]:
    """Load a table from the test catalog by name."""
    from pyiceberg.catalog import load_catalog

    def load(identifier: str = "ns.events") -> Any:
        return load_catalog("default", **catalog_properties).load_table(identifier)

    return load


@pytest.fixture(scope="session")
def shared() -> Path:
    """The shared inputs folder; skipped (failed under CI) where it is absent."""
    if not (SHARED / "data").is_dir() or not (SHARED / "cases").is_dir():
        skip_or_fail(f"{SHARED} with data/ and cases/ is not present")

    return SHARED


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A reachable PostgreSQL database; skipped (failed under CI) where none is."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:
        skip_or_fail(f"no PostgreSQL server at {POSTGRES_URL}: {exc}")

    return POSTGRES_URL
