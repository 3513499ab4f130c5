"""Settings: parsed once from defaults, a TOML file and flags, then frozen.

Precedence is flags over the file over defaults. This module owns validation: every
invalid setting raises :class:`ConfigError` naming the setting, so the command can exit
78 with one line. It must not touch the network, the catalog or the ledger.

The catalog itself is configured the way pyiceberg configures it (``.pyiceberg.yaml``,
``PYICEBERG_CATALOG__<NAME>__...``); S3 the way botocore does (``AWS_*`` variables and
profiles). Only the catalog *name* and an optional S3 endpoint override live here.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

__all__ = [
    "DEFAULT_INCLUDE",
    "Route",
    "S3Location",
    "Settings",
    "load_settings",
    "parse_duration",
    "parse_s3_uri",
    "parse_size",
]

DEFAULT_INCLUDE = ("*.parquet", "*.parq", "part-*")

EvolutionMode = Literal["add", "freeze", "discard"]
ChangedMode = Literal["ignore", "ingest"]
ZeroCopyMode = Literal["off", "copy", "in-place"]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
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
    """Sources that feed one Iceberg table, and how their files are taken in."""

    sources: tuple[S3Location, ...]
    table: str
    catalog: str = "default"
    evolution: EvolutionMode = "add"
    transform: str | None = None
    include: tuple[str, ...] = DEFAULT_INCLUDE


@dataclass(frozen=True)
class Settings:
    """Everything a run needs, validated. Sizes are bytes and durations seconds."""

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
    on_changed: ChangedMode = "ignore"
    s3_endpoint: str | None = None
    quarantine_prefix: str | None = None
    heartbeat_file: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    progress: bool = True
    metrics_port: int | None = None
    naive_timezone: str | None = None
    lineage: bool = False
    stream_above: int = 128 * 1024**2
    crash_markers: str | None = None
    zero_copy: ZeroCopyMode = "off"
    catalog_properties: Mapping[str, str] = field(default_factory=dict)


def parse_s3_uri(uri: str, setting: str = "--source") -> S3Location:
    """Split ``s3://bucket/prefix`` into a location; the prefix always ends in ``/``.

    An empty prefix means the whole bucket.
    """
    match = re.match(r"^s3a?://([^/]+)/?(.*)$", uri.strip())
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


def parse_size(value: str | int, setting: str) -> int:
    """Read a byte count such as ``512MiB``, ``2GB`` or ``1000``."""
    if isinstance(value, int):
        size = value
    else:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ConfigError(
                f"{setting}: {value!r} is not a size such as 512MiB or 2GB"
            )

        size = int(float(match.group(1)) * _SIZE_UNITS[unit])

    if size <= 0:
        raise ConfigError(f"{setting}: {value!r} must be greater than zero")

    return size


def parse_duration(value: str | float, setting: str) -> float:
    """Read a duration such as ``30``, ``90s``, ``5m`` or ``12h`` as seconds."""
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]?)\s*$", value.lower())
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ConfigError(
                f"{setting}: {value!r} is not a duration such as 30s or 5m"
            )

        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]

    if seconds < 0:
        raise ConfigError(f"{setting}: {value!r} must not be negative")

    return seconds


def load_settings(flags: Mapping[str, Any], config_file: str | None = None) -> Settings:
    """Merge defaults, a TOML file and command-line flags into one :class:`Settings`.

    ``flags`` holds only the flags the user gave (``None`` means not given). Flags that
    name a source or a table replace the file's routes with the one route they describe.
    """
    file_values = read_config_file(config_file) if config_file else {}
    merged: dict[str, Any] = dict(file_values)
    merged.update({name: value for name, value in flags.items() if value is not None})

    routes = build_routes(merged, file_values)
    return build_settings(merged, routes)


def read_config_file(path: str) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError."""
    try:
        with Path(path).open("rb") as stream:
            values = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"--config: file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path!r} is not valid TOML ({exc})") from None

    return {key.replace("-", "_"): value for key, value in values.items()}


def build_routes(
    merged: Mapping[str, Any], file_values: Mapping[str, Any]
) -> tuple[Route, ...]:
    """Build the routes from ``--source``/``--table`` or the file's ``[[route]]``."""
    sources = merged.get("source") or ()
    if isinstance(sources, str):
        sources = [sources]

    defaults = {
        "catalog": merged.get("catalog", "default"),
        "evolution": merged.get("evolution", "add"),
        "transform": merged.get("transform"),
        "include": merged.get("include"),
    }
    if sources or merged.get("table"):
        raw_routes = [dict(defaults, sources=list(sources), table=merged.get("table"))]
    else:
        raw_routes = [
            dict(defaults, **{k.replace("-", "_"): v for k, v in route.items()})
            for route in file_values.get("route", [])
        ]

    if not raw_routes:
        raise ConfigError(
            "--source: no source given (use --source and --table or a "
            "[[route]] in --config)"
        )

    return tuple(build_route(raw) for raw in raw_routes)


_ROUTE_KEYS = frozenset(
    {"sources", "table", "catalog", "evolution", "transform", "include"}
)


