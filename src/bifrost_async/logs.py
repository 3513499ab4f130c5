"""Logging setup for the command: human-readable on a terminal, JSON lines on request.

Only the command configures handlers; library modules just log. Messages are event
names with key=value fields; credentials and signed URLs are masked on the way out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

__all__ = ["configure_logging"]

_SECRET = re.compile(
    r"(X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|aws_secret_access_key"
    r"|AWS_SECRET_ACCESS_KEY|password)=([^&\s]+)",
    re.IGNORECASE,
)


def mask_secrets(text: str) -> str:
    """Replace signature, credential and password values with ``***``."""
    return _SECRET.sub(r"\1=***", text)


class TextFormatter(logging.Formatter):
    """``time level logger message`` with secrets masked."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, message."""

    def format(self, record: logging.LogRecord) -> str:
        message = mask_secrets(record.getMessage())
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": message.split(" ", 1)[0],
            "message": message,
        }
        if record.exc_info:
            entry["exception"] = mask_secrets(self.formatException(record.exc_info))

        return json.dumps(entry)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send logs to stderr in the chosen format; quiet noisy libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "aiobotocore", "urllib3", "pyiceberg", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
