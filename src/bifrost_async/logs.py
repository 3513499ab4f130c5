"""Logging setup for the command: human-readable on a terminal, JSON lines on request.

Only the command configures handlers; library modules just log. Messages are event
names with key=value fields (``"commit.complete table=%s rows=%d"``). Every record goes
through :class:`RedactingFilter` before it is written, so AWS secret keys, session
tokens, presigned-URL signatures and credentials, and passwords in database URLs never
reach the output, in the message or in a traceback.

Records are written to whatever ``sys.stderr`` is at the time, so a progress display
that takes over the terminal (rich redirects ``sys.stderr`` while it draws) prints log
lines above its bar instead of through it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "configure_logging",
    "parse_fields",
    "redact",
]

MASK = "***"

# key=value, key: value and "key": "value" forms whose value is a secret. The value
# ends at whitespace, a quote, '&' (query strings), ',' or ';' (headers, DSNs).
_SECRET_FIELD = re.compile(
    r"(?P<key>X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token"
    r"|aws_secret_access_key|secret_access_key|SecretAccessKey|secret_key"
    r"|aws_session_token|session_token|SessionToken|Signature|Credential"
    r"|password|passwd)"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)"
    r"(?P<value>[^\s\"'&,;]+)",
    re.IGNORECASE,
)
# user:password@host in any URL (postgresql://, mysql://, https://, ...).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^\s:/@]+:)[^\s@/]+(?=@)")
# Temporary session tokens carry a recognisable base64 prefix wherever they appear.
_SESSION_TOKEN = re.compile(r"\b(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9/+=]+")
# A bare AWS secret access key: 40 characters of base64 with upper and lower case and
# a digit (hex digests such as SHA-1 are lower case only and stay readable). Paths and
# URIs are left alone: a run that starts with '/' or holds '//' is not a key.
_BARE_SECRET = re.compile(
    r"(?<![A-Za-z0-9/+=])(?!/)(?![A-Za-z0-9/+]*//)"
    r"(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
    r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
)
# A field of an event message: ``key=`` at the start or after a space.
_FIELD_START = re.compile(r"(?:^|\s)([A-Za-z_][\w.]*)=")
_LEVEL_COLORS = {"DEBUG": "2", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}
_INTEGER = re.compile(r"^-?\d+$")
_DECIMAL = re.compile(r"^-?\d+\.\d+$")


def redact(text: str) -> str:
    """Replace secrets in ``text`` with ``***`` (see the module docstring)."""
    text = _SECRET_FIELD.sub(lambda m: f"{m['key']}{m['sep']}{MASK}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _SESSION_TOKEN.sub(MASK, text)
    return _BARE_SECRET.sub(MASK, text)


class RedactingFilter(logging.Filter):
    """Render each record's message and traceback once, with secrets redacted.

    Attached to the handler, so it sees records of every logger, libraries included.
    """

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops one."""
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)

        if record.exc_text:
            record.exc_text = redact(record.exc_text)

        if record.stack_info:
            record.stack_info = redact(record.stack_info)

        return True


def parse_fields(message: str) -> tuple[str, dict[str, Any]]:
    """Split an event message into its event name and its key=value fields.

    A value runs to the next `` key=``, so values with spaces (error texts) stay
    whole. Whole numbers and decimals become numbers; everything else stays text.
    """
    event, _, rest = message.partition(" ")
    if "=" in event:
        event, rest = "", message

    starts = list(_FIELD_START.finditer(rest))
    fields: dict[str, Any] = {}
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(rest)
        fields[match.group(1)] = read_value(rest[match.end() : end].strip())

    return event, fields


def read_value(text: str) -> Any:
    """A field value as a number where it is one, else as text."""
    if _INTEGER.match(text):
        return int(text)

    if _DECIMAL.match(text):
        return float(text)

    return text


class TextFormatter(logging.Formatter):
    """``time level logger message``, one line per record (tracebacks follow).

    With ``color`` (stderr is a terminal) the level is coloured: DEBUG dim, WARNING
    yellow, ERROR and CRITICAL red.
    """

    def __init__(self, color: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        """The record as text, its level coloured when asked."""
        text = super().format(record)
        code = _LEVEL_COLORS.get(record.levelname)
        if not self.color or code is None:
            return text

        level = f"{record.levelname:<7}"
        return text.replace(level, f"\x1b[{code}m{level}\x1b[0m", 1)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, fields and message."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        message = record.getMessage()
        event, fields = parse_fields(message)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": event,
            "fields": fields,
            "message": message,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)

        if record.exc_text:
            entry["exception"] = record.exc_text

        return json.dumps(entry, default=str)


class StderrHandler(logging.Handler):
    """Write records to the current ``sys.stderr`` (looked up per record)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Format and write one record; errors go to ``handleError`` as usual."""
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(level: str = "INFO", log_format: str = "text") -> None:
    """Send redacted logs to stderr in the chosen format; quiet noisy libraries."""
    handler = StderrHandler()
    handler.addFilter(RedactingFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(color=sys.stderr.isatty()))

    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "aiobotocore", "urllib3", "pyiceberg", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
