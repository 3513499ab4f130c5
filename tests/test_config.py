"""Settings: defaults, the TOML file and flags, merged and validated once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bifrost_async.config import (
    S3Location,
    find_error_delay,
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


@pytest.mark.parametrize(
    ("state", "url"),
    [
        ("state.db", "sqlite:///state.db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgres://u:pw@h:5432/db", "postgresql+psycopg2://u:pw@h:5432/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+pg8000://u@h/db", "postgresql+pg8000://u@h/db"),
        ("postgres+pg8000://u@h/db", "postgresql+pg8000://u@h/db"),
    ],
    ids=[
        "path",
        "sqlite",
        "postgresql",
        "postgres",
        "explicit-psycopg2",
        "other-driver",
        "postgres-driver",
    ],
)
def test_normalize_state_url_picks_an_installed_driver(state: str, url: str) -> None:
    """A path means SQLite; a PostgreSQL URL without a driver uses psycopg2."""
    assert normalize_state_url(state) == url


@pytest.mark.parametrize(
    "state", ["mysql://h/db", "", 5], ids=["other-scheme", "empty", "number"]
)
def test_normalize_state_url_refuses_other_databases(state: object) -> None:
    """A URL of another database, or no text at all, is refused naming --state."""
    with pytest.raises(ConfigError, match="^--state: "):
        normalize_state_url(state)


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '[route]\nsources = ["s3://landing/p/"]\ntable = "ns.t"\n',
            "route: a single [route] table",
            id="route-single-table",
        ),
        pytest.param('route = "x"\n', "route: 'x' is not a list", id="route-string"),
        pytest.param('route = ["x"]\n', "route: ['x'] is not a list", id="route-items"),
        pytest.param(
            '[[route]]\nsources = 5\ntable = "ns.t"\n',
            "[[route]] #1 sources: 5 is not",
            id="sources-number",
        ),
        pytest.param(
            '[[route]]\nsources = [5]\ntable = "ns.t"\n',
            "[[route]] #1 sources: 5 is not",
            id="sources-list-of-numbers",
        ),
        pytest.param(
            ROUTE + "transform = 5\n", "[[route]] #1 transform: 5", id="transform"
        ),
        pytest.param(ROUTE + "include = 5\n", "[[route]] #1 include: 5", id="include"),
        pytest.param(
            ROUTE + "include = []\n", "[[route]] #1 include", id="include-empty"
        ),
        pytest.param(
            '[[route]]\nsources = ["s3://landing/p/"]\ntable = 5\n',
            "[[route]] #1 table: 5",
            id="table",
        ),
        pytest.param(
            '[[route]]\nsources = ["s3://landing/p/"]\n',
            "[[route]] #1 table: no table given",
            id="table-missing",
        ),
        pytest.param(ROUTE + "catalog = 5\n", "[[route]] #1 catalog: 5", id="catalog"),
        pytest.param(
            ROUTE + "evolution = 5\n", "[[route]] #1 evolution: 5", id="evolution"
        ),
        pytest.param("catalog = 5\n" + ROUTE, "--catalog: 5", id="top-level-catalog"),
        pytest.param(
            "concurrency = 4.5\n" + ROUTE, "--concurrency: 4.5", id="int-float"
        ),
        pytest.param(
            "concurrency = true\n" + ROUTE, "--concurrency: True", id="int-bool"
        ),
        pytest.param(
            'concurrency = "lots"\n' + ROUTE, "--concurrency: 'lots'", id="int-text"
        ),
        pytest.param(
            "metrics-port = 99999\n" + ROUTE, "--metrics-port: 99999", id="port"
        ),
        pytest.param("state = 5\n" + ROUTE, "--state: 5", id="state"),
        pytest.param('once = "no"\n' + ROUTE, "--once: 'no'", id="bool-text"),
        pytest.param("lineage = 1\n" + ROUTE, "--lineage: 1", id="bool-number"),
        pytest.param("max-bytes = 1.5\n" + ROUTE, "--max-bytes: 1.5", id="size-float"),
        pytest.param("max-rss = true\n" + ROUTE, "--max-rss: True", id="size-bool"),
        pytest.param(
            "max-uptime = nan\n" + ROUTE, "--max-uptime: nan", id="duration-nan"
        ),
        pytest.param(
            "max-uptime = [1]\n" + ROUTE, "--max-uptime: [1]", id="duration-list"
        ),
        pytest.param("log-level = 5\n" + ROUTE, "--log-level: 5", id="log-level"),
        pytest.param("log-format = 5\n" + ROUTE, "--log-format: 5", id="log-format"),
        pytest.param("on-changed = 5\n" + ROUTE, "--on-changed: 5", id="choice"),
        pytest.param("s3-endpoint = 5\n" + ROUTE, "--s3-endpoint: 5", id="endpoint"),
        pytest.param(
            "heartbeat-file = 5\n" + ROUTE, "--heartbeat-file: 5", id="heartbeat"
        ),
        pytest.param("naive-timezone = 5\n" + ROUTE, "--naive-timezone: 5", id="zone"),
        pytest.param(
            "quarantine-prefix = 5\n" + ROUTE, "--quarantine-prefix: 5", id="prefix"
        ),
        pytest.param("crash-markers = 5\n" + ROUTE, "crash-markers: 5", id="markers"),
        pytest.param("metrics-addr = 5\n" + ROUTE, "--metrics-addr: 5", id="addr"),
        pytest.param("error-delay = -1\n" + ROUTE, "--error-delay: -1", id="delay"),
        pytest.param(
            "catalog-properties = 5\n" + ROUTE,
            "catalog-properties: 5",
            id="properties",
        ),
        pytest.param(
            "progress = true\nno-progress = true\n" + ROUTE,
            "no-progress: contradicts progress",
            id="progress-twice",
        ),
    ],
)
def test_load_settings_refuses_a_value_of_the_wrong_type(
    tmp_path: Path, text: str, message: str
) -> None:
    """A file value of the wrong type or range is a ConfigError naming the setting."""
    with pytest.raises(ConfigError) as raised:
        load_settings({}, write_config(tmp_path, text))

    assert str(raised.value).startswith(message)


def test_load_settings_takes_one_source_as_a_string(tmp_path: Path) -> None:
    """``sources = "s3://..."`` in a route is that one source."""
    config = write_config(
        tmp_path, '[[route]]\nsources = "s3://landing/p/"\ntable = "ns.t"\n'
    )

    assert load_settings({}, config).routes[0].sources == (S3Location("landing", "p/"),)


def test_load_settings_reads_the_command_settings_from_the_file(tmp_path: Path) -> None:
    """log-level, metrics-addr, error-delay and no-progress are settings of the file."""
    config = write_config(
        tmp_path,
        'log-level = "debug"\nmetrics-addr = "127.0.0.1"\nerror-delay = 0.5\n'
        "no-progress = true\n" + ROUTE,
    )

    settings = load_settings({}, config)

    assert settings.log_level == "DEBUG"
    assert settings.metrics_addr == "127.0.0.1"
    assert settings.error_delay == 0.5
    assert settings.progress is False


def test_load_settings_command_flags_win_over_the_file(tmp_path: Path) -> None:
    """The flags of log level, metrics address and error delay replace the file's."""
    config = write_config(
        tmp_path,
        'log-level = "DEBUG"\nmetrics-addr = "127.0.0.1"\nerror-delay = 3\n' + ROUTE,
    )
    flags = {"log_level": "warning", "metrics_addr": "::1", "error_delay": "0"}

    settings = load_settings(flags, config)

    assert (settings.log_level, settings.metrics_addr) == ("WARNING", "::1")
    assert settings.error_delay == 0.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"log_level": "LOUD"}, "--log-level: 'LOUD' is not one of DEBUG"),
        ({"metrics_port": 99999}, "--metrics-port: 99999 is not a port"),
        ({"metrics_port": 0}, "--metrics-port: 0 is not a port"),
        ({"s3_endpoint": "not-a-url"}, "--s3-endpoint: 'not-a-url' is not an http"),
        ({"s3_endpoint": "ftp://host"}, "--s3-endpoint: 'ftp://host' is not an http"),
        ({"s3_endpoint": "http://"}, "--s3-endpoint: 'http://' is not an http"),
        ({"s3_endpoint": "http://h:99999"}, "--s3-endpoint: 'http://h:99999'"),
        ({"heartbeat_file": "/no/such/folder/hb"}, "--heartbeat-file: the folder of"),
        ({"error_delay": "-1"}, "--error-delay: '-1' must not be negative"),
        ({"error_delay": "nan"}, "--error-delay: 'nan' is not a number"),
        ({"error_delay": "inf"}, "--error-delay: 'inf' is not a number"),
    ],
    ids=[
        "log-level",
        "port-too-high",
        "port-zero",
        "endpoint-not-a-url",
        "endpoint-scheme",
        "endpoint-no-host",
        "endpoint-port",
        "heartbeat-folder",
        "delay-negative",
        "delay-nan",
        "delay-infinite",
    ],
)
def test_load_settings_refuses_a_bad_flag(
    flags: dict[str, object], message: str
) -> None:
    """A flag value out of range is a ConfigError naming the flag."""
    with pytest.raises(ConfigError) as raised:
        load_settings({"source": ["s3://landing/x/"], "table": "ns.t", **flags})

    assert str(raised.value).startswith(message)


