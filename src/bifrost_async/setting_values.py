"""Readers for single setting values: sizes, durations, numbers, words, URLs, paths.

Each reader takes a value as a flag or the TOML file gives it and the setting's name,
and returns it in the type :class:`~bifrost_async.config.Settings` holds, or raises
:class:`ConfigError` naming the setting and the value. Types are strict: a TOML ``4.5``
is not a whole number, ``"no"`` is not a boolean, ``true`` is not a number. Readers
touch no network; only :func:`read_heartbeat_file` looks at the local file system.
"""

from __future__ import annotations

import contextlib
import math
import re
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import TypeGuard

from .errors import ConfigError

__all__ = [
    "LOG_LEVELS",
    "is_int",
    "is_str",
    "parse_duration",
    "parse_error_delay",
    "parse_size",
    "read_bool",
    "read_properties",
    "read_choice",
    "read_heartbeat_file",
    "read_log_level",
    "read_port",
    "read_positive_int",
    "read_s3_endpoint",
    "read_string",
    "read_time_zone",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
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


def parse_size(value: object, setting: str) -> int:
    """Read a byte count such as ``512MiB``, ``2GB`` or ``1000``."""
    if is_int(value):
        size = value
    else:
        match = (
            re.match(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$", value)
            if is_str(value)
            else None
        )
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            raise ConfigError(
                f"{setting}: {value!r} is not a size such as 512MiB or 2GB"
            )

        size = int(float(match.group(1)) * _SIZE_UNITS[unit])

    if size <= 0:
        raise ConfigError(f"{setting}: {value!r} must be greater than zero")

    return size


def parse_duration(value: object, setting: str) -> float:
    """Read a duration such as ``30``, ``90s``, ``5m`` or ``12h`` as seconds."""
    if is_int(value) or (isinstance(value, float) and math.isfinite(value)):
        seconds = float(value)
    else:
        text = value.lower() if is_str(value) else ""
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]?)\s*$", text)
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ConfigError(
                f"{setting}: {value!r} is not a duration such as 30s or 5m"
            )

        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]

    if seconds < 0:
        raise ConfigError(f"{setting}: {value!r} must not be negative")

    return seconds


def is_str(value: object) -> TypeGuard[str]:
    """Whether ``value`` is text (TOML strings and flag values are)."""
    return isinstance(value, str)


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a whole number; ``True`` and ``False`` are not."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_string(value: object, setting: str) -> str:
    """Read a setting that must be a non-empty string."""
    if not is_str(value) or not value.strip():
        raise ConfigError(f"{setting}: {value!r} is not a non-empty string")

    return value


def read_bool(value: object, setting: str) -> bool:
    """Read an on/off setting; in the file it must be a TOML ``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}: {value!r} is not true or false (no quotes)")

    return value


def read_positive_int(value: object, setting: str) -> int:
    """Read an integer setting that must be at least 1 (``"8"`` counts, ``8.5`` not)."""
    if is_str(value) and re.match(r"^\s*-?\d+\s*$", value):
        value = int(value)

    if not is_int(value):
        raise ConfigError(f"{setting}: {value!r} is not a whole number")

    if value < 1:
        raise ConfigError(f"{setting}: {value!r} must be at least 1")

    return value


def read_port(value: object, setting: str) -> int:
    """Read a TCP port, 1 to 65535."""
    if is_str(value) and re.match(r"^\s*-?\d+\s*$", value):
        value = int(value)

    if not is_int(value) or not 1 <= value <= 65535:
        raise ConfigError(f"{setting}: {value!r} is not a port from 1 to 65535")

    return value


def read_log_level(value: object, setting: str = "--log-level") -> str:
    """Read a log level (any case); returns it in upper case."""
    level = value.strip().upper() if is_str(value) else None
    if level not in LOG_LEVELS:
        raise ConfigError(f"{setting}: {value!r} is not one of {', '.join(LOG_LEVELS)}")

    return level


def read_choice(value: object, setting: str, choices: tuple[str, ...]) -> str:
    """Read a setting that must be one of a few words."""
    if value not in choices:
        raise ConfigError(f"{setting}: {value!r} is not one of {', '.join(choices)}")

    return str(value)


def parse_error_delay(value: object, setting: str = "--error-delay") -> float:
    """Read the seconds to wait before exiting 78: finite and not negative."""
    seconds = value
    if is_str(value):
        with contextlib.suppress(ValueError):
            seconds = float(value)

    if not (is_int(seconds) or isinstance(seconds, float)) or not math.isfinite(
        seconds
    ):
        raise ConfigError(f"{setting}: {value!r} is not a number of seconds")

    if seconds < 0:
        raise ConfigError(f"{setting}: {value!r} must not be negative")

    return float(seconds)


def read_s3_endpoint(value: object, setting: str) -> str:
    """Read an ``http://`` or ``https://`` endpoint URL with a host and no credentials.

    A URL with a user or password in it is refused without echoing it, so the secret
    does not reach a log: credentials belong in ``AWS_*`` variables or a profile.
    """
    url = read_string(value, setting)
    parts = urllib.parse.urlsplit(url.strip())
    if "@" in parts.netloc:
        raise ConfigError(
            f"{setting}: the URL holds credentials, which are not shown here; give "
            "them in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile instead"
        )

    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False

    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise ConfigError(
            f"{setting}: {url!r} is not an http:// or https:// URL with a host"
        )

    return url.strip()


def read_heartbeat_file(value: object, setting: str) -> str:
    """Read the heartbeat file's path; its folder must exist."""
    path = Path(read_string(value, setting)).expanduser()
    if path.is_dir():
        raise ConfigError(f"{setting}: {str(path)!r} is a folder, not a file")

    if not path.parent.is_dir():
        raise ConfigError(
            f"{setting}: the folder of {str(path)!r} does not exist; create it first"
        )

    return str(path)


def read_properties(value: object, setting: str) -> dict[str, str]:
    """Read a table of pyiceberg catalog or table properties, every value a string."""
    if not isinstance(value, Mapping) or not all(is_str(v) for v in value.values()):
        raise ConfigError(f"{setting}: {value!r} is not a table of string values")

    return {str(key): str(item) for key, item in value.items()}


def read_time_zone(value: object, setting: str = "--naive-timezone") -> str:
    """Read an IANA time zone name such as ``Europe/Berlin``."""
    name = read_string(value, setting)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{setting}: {name!r} is not an IANA time zone such as Europe/Berlin"
        ) from None

    return name
