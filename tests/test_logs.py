"""Logging: redaction of secrets, JSON lines with fields, and the text form."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bifrost_async.logs import TextFormatter, configure_logging, parse_fields, redact

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexample+token=="


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger's handlers and level back after a test configures it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (
            "connect uri=postgresql://bifrost:s3cr3t@db.internal:5432/ledger",
            "s3cr3t",
            "postgresql://bifrost:***@db.internal:5432/ledger",
        ),
        (
            "catalog uri=postgresql+psycopg2://iceberg:p%40ss@db/catalog failed",
            "p%40ss",
            "postgresql+psycopg2://iceberg:***@db/catalog failed",
        ),
        (
            "GET https://b.s3.amazonaws.com/k.parquet?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
            "&X-Amz-Signature=0123456789abcdef0123456789abcdef&X-Amz-Expires=60",
            "0123456789abcdef0123456789abcdef",
            "X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        (
            "url=https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLE%2F2026 ok",
            "AKIAEXAMPLE%2F2026",
            "X-Amz-Credential=*** ok",
        ),
        (
            f"env AWS_SECRET_ACCESS_KEY={SECRET} set",
            SECRET,
            "AWS_SECRET_ACCESS_KEY=***",
        ),
        (
            f"config {{'SecretAccessKey': '{SECRET}'}}",
            SECRET,
            "'SecretAccessKey': '***'",
        ),
        (f"leaked {SECRET} in a message", SECRET, "leaked *** in a message"),
        (f"aws_session_token={TOKEN}", TOKEN, "aws_session_token=***"),
        (f"header x-amz-security-token: {TOKEN}", TOKEN, "x-amz-security-token: ***"),
        (f"token {TOKEN} bare", TOKEN, "token *** bare"),
        ("dsn host=db password=hunter2 user=x", "hunter2", "password=*** user=x"),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/s3, "
            "SignedHeaders=host, Signature=fe5f80f77d5fa3beca038a248ff027",
            "fe5f80f77d5fa3beca038a248ff027",
            "Signature=***",
        ),
    ],
    ids=[
        "database-url",
        "database-url-driver",
        "presigned-signature",
        "presigned-credential",
        "secret-env",
        "secret-dict",
        "secret-bare",
        "session-token-field",
        "session-token-header",
        "session-token-bare",
        "dsn-password",
        "authorization-header",
    ],
)
def test_redact_masks_secret(text: str, secret: str, kept: str) -> None:
    """Each kind of secret is replaced by *** and the text around it is kept."""
    masked = redact(text)

    assert secret not in masked
    assert kept in masked


@pytest.mark.parametrize(
    "text",
    [
        "commit.complete table=ns.t batch=5f1c0a4b9e2d4c7f8a6b3e1d2c4f6a8b rows=10",
        "fetch.complete uri=s3://landing/orders/part-00001.parquet bytes=2048",
        "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 etag=9b2cf535f27731c97434",
        "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        "uri=s3://Landing2026/Orders/Region1/Day01/Part7.parquet failed",
        "wrote /Warehouse2026/Orders/Region1/Day01/Par7.parquet",
        "key=Orders2026/Region1/Day01/Hour05/PartABCD.parquet",
    ],
    ids=["batch-id", "uri", "hex-digests", "advice", "s3-uri", "path", "key"],
)
def test_redact_keeps_ordinary_text(text: str) -> None:
    """Ids, URIs, hex digests and advice naming the variables are left as they are."""
    assert redact(text) == text


def test_logs_json_lines_carry_event_and_fields(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """JSON logs are one object per line with parsed, redacted fields."""
    configure_logging("INFO", "json")
    log = logging.getLogger("bifrost_async.test")

    log.info(
        "commit.complete table=%s snapshot=%s rows=%d seconds=%.3f", "ns.t", 42, 7, 0.5
    )
    log.warning(
        "retry.scheduled kind=%s error=%s", "fetch", "S3 answered 503 (Slow Down)"
    )
    log.info("catalog.open uri=%s", "postgresql://u:topsecret@db/c")
    log.debug("object.seen uri=%s", "s3://b/k")

    lines = capsys.readouterr().err.strip().splitlines()
    entries = [json.loads(line) for line in lines]
    assert [e["event"] for e in entries] == [
        "commit.complete",
        "retry.scheduled",
        "catalog.open",
    ]
    assert entries[0]["fields"] == {
        "table": "ns.t",
        "snapshot": 42,
        "rows": 7,
        "seconds": 0.5,
    }
    assert entries[0]["level"] == "INFO"
    assert entries[0]["logger"] == "bifrost_async.test"
    assert entries[0]["time"].endswith("Z")
    assert entries[1]["fields"]["error"] == "S3 answered 503 (Slow Down)"
    assert entries[2]["fields"]["uri"] == "postgresql://u:***@db/c"
    assert "topsecret" not in lines[2]


def test_logs_tracebacks_are_redacted(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A traceback that quotes a secret is redacted in text and in JSON form."""
    for log_format in ("text", "json"):
        configure_logging("INFO", log_format)
        try:
            raise RuntimeError(f"cannot connect postgresql://u:{SECRET}@db/x")
        except RuntimeError:
            logging.getLogger("bifrost_async.test").exception("run.crashed")

    err = capsys.readouterr().err
    entry = json.loads(err.strip().splitlines()[-1])
    assert SECRET not in err
    assert "RuntimeError: cannot connect postgresql://u:***@db/x\n" in err
    assert entry["event"] == "run.crashed"
    assert entry["exception"].endswith(
        "RuntimeError: cannot connect postgresql://u:***@db/x"
    )


