"""bifrost-async: sync Parquet objects from S3 prefixes into Apache Iceberg tables."""

from __future__ import annotations

from typing import Any

from .config import Route, Settings, load_settings
from .errors import BifrostError, ConfigError

__all__ = [
    "BifrostError",
    "ConfigError",
    "Route",
    "RunResult",
    "Settings",
    "load_settings",
    "run",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the runner (and with it pyarrow and pyiceberg) on first use.

    Light modules, such as the circus hook in ``respawn.py`` that circusd loads, then
    import the package without them.
    """
    if name in ("RunResult", "run"):
        from . import runner

        return getattr(runner, name)

    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
