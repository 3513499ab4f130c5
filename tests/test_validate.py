"""The dry run: footers read from S3, verdicts by the run's rules, nothing written."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest

from bifrost_async.config import Route, Settings, parse_s3_uri
from bifrost_async.discovery import ObjectRef
from bifrost_async.errors import UnreadableFileError
from bifrost_async.ledger import Ledger
from bifrost_async.runner import run
from bifrost_async.validate import (
    Footer,
    judge_footer,
    parse_footer,
    table_schema,
    validate,
)

from .helpers import numbers, parquet_bytes, upload_numbers
from .test_cli import run_command


def fetches(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int]]:
    """The (uri, bytes) of every GET validate made, from its DEBUG events."""
    return [
        (record.args[0], record.args[1])  # type: ignore[index]  # the %-args
        for record in caplog.records
        if record.msg.startswith("validate.fetched")
    ]


def footer_of(table: pa.Table, **options: Any) -> Footer:
    """The footer of a table written as Parquet, read the way validate reads it."""
    data = parquet_bytes(table, **options)
    return parse_footer(data, ObjectRef("b", "k.parquet", len(data), "e"), whole=True)


def judge(
    table: pa.Table, target: pa.Schema | None, evolution: str = "add"
) -> tuple[Any, pa.Schema | None]:
    """Judge a table's footer against ``target`` under an evolution mode."""
    source = parse_s3_uri("s3://bkt/p/")
    route = Route(sources=(source,), table="ns.t", evolution=cast(Any, evolution))
    obj = ObjectRef("b", "p/x.parquet", 1, "e")
    return judge_footer(obj, footer_of(table), target, route)


TARGET = table_schema(pa.schema([("id", pa.int64()), ("label", pa.string())]))


@pytest.mark.parametrize(
    ("table", "evolution", "action", "columns", "reason"),
    [
        (pa.table({"id": [1], "label": ["a"]}), "add", "land", [], None),
        (pa.table({"label": ["a"], "id": [1]}), "add", "land", [], None),
        (pa.table({"id": [1]}), "add", "land", [], None),
        (
            pa.table({"id": [1], "label": ["a"], "channel": ["web"]}),
            "add",
            "evolve",
            ["channel"],
            None,
        ),
        (
            pa.table({"id": [1], "channel": ["web"]}),
            "freeze",
            "quarantine",
            [],
            "schema evolution is frozen",
        ),
        (
            pa.table({"id": [1], "channel": ["web"]}),
            "discard",
            "land",
            [],
            "drops column(s) channel",
        ),
        (pa.table({"ID": [1]}), "add", "quarantine", [], "only by case"),
        (
            pa.table({"id": ["one"]}),
            "add",
            "quarantine",
            [],
            "cannot become the table's int64",
        ),
        (
            pa.table({"id": pa.array([2**63 + 5], pa.uint64())}),
            "add",
            "quarantine",
            [],
            "out of range",
        ),
        (pa.table({"id": pa.array([7], pa.uint64())}), "add", "land", [], None),
        (
            pa.table({"id": pa.array([], pa.int64()), "x": pa.array([], pa.null())}),
            "freeze",
            "land",
            [],
            "0 rows",
        ),
    ],
    ids=[
        "same",
        "reordered",
        "missing-column",
        "extra-column",
        "extra-frozen",
        "extra-discarded",
        "case-twin",
        "retyped",
        "unsigned-overflow",
        "unsigned-fits",
        "zero-rows",
    ],
)
def test_judge_footer_follows_the_conform_rules(
    table: pa.Table,
    evolution: str,
    action: str,
    columns: list[str],
    reason: str | None,
) -> None:
    """Each schema difference gets the verdict a run would give it."""
    verdict, _ = judge(table, TARGET, evolution)

    assert (verdict.action, verdict.columns) == (action, columns), verdict.reason
    if reason is None:
        assert verdict.reason is None
    else:
        assert reason in (verdict.reason or "")