def test_load_settings_keeps_endpoint_credentials_out_of_the_message() -> None:
    """An endpoint with a user and password is refused without echoing either."""
    flags = {
        "source": ["s3://landing/x/"],
        "table": "ns.t",
        "s3_endpoint": "http://AKIDEXAMPLE:wJalrXUtnFEMIexample@host:9000",
    }

    with pytest.raises(ConfigError) as raised:
        load_settings(flags)

    message = str(raised.value)
    assert message.startswith("--s3-endpoint: the URL holds credentials")
    assert "AKIDEXAMPLE" not in message
    assert "wJalrXUtnFEMIexample" not in message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"source": ["s3://landing/x/"]},
            "--table: no table given; add --table namespace.table with --source",
        ),
        (
            {"table": "ns.t"},
            "--source: missing; give s3://bucket/prefix/ with --table",
        ),
    ],
    ids=["source-without-table", "table-without-source"],
)
def test_load_settings_says_which_half_of_a_route_is_missing(
    flags: dict[str, object], message: str
) -> None:
    """A source without a table (or the reverse) says what is missing and how."""
    with pytest.raises(ConfigError) as raised:
        load_settings(flags)

    assert str(raised.value) == message


def test_load_settings_heartbeat_file_in_an_existing_folder(tmp_path: Path) -> None:
    """A heartbeat file whose folder exists is accepted (the file need not exist)."""
    heartbeat = str(tmp_path / "bifrost.heartbeat")
    flags = {
        "source": ["s3://landing/x/"],
        "table": "ns.t",
        "heartbeat_file": heartbeat,
    }

    assert load_settings(flags).heartbeat_file == heartbeat


