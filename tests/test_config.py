"""Settings: defaults, the TOML file and flags, merged and validated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from bifrost_async.config import (
    S3Location,
    load_settings,
    normalize_state_url,
    parse_duration,
    parse_s3_uri,
    parse_size,
)
from bifrost_async.errors import ConfigError


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/prefix", S3Location("bucket", "prefix/")),
        ("s3://bucket/a/b/", S3Location("bucket", "a/b/")),
        ("s3://bucket", S3Location("bucket", "")),
        ("s3a://my.bucket-1/x", S3Location("my.bucket-1", "x/")),
    ],
    ids=["no-slash", "nested", "whole-bucket", "s3a"],
)
def test_parse_s3_uri_accepts_bucket_and_prefix(uri: str, expected: S3Location) -> None:
    """A source URI becomes a bucket and a prefix that ends in a slash."""
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri", ["http://bucket/x", "bucket/x", "s3://B/x", "s3://ab/x"], ids=str
)
def test_parse_s3_uri_rejects_what_is_not_s3(uri: str) -> None:
    """A URI that is not s3://bucket/prefix names the setting and the value."""
    with pytest.raises(ConfigError, match=r"--source: .*"):
        parse_s3_uri(uri)


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("512MiB", 512 * 1024**2), ("2GB", 2 * 10**9), ("1.5k", 1500)],
    ids=str,
)
def test_parse_size_reads_units(text: str, size: int) -> None:
    """Sizes take decimal and binary units."""
    assert parse_size(text, "--max-bytes") == size


@pytest.mark.parametrize("text", ["ten", "5 parsecs", "0", "-3MB"], ids=str)
def test_parse_size_rejects_nonsense(text: str) -> None:
    """A size that is not a positive amount names the setting."""
    with pytest.raises(ConfigError, match="--max-bytes"):
        parse_size(text, "--max-bytes")


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("90s", 90.0), ("5m", 300.0), ("12h", 43200.0)]
)
def test_parse_duration_reads_units(text: str, seconds: float) -> None:
    """Durations take s, m, h and d."""
    assert parse_duration(text, "--max-uptime") == seconds


def test_normalize_state_url_turns_a_path_into_sqlite() -> None:
    """A plain path means a SQLite ledger file; other schemes are refused."""
    assert normalize_state_url("state.db") == "sqlite:///state.db"
    assert normalize_state_url("postgresql://h/db") == "postgresql://h/db"
    with pytest.raises(ConfigError, match="--state"):
        normalize_state_url("mysql://h/db")


def write_config(tmp_path: Path, text: str) -> str:
    """Write a TOML config file and return its path."""
    path = tmp_path / "bifrost.toml"
    path.write_text(text)
    return str(path)


def test_load_settings_reads_routes_from_the_file(tmp_path: Path) -> None:
    """Several [[route]] tables become several routes with their own options."""
    config = write_config(
        tmp_path,
        """
        concurrency = 8
        max-bytes = "1GB"

        [[route]]
        sources = ["s3://landing/orders/", "s3://landing/orders-late/"]
        table = "sales.orders"
        evolution = "freeze"

        [[route]]
        sources = ["s3://landing/clicks/"]
        table = "web.clicks"
        include = ["*.parquet"]
        """,
    )

    settings = load_settings({}, config)

    assert settings.concurrency == 8
    assert settings.max_bytes == 10**9
    assert [r.table for r in settings.routes] == ["sales.orders", "web.clicks"]
    assert settings.routes[0].sources == (
        S3Location("landing", "orders/"),
        S3Location("landing", "orders-late/"),
    )
    assert settings.routes[0].evolution == "freeze"
    assert settings.routes[1].include == ("*.parquet",)


def test_load_settings_flags_win_over_the_file(tmp_path: Path) -> None:
    """A flag on the command line replaces the file's value; unset flags do not."""
    config = write_config(
        tmp_path,
        """
        concurrency = 8
        poll-interval = "2m"
        [[route]]
        sources = ["s3://landing/orders/"]
        table = "sales.orders"
        """,
    )

    settings = load_settings({"concurrency": 32, "poll_interval": None}, config)

    assert settings.concurrency == 32
    assert settings.poll_interval == 120.0
    assert settings.routes[0].table == "sales.orders"


def test_load_settings_source_flags_replace_file_routes(tmp_path: Path) -> None:
    """--source and --table describe one route that replaces the file's routes."""
    config = write_config(
        tmp_path,
        """
        [[route]]
        sources = ["s3://landing/orders/"]
        table = "sales.orders"
        """,
    )

    settings = load_settings(
        {"source": ["s3://other/in/"], "table": "ns.events"}, config
    )

    assert [(r.sources, r.table) for r in settings.routes] == [
        ((S3Location("other", "in/"),), "ns.events")
    ]


def test_load_settings_defaults_without_a_file() -> None:
    """With only a source and a table, every other setting has its default."""
    settings = load_settings({"source": ["s3://landing/x/"], "table": "ns.t"})

    assert settings.state == "sqlite:///bifrost-state.db"
    assert settings.routes[0].catalog == "default"
    assert settings.routes[0].evolution == "add"
    assert settings.on_changed == "ignore"


@pytest.mark.parametrize(
    ("flags", "setting"),
    [
        ({}, "--source"),
        ({"source": ["s3://landing/x/"]}, "--table"),
        ({"source": ["s3://landing/x/"], "table": "flat"}, "--table"),
        (
            {"source": ["s3://landing/x/"], "table": "a.b", "concurrency": 0},
            "--concurrency",
        ),
        (
            {"source": ["s3://landing/x/"], "table": "a.b", "on_changed": "maybe"},
            "--on-changed",
        ),
        (
            {"source": ["s3://landing/x/"], "table": "a.b", "transform": "nocolon"},
            "--transform",
        ),
    ],
    ids=[
        "no-source",
        "no-table",
        "flat-table",
        "zero-concurrency",
        "bad-choice",
        "bad-transform",
    ],
)
def test_load_settings_names_the_bad_setting(
    flags: dict[str, object], setting: str
) -> None:
    """Each invalid setting raises a ConfigError whose message starts with its name."""
    with pytest.raises(ConfigError) as raised:
        load_settings(flags)

    assert str(raised.value).startswith(setting)


def test_load_settings_rejects_a_broken_file(tmp_path: Path) -> None:
    """A missing or malformed config file names --config."""
    with pytest.raises(ConfigError, match="--config: .*does not exist"):
        load_settings({}, str(tmp_path / "missing.toml"))

    with pytest.raises(ConfigError, match="--config: .*not valid TOML"):
        load_settings({}, write_config(tmp_path, "route = [[["))


ROUTE = '[[route]]\nsources = ["s3://landing/p/"]\ntable = "ns.t"\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param(
            'max-rs = "1GB"\n' + ROUTE,
            "'max-rs'",
            id="top-level",
        ),
        pytest.param(
            ROUTE + 'evolutoin = "add"\n',
            "'evolutoin'",
            id="in-a-route",
        ),
    ],
)
def test_load_settings_refuses_an_unknown_setting(
    tmp_path: Path, text: str, named: str
) -> None:
    """A misspelt setting in the file is a configuration error naming it."""
    with pytest.raises(ConfigError, match=named):
        load_settings({}, write_config(tmp_path, text))