def test_judge_footer_creates_then_evolves_the_table() -> None:
    """Without a table the first file creates it; later files are judged against it."""
    first = pa.table({"id": [1], "__index_level_0__": [0], "empty": pa.nulls(1)})
    second = pa.table({"id": [2], "note": ["x"]})

    created, target = judge(first, None)
    evolved, target = judge(second, target)
    again, _ = judge(second, target)

    assert (created.action, created.columns) == ("create", ["id"])
    assert (evolved.action, evolved.columns) == ("evolve", ["note"])
    assert again.action == "land"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"id,label\n1,a\n", "not a Parquet file"),
        (gzip.compress(parquet_bytes(numbers(0, 5))), "gzip data"),
        (parquet_bytes(numbers(0, 5))[:-20], "no PAR1 magic at both ends"),
        (parquet_bytes(numbers(0, 5))[:-4] + b"PARE", "encrypted Parquet footer"),
        (b"PAR1" + b"\xff\xff\xff\x7f" + b"PAR1", "footer length"),
        (
            b"PAR1" + b"junkjunk" + (8).to_bytes(4, "little") + b"PAR1",
            "footer unreadable",
        ),
    ],
    ids=["csv", "gzip", "truncated", "encrypted", "footer-too-long", "footer-garbage"],
)
def test_parse_footer_refuses_bad_files(data: bytes, reason: str) -> None:
    """A file whose footer cannot be read is named, with the reason."""
    obj = ObjectRef("b", "bad.parquet", len(data), "e")

    with pytest.raises(UnreadableFileError, match=reason) as caught:
        parse_footer(data, obj, whole=True)

    assert str(caught.value).startswith("s3://b/bad.parquet: ")


@pytest.mark.parametrize(
    "data",
    [
        b"id,label\n1,a\n",
        gzip.compress(parquet_bytes(numbers(0, 5))),
        parquet_bytes(numbers(0, 5))[:-20],
        parquet_bytes(numbers(0, 5))[:-4] + b"PARE",
    ],
    ids=["csv", "gzip", "truncated", "encrypted"],
)
def test_parse_footer_gives_the_reason_a_run_gives(data: bytes) -> None:
    """``validate`` and ``run`` quarantine the same bad file with the same reason."""
    from bifrost_async.process import read_parquet

    obj = ObjectRef("b", "bad.parquet", len(data), "e")

    with pytest.raises(UnreadableFileError) as by_validate:
        parse_footer(data, obj, whole=True)

    with pytest.raises(UnreadableFileError) as by_run:
        read_parquet(data, obj)

    assert str(by_validate.value) == str(by_run.value)


