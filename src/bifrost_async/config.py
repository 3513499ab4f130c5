"""Settings: parsed once from defaults, a TOML file and flags, then frozen.

Precedence is flags over the file over defaults. This module owns validation: every
invalid setting raises :class:`ConfigError` naming the setting, so the command can exit
78 with one line. It must not touch the network, the catalog or the ledger.

The catalog itself is configured the way pyiceberg configures it (``.pyiceberg.yaml``,
``PYICEBERG_CATALOG__<NAME>__...``); S3 the way botocore does (``AWS_*`` variables and
profiles). Only the catalog *name* and an optional S3 endpoint override live here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError
from .setting_values import (
    is_str,
    parse_duration,
    parse_error_delay,
    parse_size,
    read_bool,
    read_choice,
    read_heartbeat_file,
    read_log_level,
    read_port,
    read_positive_int,
    read_properties,
    read_s3_endpoint,
    read_string,
    read_time_zone,
)

__all__ = [
    "DEFAULT_INCLUDE",
    "Route",
    "S3Location",
    "Settings",
    "find_error_delay",
    "load_settings",
    "normalize_state_url",
    "parse_duration",
    "parse_s3_uri",
    "parse_size",
]

DEFAULT_INCLUDE = ("*.parquet", "*.parq", "part-*")

EvolutionMode = Literal["add", "freeze", "discard"]
ChangedMode = Literal["ignore", "ingest"]
ZeroCopyMode = Literal["off", "copy", "in-place"]

_TABLE_NAME = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True, order=True)
class S3Location:
    """A bucket and a key prefix, as written ``s3://bucket/prefix/``."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class Route:
    """Sources that feed one Iceberg table, and how their files are taken in.

    ``table_properties`` are given to the table when the ingester creates it (over
    :data:`~bifrost_async.commit.CREATED_TABLE_PROPERTIES`); an existing table keeps
    its own.
    """

    sources: tuple[S3Location, ...]
    table: str
    catalog: str = "default"
    evolution: EvolutionMode = "add"
    transform: str | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE
    table_properties: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated. Sizes are bytes and durations seconds.

    ``error_delay`` ``None`` leaves the wait before exit 78 to the command (5 s when
    stderr is not a terminal, else none).
    """

    routes: tuple[Route, ...]
    state: str = "sqlite:///bifrost-state.db"
    once: bool = False
    concurrency: int = 16
    max_inflight_bytes: int = 256 * 1024**2
    batch_max_files: int = 200
    batch_max_bytes: int = 512 * 1024**2
    batch_max_age: float = 10.0
    poll_interval: float = 30.0
    max_iterations: int | None = None
    max_bytes: int | None = None
    max_rss: int | None = None
    max_uptime: float | None = None
    grace_period: float = 20.0
    lease_seconds: float = 120.0
    expire_snapshots_after: float | None = None
    on_changed: ChangedMode = "ignore"
    s3_endpoint: str | None = None
    quarantine_prefix: str | None = None
    heartbeat_file: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    progress: bool = True
    metrics_port: int | None = None
    metrics_addr: str = "0.0.0.0"
    error_delay: float | None = None
    naive_timezone: str | None = None
    lineage: bool = False
    stream_above: int = 128 * 1024**2
    crash_markers: str | None = None
    zero_copy: ZeroCopyMode = "off"
    catalog_properties: Mapping[str, str] = field(default_factory=dict)


def parse_s3_uri(uri: object, setting: str = "--source") -> S3Location:
    """Split ``s3://bucket/prefix`` into a location; the prefix always ends in ``/``.

    An empty prefix means the whole bucket.
    """
    match = re.match(r"^s3a?://([^/]+)/?(.*)$", uri.strip()) if is_str(uri) else None
    if match is None:
        raise ConfigError(f"{setting}: {uri!r} is not an s3://bucket/prefix/ URI")

    bucket, prefix = match.group(1), match.group(2)
    if not _BUCKET_NAME.match(bucket):
        raise ConfigError(
            f"{setting}: {bucket!r} in {uri!r} is not a valid bucket name"
        )

    if prefix and not prefix.endswith("/"):
        prefix += "/"

    return S3Location(bucket, prefix)


def load_settings(flags: Mapping[str, Any], config_file: str | None = None) -> Settings:
    """Merge defaults, a TOML file and command-line flags into one :class:`Settings`.

    ``flags`` holds only the flags the user gave (``None`` means not given). Flags that
    name a source or a table replace the file's routes with the one route they describe.
    """
    file_values = read_config_file(config_file) if config_file else {}
    # The file's own values are checked even where a flag replaces them: a wrong
    # value in the file is an error the next run without that flag would meet.
    read_scalars(file_values)
    merged: dict[str, Any] = dict(file_values)
    merged.update({name: value for name, value in flags.items() if value is not None})

    routes = build_routes(merged, file_values)
    return build_settings(merged, routes)


def read_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError.

    Keys are the flags' names without ``--`` (``max-uptime``); they come back with
    underscores. ``no-progress = true`` becomes ``progress = false``.
    """
    try:
        with Path(path).open("rb") as stream:
            values = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"--config: cannot read {path!r} ({exc.strerror or exc})"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: {path!r} is not valid TOML ({exc})") from None

    values = {key.replace("-", "_"): value for key, value in values.items()}
    if "no_progress" in values:
        progress = not read_bool(values.pop("no_progress"), "no-progress")
        if values.setdefault("progress", progress) != progress:
            raise ConfigError(
                "no-progress: contradicts progress in the same file; keep one of them"
            )

    return values