def build_route(raw: Mapping[str, Any]) -> Route:
    """Validate one route's values."""
    unknown = sorted(set(raw) - _ROUTE_KEYS)
    if unknown:
        names = ", ".join(repr(name.replace("_", "-")) for name in unknown)
        raise ConfigError(f"[[route]]: unknown setting(s) {names}")

    sources = raw.get("sources") or ()
    if not sources:
        raise ConfigError("--source: a route has no source")

    table = raw.get("table")
    if not table or not _TABLE_NAME.match(str(table)):
        raise ConfigError(f"--table: {table!r} is not a namespace.table name")

    evolution: EvolutionMode = raw.get("evolution") or "add"
    if evolution not in ("add", "freeze", "discard"):
        raise ConfigError(
            f"--evolution: {evolution!r} is not one of add, freeze, discard"
        )

    transform = raw.get("transform")
    if transform is not None and not re.match(r"^[\w.]+:\w+$", transform):
        raise ConfigError(f"--transform: {transform!r} is not module:function")

    include = raw.get("include") or DEFAULT_INCLUDE
    if isinstance(include, str):
        include = [part.strip() for part in include.split(",") if part.strip()]

    return Route(
        sources=tuple(dict.fromkeys(parse_s3_uri(uri) for uri in sources)),
        table=str(table),
        catalog=str(raw.get("catalog") or "default"),
        evolution=evolution,
        transform=transform,
        include=tuple(include),
    )


def build_settings(merged: Mapping[str, Any], routes: tuple[Route, ...]) -> Settings:
    """Validate the scalar settings and freeze them with the routes."""
    values: dict[str, Any] = {"routes": routes}
    known = {f.name for f in dataclasses.fields(Settings)}
    for name in ("once", "progress", "lineage"):
        if name in merged:
            values[name] = bool(merged[name])

    for name in ("concurrency", "max_iterations", "batch_max_files", "metrics_port"):
        if name in merged:
            values[name] = read_positive_int(
                merged[name], "--" + name.replace("_", "-")
            )

    for name in (
        "max_bytes",
        "max_rss",
        "max_inflight_bytes",
        "batch_max_bytes",
        "stream_above",
    ):
        if name in merged:
            values[name] = parse_size(merged[name], "--" + name.replace("_", "-"))

    for name in (
        "poll_interval",
        "max_uptime",
        "grace_period",
        "batch_max_age",
        "lease_seconds",
    ):
        if name in merged:
            values[name] = parse_duration(merged[name], "--" + name.replace("_", "-"))

    for name in (
        "state",
        "s3_endpoint",
        "heartbeat_file",
        "log_level",
        "naive_timezone",
        "crash_markers",
    ):
        if merged.get(name):
            values[name] = str(merged[name])

    if merged.get("naive_timezone"):
        values["naive_timezone"] = read_time_zone(str(merged["naive_timezone"]))

    if merged.get("quarantine_prefix"):
        values["quarantine_prefix"] = str(
            parse_s3_uri(merged["quarantine_prefix"], "--quarantine-prefix")
        )

    values.update(read_choice(merged, "on_changed", ("ignore", "ingest")))
    values.update(read_choice(merged, "log_format", ("text", "json")))
    values.update(read_zero_copy(merged))
    values["state"] = normalize_state_url(values.get("state", Settings.state))
    if merged.get("catalog_properties"):
        values["catalog_properties"] = dict(merged["catalog_properties"])

    route_keys = {"source", "table", "catalog", "evolution", "transform", "include"}
    unknown = sorted(set(merged) - known - route_keys - {"route"})
    if unknown:
        names = ", ".join(repr(name.replace("_", "-")) for name in unknown)
        raise ConfigError(f"unknown setting(s) {names}; see bifrost-async run --help")

    return Settings(**values)


def read_zero_copy(merged: Mapping[str, Any]) -> dict[str, str]:
    """Read ``zero_copy``: true or ``copy``, ``in-place``, false or ``off``.

    In place, the table references the source objects themselves, so an object
    rewritten under its key would change data already committed: that mode refuses
    ``on_changed = "ingest"``, the setting under which rewriting is expected.
    """
    if "zero_copy" not in merged:
        return {}

    value = merged["zero_copy"]
    if isinstance(value, bool):
        mode = "copy" if value else "off"
    else:
        mode = str(value)

    if mode not in ("off", "copy", "in-place"):
        raise ConfigError(
            f"--zero-copy: {value!r} is not one of copy, in-place, off (or true, false)"
        )

    if mode == "in-place" and merged.get("on_changed") == "ingest":
        raise ConfigError(
            "--zero-copy: 'in-place' cannot go with --on-changed 'ingest': a rewritten "
            "object would change rows already committed; use --zero-copy copy"
        )

    return {"zero_copy": mode}


def read_time_zone(name: str) -> str:
    """Read an IANA time zone name such as ``Europe/Berlin``."""
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--naive-timezone: {name!r} is not an IANA time zone such as Europe/Berlin"
        ) from None

    return name


def read_positive_int(value: Any, setting: str) -> int:
    """Read an integer setting that must be at least 1."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}: {value!r} is not a whole number") from None

    if number < 1:
        raise ConfigError(f"{setting}: {value!r} must be at least 1")

    return number


def read_choice(
    merged: Mapping[str, Any], name: str, choices: tuple[str, ...]
) -> dict[str, str]:
    """Read a setting that must be one of a few words."""
    if name not in merged:
        return {}

    value = str(merged[name])
    if value not in choices:
        setting = "--" + name.replace("_", "-")
        raise ConfigError(f"{setting}: {value!r} is not one of {', '.join(choices)}")

    return {name: value}


def normalize_state_url(state: str) -> str:
    """Accept a database URL, or a plain path that means a SQLite file."""
    if "://" in state:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", state):
            raise ConfigError(
                f"--state: {state!r} is not a sqlite:// or postgresql:// URL"
            )

        return state

    return f"sqlite:///{Path(state).expanduser()}"