@pytest.mark.anyio
async def test_validate_reads_footers_from_s3_and_writes_nothing(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[[str], Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """New objects get verdicts from their footers; the table and ledger stay as is.

    The big file is read by its tail only (a ranged GET), the small ones whole. One
    object at a time is judged, so the evolution carries from one chunk to the next.
    """
    upload_numbers(s3, bucket, "v/0-first.parquet", 0, 10)
    settings = make_settings([f"s3://{bucket}/v/"])
    await run(settings)
    big = numbers(100, 30_000).append_column("note", pa.array(["n"] * 30_000))
    s3.put_object(Bucket=bucket, Key="v/1-big.parquet", Body=parquet_bytes(big))
    upload_numbers(s3, bucket, "v/2-same.parquet", 50, 5)
    s3.put_object(Bucket=bucket, Key="v/3-broken.parquet", Body=b"broken")
    retyped = pa.table({"id": ["x"]})
    s3.put_object(Bucket=bucket, Key="v/4-retyped.parquet", Body=parquet_bytes(retyped))
    noted = pa.table({"id": [9], "note": ["n"]})
    s3.put_object(Bucket=bucket, Key="v/5-noted.parquet", Body=parquet_bytes(noted))
    snapshots = len(load_table("ns.events").metadata.snapshots)
    ledger = Ledger(settings.state)
    before = ledger.status()

    with caplog.at_level(logging.DEBUG, logger="bifrost_async.validate"):
        (check,) = await validate(settings, chunk=1)

    after = ledger.status()
    fetched = dict(fetches(caplog))
    ledger.close()
    verdicts = {v.key: v for v in check.objects}
    assert (check.exists, check.listed, check.new) == (True, 6, 5)
    assert list(verdicts) == [
        "v/1-big.parquet",
        "v/2-same.parquet",
        "v/3-broken.parquet",
        "v/4-retyped.parquet",
        "v/5-noted.parquet",
    ]
    assert verdicts["v/1-big.parquet"].size > 64 * 1024
    assert fetched[f"s3://{bucket}/v/1-big.parquet"] == 64 * 1024
    assert (
        fetched[f"s3://{bucket}/v/2-same.parquet"] == verdicts["v/2-same.parquet"].size
    )
    assert (verdicts["v/1-big.parquet"].action, verdicts["v/1-big.parquet"].rows) == (
        "evolve",
        30_000,
    )
    assert verdicts["v/1-big.parquet"].columns == ["note"]
    assert verdicts["v/2-same.parquet"].action == "land"
    assert verdicts["v/3-broken.parquet"].action == "quarantine"
    assert "not a Parquet file" in (verdicts["v/3-broken.parquet"].reason or "")
    assert verdicts["v/4-retyped.parquet"].action == "quarantine"
    assert "'id'" in (verdicts["v/4-retyped.parquet"].reason or "")
    assert verdicts["v/5-noted.parquet"].action == "land"  # "note" came with 1-big
    assert check.counts()["quarantine"] == 2
    assert len(load_table("ns.events").metadata.snapshots) == snapshots
    assert "note" not in load_table("ns.events").schema().column_names
    assert after["ingested"] == before["ingested"] == 1
    assert after["quarantined"] == before["quarantined"] == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("case", "quarantines"),
    [
        ("column_drift", 2),
        ("uint_types", 1),
        ("pandas_index", 0),
        ("null_type", 0),
        ("empty_file", 0),
        ("nested_list", 0),
        ("large_string", 0),
        ("ts_ns", 0),
        ("int96", 0),
    ],
    ids=[
        "column_drift",
        "uint_types",
        "pandas_index",
        "null_type",
        "empty_file",
        "nested_list",
        "large_string",
        "ts_ns",
        "int96",
    ],
)
async def test_validate_predicts_what_a_run_quarantines(
    shared: Path,
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    load_table: Callable[[str], Any],
    case: str,
    quarantines: int,
) -> None:
    """On the shared fault cases, validate's verdicts match what a run then does.

    As the cases ask, the ``normal*`` files are ingested first (the table is made from
    them); the others are then validated and ingested.
    """
    paths = sorted((shared / "cases" / case).glob("*.parquet"))
    settings = make_settings([f"s3://{bucket}/{case}/"])
    for later in (False, True):
        for path in paths:
            if path.name.startswith("normal") != later:
                body = path.read_bytes()
                s3.put_object(Bucket=bucket, Key=f"{case}/{path.name}", Body=body)

        if not later:
            await run(settings)

    columns_before = set(load_table("ns.events").schema().column_names)

    (check,) = await validate(settings)
    result = await run(settings)

    ledger = Ledger(settings.state)
    quarantined = {q["key"] for q in ledger.status()["quarantined"]}
    ledger.close()
    predicted = {v.key for v in check.objects if v.action == "quarantine"}
    evolved = {c for v in check.objects if v.action == "evolve" for c in v.columns}
    columns_after = set(load_table("ns.events").schema().column_names)
    assert (check.exists, check.new) == (True, len(paths) - 1)
    assert len(predicted) == quarantines
    assert predicted == quarantined
    assert result.report.ingested == check.new - len(predicted)
    assert columns_after == columns_before | evolved


def test_cli_validate_json_and_text(
    s3: Any,
    bucket: str,
    moto_endpoint: str,
    catalog_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """validate exits 0 with verdicts as JSON or a table, and creates no ledger."""
    upload_numbers(s3, bucket, "cv/a.parquet", 0, 3)
    s3.put_object(Bucket=bucket, Key="cv/b.parquet", Body=b"nope")
    state = tmp_path / "state.db"
    args = (
        "validate",
        "--source",
        f"s3://{bucket}/cv/",
        "--table",
        "ns.cv",
        "--state",
        str(state),
        "--s3-endpoint",
        moto_endpoint,
    )

    as_json = run_command(*args, "--json", env=catalog_env, cwd=tmp_path)
    as_text = run_command(*args, env=dict(catalog_env, COLUMNS="200"), cwd=tmp_path)

    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)["tables"]["ns.cv"]
    assert report["counts"]["create"] == 1
    assert report["counts"]["quarantine"] == 1
    assert [o["action"] for o in report["objects"]] == ["create", "quarantine"]
    assert report["objects"][0]["columns"] == ["id", "label", "at"]
    assert as_text.returncode == 0, as_text.stderr
    assert "ns.cv (does not exist yet): listed 2, new 2, checked 2" in as_text.stdout
    assert "nothing was committed" in as_text.stdout
    assert not state.exists()


@pytest.mark.parametrize(
    ("naive_timezone", "action"),
    [(None, "quarantine"), ("Europe/Paris", "land")],
    ids=["refused", "read-in-zone"],
)
def test_judge_footer_reads_naive_timestamps_as_told(
    naive_timezone: str | None, action: str
) -> None:
    """Naive timestamps against a zoned column need naive_timezone, as in a run."""
    target = table_schema(pa.schema([("at", pa.timestamp("us", tz="UTC"))]))
    naive = pa.table({"at": pa.array([0], pa.timestamp("us"))})
    route = Route(sources=(parse_s3_uri("s3://bkt/p/"),), table="ns.t")
    obj = ObjectRef("b", "p/x.parquet", 1, "e")

    verdict, _ = judge_footer(
        obj, footer_of(naive), target, route, None, naive_timezone
    )

    assert verdict.action == action
    if naive_timezone is None:
        assert "--naive-timezone" in (verdict.reason or "")


@pytest.mark.anyio
async def test_validate_retries_s3_faults_then_leaves_objects_unchecked(
    s3: Any, bucket: str, moto_endpoint: str, make_settings: Callable[..., Settings]
) -> None:
    """A transient GET fault is retried; a persistent one leaves its object unchecked.

    --limit checks only the first objects by key.
    """
    from bifrost_async.faultproxy import FaultProxy, FaultRule

    for name in ("a-retried", "b-down", "c-fine", "d-beyond-limit"):
        upload_numbers(s3, bucket, f"f/{name}.parquet", 0, 3)

    transient = FaultRule("slowdown", path="a-retried", count=2)
    persistent = FaultRule("internal", path="b-down")
    with FaultProxy(moto_endpoint) as proxy:
        proxy.set_rules([transient, persistent])
        settings = make_settings([f"s3://{bucket}/f/"], s3_endpoint=proxy.url)

        (check,) = await validate(settings, limit=3)

    actions = {v.key: (v.action, v.reason) for v in check.objects}
    assert (check.new, len(check.objects)) == (4, 3)
    assert actions["f/a-retried.parquet"] == ("create", None)
    assert actions["f/b-down.parquet"][0] == "unchecked"
    assert "s3://" in (actions["f/b-down.parquet"][1] or "")
    assert actions["f/c-fine.parquet"] == ("land", None)
    assert transient.fired == 2


@pytest.mark.anyio
async def test_validate_fetches_a_footer_larger_than_the_first_read(
    s3: Any,
    bucket: str,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A footer over 64 KiB is fetched again by its exact length, then read."""
    wide = pa.table({f"column_with_a_long_name_{n:04d}": [n] for n in range(300)})
    data = parquet_bytes(wide)
    footer = int.from_bytes(data[-8:-4], "little") + 8
    s3.put_object(Bucket=bucket, Key="w/wide.parquet", Body=data)
    settings = make_settings([f"s3://{bucket}/w/"])

    with caplog.at_level(logging.DEBUG, logger="bifrost_async.validate"):
        (check,) = await validate(settings)

    sizes = [size for _, size in fetches(caplog)]
    (verdict,) = check.objects
    assert 64 * 1024 < footer < len(data)
    assert sizes == [64 * 1024, footer]
    assert (verdict.action, len(verdict.columns), verdict.rows) == ("create", 300, 1)


def test_print_validation_of_nothing_new_reads_cleanly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A route with nothing new prints its counts without an empty verdict list."""
    from bifrost_async.cli import print_validation
    from bifrost_async.validate import TableCheck

    print_validation([TableCheck("ns.t", exists=True, listed=3, new=0)])

    assert capsys.readouterr().out.strip() == (
        "ns.t (exists): listed 3, new 0, checked 0; nothing was committed"
    )


@pytest.mark.parametrize("target", [TARGET, None], ids=["table-exists", "new-table"])
def test_judge_footer_quarantines_duplicate_column_names(
    target: pa.Schema | None,
) -> None:
    """Two columns of one name are a quarantine verdict, as in a run, not a crash."""
    table = pa.Table.from_arrays(
        [pa.array([1], pa.int64()), pa.array([2], pa.int64())], names=["id", "id"]
    )

    verdict, after = judge(table, target)

    assert verdict.action == "quarantine"
    assert verdict.reason == "s3://b/p/x.parquet: column 'id' appears twice"
    assert after == target