def find_error_delay(flag: object, config_file: str | None) -> float | None:
    """The ``error-delay`` to wait before exiting 78, when settings could not load.

    A valid flag wins, then a valid value in the file; ``None`` when there is neither.
    Never raises: it runs on the way out of a configuration error.
    """
    with contextlib.suppress(ConfigError):
        if flag is not None:
            return parse_error_delay(flag, "--error-delay")

    with contextlib.suppress(ConfigError):
        value = (
            read_config_file(config_file).get("error_delay") if config_file else None
        )
        if value is not None:
            return parse_error_delay(value, "--error-delay")

    return None


def build_routes(
    merged: Mapping[str, Any], file_values: Mapping[str, Any]
) -> tuple[Route, ...]:
    """Build the routes from ``--source``/``--table`` or the file's ``[[route]]``.

    ``catalog``, ``evolution``, ``transform``, ``include`` and ``table-properties``
    given as flags or at the top of the file are defaults for every route.
    """
    defaults = {
        name: read(merged[name], "--" + name.replace("_", "-"))
        for name, read in _ROUTE_READERS.items()
        if name in merged
    }
    if "source" in merged or "table" in merged:
        raw = dict(defaults, sources=merged.get("source"), table=merged.get("table"))
        return (build_route(raw),)

    tables = file_values.get("route", [])
    if isinstance(tables, dict):
        raise ConfigError(
            "route: a single [route] table; write each route as [[route]] (two "
            "brackets), even when there is only one"
        )

    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(
            f"route: {tables!r} is not a list of tables; write each route as a "
            "[[route]] table"
        )

    if not tables:
        raise ConfigError(
            "--source: no source given (use --source and --table or a "
            "[[route]] in --config)"
        )

    return tuple(
        build_route(with_defaults(defaults, table), where=f"[[route]] #{index}")
        for index, table in enumerate(tables, start=1)
    )


def with_defaults(
    defaults: Mapping[str, Any], route: Mapping[str, Any]
) -> dict[str, Any]:
    """A route's own values over the defaults; table properties merge key by key."""
    raw = dict(defaults, **{k.replace("-", "_"): v for k, v in route.items()})
    own = route.get("table-properties", route.get("table_properties"))
    if "table_properties" in defaults and isinstance(own, Mapping):
        raw["table_properties"] = {**dict(defaults["table_properties"]), **own}

    return raw


def build_route(raw: Mapping[str, Any], where: str = "") -> Route:
    """Validate one route's values.

    ``where`` names a route of the file (``[[route]] #2``) in messages; without it the
    values came from flags (or the top of the file) and messages name the flags.
    """

    def name(key: str) -> str:
        return f"{where} {key}" if where else "--" + key.removesuffix("s")

    unknown = sorted(set(raw) - {"sources", "table", *_ROUTE_READERS})
    if unknown:
        names = ", ".join(repr(key.replace("_", "-")) for key in unknown)
        raise ConfigError(f"{where or '[[route]]'}: unknown setting(s) {names}")

    sources = read_sources(raw.get("sources"), name("sources"))
    table = raw.get("table")
    if table is None:
        how = (
            'table = "namespace.table" in every [[route]]'
            if where
            else "--table namespace.table with --source"
        )
        raise ConfigError(f"{name('table')}: no table given; add {how}")

    if not is_str(table) or not _TABLE_NAME.match(table):
        raise ConfigError(f"{name('table')}: {table!r} is not a namespace.table name")

    return Route(
        sources=sources,
        table=table,
        **{
            key: read(raw[key], name(key))
            for key, read in _ROUTE_READERS.items()
            if key in raw
        },
    )


