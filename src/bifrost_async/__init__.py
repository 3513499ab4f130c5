"""bifrost-async: sync Parquet objects from S3 prefixes into Apache Iceberg tables."""

from __future__ import annotations

from .config import Route, Settings, load_settings
from .errors import BifrostError, ConfigError
from .runner import RunResult, run

__all__ = ["BifrostError", "ConfigError", "Route", "RunResult", "Settings", "load_settings", "run"]
__version__ = "0.1.0"