def test_logs_text_is_one_readable_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """The text form reads time, level, logger and the event message on one line."""
    configure_logging("INFO", "text")

    logging.getLogger("bifrost_async.pipeline").warning(
        "object.quarantined uri=%s reason=%s", "s3://b/k.parquet", "not a Parquet file"
    )

    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert line.endswith(
        "WARNING bifrost_async.pipeline object.quarantined uri=s3://b/k.parquet "
        "reason=not a Parquet file"
    )


@pytest.mark.parametrize(
    ("message", "event", "fields"),
    [
        ("pass.complete", "pass.complete", {}),
        ("budget.stop reason=max-bytes", "budget.stop", {"reason": "max-bytes"}),
        ("a.b x=1 y=-2.5 z=None", "a.b", {"x": 1, "y": -2.5, "z": "None"}),
        ("plain=1 only", "", {"plain": "1 only"}),
    ],
    ids=["event-only", "one-field", "numbers", "no-event"],
)
def test_parse_fields_splits_event_and_values(
    message: str, event: str, fields: dict[str, object]
) -> None:
    """Event names and key=value fields come apart; numbers become numbers."""
    assert parse_fields(message) == (event, fields)


@pytest.mark.parametrize(
    ("level", "color", "colored"),
    [
        (logging.WARNING, True, "\x1b[33mWARNING\x1b[0m"),
        (logging.ERROR, True, "\x1b[31mERROR  \x1b[0m"),
        (logging.INFO, True, None),
        (logging.WARNING, False, None),
    ],
    ids=["warning", "error", "info-plain", "off-a-terminal"],
)
def test_text_formatter_colours_levels_on_a_terminal(
    level: int, color: bool, colored: str | None
) -> None:
    """On a terminal WARNING and ERROR stand out; elsewhere no escape codes appear."""
    record = logging.LogRecord(
        "bifrost_async.x", level, __file__, 1, "a.b k=%d", (1,), None
    )

    text = TextFormatter(color=color).format(record)

    assert text.endswith(" bifrost_async.x a.b k=1")
    if colored is None:
        assert "\x1b[" not in text
    else:
        assert colored in text