def read_sources(value: object, setting: str) -> tuple[S3Location, ...]:
    """Read one ``s3://`` URI or a list of them; a route needs at least one."""
    if value is None or value == []:
        hint = "" if setting.startswith("[") else " with --table"
        raise ConfigError(f"{setting}: missing; give s3://bucket/prefix/{hint}")

    uris = [value] if is_str(value) else value
    if not isinstance(uris, (list, tuple)):
        raise ConfigError(
            f"{setting}: {value!r} is not an s3://bucket/prefix/ URI or a list of them"
        )

    return tuple(dict.fromkeys(parse_s3_uri(uri, setting) for uri in uris))


def read_evolution(value: object, setting: str) -> str:
    """Read a schema evolution mode: ``add``, ``freeze`` or ``discard``."""
    return read_choice(value, setting, ("add", "freeze", "discard"))


def read_transform(value: object, setting: str) -> str:
    """Read a ``module:function`` transform reference."""
    if not is_str(value) or not re.match(r"^[\w.]+:\w+$", value):
        raise ConfigError(f"{setting}: {value!r} is not module:function")

    return value


def read_table_properties(value: object, setting: str) -> tuple[tuple[str, str], ...]:
    """Read a table of Iceberg table properties as sorted (name, value) pairs.

    Pairs already read (the file's top-level default, handed to each route) pass.
    """
    if isinstance(value, tuple):
        return value

    return tuple(sorted(read_properties(value, setting).items()))


def read_include(value: object, setting: str) -> tuple[str, ...]:
    """Read name patterns: a list of strings, or one comma-separated string."""
    if is_str(value):
        value = [part.strip() for part in value.split(",") if part.strip()]

    if not isinstance(value, (list, tuple)) or not all(is_str(v) for v in value):
        raise ConfigError(f"{setting}: {value!r} is not a list of name patterns")

    if not value:
        raise ConfigError(f"{setting}: names no pattern; give at least one")

    return tuple(value)


_ROUTE_READERS: dict[str, Callable[[Any, str], Any]] = {
    "catalog": read_string,
    "evolution": read_evolution,
    "transform": read_transform,
    "include": read_include,
    "table_properties": read_table_properties,
}
_BOOLS = ("once", "progress", "lineage")
_INTS = ("concurrency", "max_iterations", "batch_max_files")
_SIZES = (
    "max_bytes",
    "max_rss",
    "max_inflight_bytes",
    "batch_max_bytes",
    "stream_above",
)
_DURATIONS = (
    "poll_interval",
    "max_uptime",
    "grace_period",
    "batch_max_age",
    "lease_seconds",
)
_STRINGS = ("state", "metrics_addr")


def build_settings(merged: Mapping[str, Any], routes: tuple[Route, ...]) -> Settings:
    """Validate the scalar settings and freeze them with the routes."""
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(
        set(merged) - known - {"source", "table", "route", *_ROUTE_READERS}
    )
    if unknown:
        names = ", ".join(repr(name.replace("_", "-")) for name in unknown)
        raise ConfigError(f"unknown setting(s) {names}; see bifrost-async run --help")

    values: dict[str, Any] = {"routes": routes, **read_scalars(merged)}
    values["state"] = normalize_state_url(values.get("state", Settings.state))
    if values.get("zero_copy") == "in-place" and values.get("on_changed") == "ingest":
        raise ConfigError(
            "--zero-copy: 'in-place' cannot go with --on-changed 'ingest': a rewritten "
            "object would change rows already committed; use --zero-copy copy"
        )

    return Settings(**values)