@pytest.mark.parametrize(
    ("flag", "text", "delay"),
    [
        ("2", "error-delay = 7\n", 2.0),
        (None, "error-delay = 7\n", 7.0),
        ("-1", "error-delay = 7\n", 7.0),
        (None, "error-delay = 7\nconcurrency = 4.5\n", 7.0),
        (None, "error-delay = 7\n[[[", None),
        (None, "", None),
        ("nan", 'error-delay = "soon"\n', None),
    ],
    ids=[
        "flag-wins",
        "file",
        "bad-flag-then-file",
        "file-with-other-errors",
        "broken-file",
        "neither",
        "neither-valid",
    ],
)
def test_find_error_delay_falls_back_without_raising(
    tmp_path: Path, flag: str | None, text: str, delay: float | None
) -> None:
    """The delay before exit 78 comes from a valid flag, then the file, else None."""
    assert find_error_delay(flag, write_config(tmp_path, text)) == delay


def read_readme_toml_blocks() -> list[tuple[str, str]]:
    """Each ```toml block of README.md with the heading of its section."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    fence_or_heading = re.compile(
        r"^```(\w*)\n(.*?)^```$|^#{2,} ([^\n]+)$", re.M | re.S
    )
    blocks, heading = [], ""
    for match in fence_or_heading.finditer(readme):
        if match.group(3):
            heading = match.group(3).strip()
        elif match.group(1) == "toml":
            blocks.append((heading, match.group(2)))

    return blocks


def test_readme_has_a_bifrost_toml_for_circusd(tmp_path: Path) -> None:
    """The circusd section of README.md shows a bifrost.toml with routes and budgets."""
    (text,) = [t for h, t in read_readme_toml_blocks() if h == "Running under circusd"]

    settings = load_settings({}, write_config(tmp_path, text))

    assert len(settings.routes) >= 1
    assert settings.state.startswith("postgresql+psycopg2://")
    assert settings.max_uptime and settings.max_rss


@pytest.mark.parametrize(
    "text",
    [text for _, text in read_readme_toml_blocks()],
    ids=[heading for heading, _ in read_readme_toml_blocks()],
)
def test_readme_toml_examples_load(tmp_path: Path, text: str) -> None:
    """Every TOML example in README.md is a valid --config file."""
    settings = load_settings({}, write_config(tmp_path, text))

    assert settings.routes
    assert settings.state.startswith(("sqlite:///", "postgresql+psycopg2://"))


def test_config_table_properties_of_a_route_merge_over_the_top_level_ones(
    tmp_path: Path,
) -> None:
    """Top-level table-properties are each route's; a route's own merge over them."""
    path = write_config(
        tmp_path,
        '[table-properties]\n"write.parquet.compression-codec" = "snappy"\n\n'
        '[[route]]\nsources = ["s3://landing/a/"]\ntable = "ns.a"\n\n'
        '[[route]]\nsources = ["s3://landing/b/"]\ntable = "ns.b"\n'
        'table-properties = { "write.target-file-size-bytes" = "1048576" }\n',
    )

    first, second = load_settings({}, path).routes

    assert first.table_properties == (("write.parquet.compression-codec", "snappy"),)
    assert second.table_properties == (
        ("write.parquet.compression-codec", "snappy"),
        ("write.target-file-size-bytes", "1048576"),
    )


def test_config_table_properties_must_be_strings(tmp_path: Path) -> None:
    """A property value that is not a string is refused, naming the route's key."""
    path = write_config(
        tmp_path,
        '[[route]]\nsources = ["s3://landing/a/"]\ntable = "ns.a"\n'
        'table-properties = { "write.target-file-size-bytes" = 1048576 }\n',
    )

    with pytest.raises(ConfigError, match=r"^\[\[route\]\] #1 table_properties: "):
        load_settings({}, path)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lease_seconds": 0}, "^lease-seconds: 0 is shorter than 10s"),
        ({"crash_markers": "/proc/version"}, "^crash-markers: '/proc/version' exists"),
        ({"crash_markers": "/no/such/dir/x"}, "^crash-markers: the folder above"),
        ({"catalog_properties": 5}, "^catalog-properties: 5 is not a table"),
    ],
    ids=["lease-zero", "markers-is-a-file", "markers-parent-missing", "catalog-props"],
)
def test_config_file_only_settings_are_checked_and_named_as_written(
    values: dict[str, object], message: str
) -> None:
    """Settings without a flag are named as the file writes them, never as flags."""
    with pytest.raises(ConfigError, match=message):
        load_settings({"source": ["s3://landing/x/"], "table": "ns.t", **values})


@pytest.mark.parametrize("value", ["off", False], ids=["off", "false"])
def test_config_expire_snapshots_after_can_say_off(value: object) -> None:
    """``expire-snapshots-after = "off"`` is the default, spelled out."""
    settings = load_settings(
        {
            "source": ["s3://landing/x/"],
            "table": "ns.t",
            "expire_snapshots_after": value,
        }
    )

    assert settings.expire_snapshots_after is None


def test_config_file_value_is_checked_even_where_a_flag_replaces_it(
    tmp_path: Path,
) -> None:
    """A wrong value in the file is an error even when this run's flag wins."""
    path = write_config(tmp_path, 'once = "false"\n' + ROUTE)

    with pytest.raises(ConfigError, match="^--once: 'false'"):
        load_settings({"once": True}, path)