def read_scalars(given: Mapping[str, Any]) -> dict[str, Any]:
    """Read each scalar setting present in ``given`` with its reader, by name."""
    values: dict[str, Any] = {}
    present = [name for name in dataclasses.fields(Settings) if name.name in given]
    readers: dict[str, Callable[[Any, str], Any]] = {
        **dict.fromkeys(_BOOLS, read_bool),
        **dict.fromkeys(_INTS, read_positive_int),
        **dict.fromkeys(_SIZES, parse_size),
        **dict.fromkeys(_DURATIONS, parse_duration),
        **dict.fromkeys(_STRINGS, read_string),
        "metrics_port": read_port,
        "log_level": read_log_level,
        "log_format": read_log_format,
        "on_changed": read_on_changed,
        "error_delay": parse_error_delay,
        "s3_endpoint": read_s3_endpoint,
        "heartbeat_file": read_heartbeat_file,
        "naive_timezone": read_time_zone,
        "quarantine_prefix": read_quarantine_prefix,
        "catalog_properties": read_properties,
        "expire_snapshots_after": read_expiry,
        "zero_copy": read_zero_copy,
        "crash_markers": read_crash_markers,
        "lease_seconds": read_lease,
    }
    for item in present:
        if item.name in readers:
            dashed = item.name.replace("_", "-")
            setting = dashed if item.name in _FILE_ONLY else "--" + dashed
            values[item.name] = readers[item.name](given[item.name], setting)

    return values


# Settings that have no flag: messages name them as the file writes them.
_FILE_ONLY = frozenset({"crash_markers", "lease_seconds", "catalog_properties"})

# A lease shorter than this would have writers take each other for dead between two
# renewals (a third of the lease) under ordinary load.
_MIN_LEASE = 10.0


def read_lease(value: object, setting: str) -> float:
    """Read the lease of a writer: a duration of at least ten seconds."""
    seconds = parse_duration(value, setting)
    if seconds < _MIN_LEASE:
        raise ConfigError(
            f"{setting}: {value!r} is shorter than 10s; other writers would take a "
            "live writer for gone and ingest its objects again"
        )

    return seconds


def read_crash_markers(value: object, setting: str) -> str:
    """Read the folder for crash logs: a folder, or a path whose parent exists."""
    path = Path(read_string(value, setting)).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{setting}: {str(path)!r} exists and is not a folder")

    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{setting}: folder {str(path)!r} is not writable")

    if not path.exists() and not path.parent.is_dir():
        raise ConfigError(
            f"{setting}: the folder above {str(path)!r} does not exist; create it first"
        )

    return str(path)


def read_zero_copy(value: object, setting: str) -> str:
    """Read the zero-copy mode: ``copy`` (or true), ``in-place``, ``off`` (or false).

    In place, the table references the source objects themselves, so an object
    rewritten under its key would change data already committed: that mode refuses
    ``on_changed = "ingest"`` (checked in :func:`build_settings`).
    """
    if isinstance(value, bool):
        return "copy" if value else "off"

    return read_choice(value, setting, ("copy", "in-place", "off"))


# Below this, a pending batch of a writer that is down for a while could lose the
# snapshot that proves it landed (see maintenance.py).
_MIN_EXPIRY = 3600.0


def read_expiry(value: object, setting: str) -> float | None:
    """Read the age past which snapshots are expired (an hour or more), or ``off``."""
    if value in ("off", False):
        return None

    seconds = parse_duration(value, setting)
    if seconds < _MIN_EXPIRY:
        raise ConfigError(
            f"{setting}: {value!r} is shorter than an hour; a writer that comes back "
            "after a crash must still find the snapshots of its batches"
        )

    return seconds


def read_log_format(value: object, setting: str) -> str:
    """Read ``text`` or ``json``."""
    return read_choice(value, setting, ("text", "json"))


def read_on_changed(value: object, setting: str) -> str:
    """Read ``ignore`` or ``ingest``."""
    return read_choice(value, setting, ("ignore", "ingest"))


def read_quarantine_prefix(value: object, setting: str) -> str:
    """Read the ``s3://bucket/prefix/`` quarantined objects are copied to."""
    return str(parse_s3_uri(value, setting))


def normalize_state_url(state: object) -> str:
    """Accept a database URL, or a plain path that means a SQLite file.

    ``postgresql://`` and ``postgres://`` without a driver become
    ``postgresql+psycopg2://``: SQLAlchemy's default driver is psycopg 3, which is not
    installed. A URL that names its driver (``postgresql+psycopg2://``) is kept.
    """
    state = read_string(state, "--state")
    match = re.match(r"^(sqlite|postgresql|postgres)(\+\w+)?://", state)
    if "://" in state and match is None:
        raise ConfigError(f"--state: {state!r} is not a sqlite:// or postgresql:// URL")

    if match is None:
        return f"sqlite:///{Path(state).expanduser()}"

    if match.group(1) == "sqlite":
        return state

    driver = match.group(2) or "+psycopg2"
    return f"postgresql{driver}://{state[match.end() :]}"
