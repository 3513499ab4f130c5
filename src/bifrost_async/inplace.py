"""In place: an object that already is a valid data file is registered where it lies.

With ``zero_copy = "in-place"`` (``--zero-copy in-place``) an object is not downloaded
whole. The pipeline reads its last :data:`FOOTER_READ` bytes with one ranged GET (the
last 8 bytes give the footer's length; a footer longer than that costs one more GET),
:func:`prepare_in_place` makes the zero-copy decision of ``reuse.py`` from that footer
alone, and a qualifying object becomes a data file whose path is the object's own
``s3://bucket/key``, with the footer's statistics. Nothing is written: the object joins
the same batch, snapshot and ledger protocol as any other, and an abandoned batch
leaves no orphan behind. An object that does not qualify is then downloaded whole and
takes the normal path. This module owns the footer's bytes and the decision; the
pipeline owns the reads and the byte budget, ``commit.py`` the commit.

What the user takes on with this mode:

- **The table references objects outside its warehouse.** Nobody may delete,
  overwrite or move them while a snapshot references them: readers would fail, or
  read other bytes under the old footer's offsets. Table maintenance deletes data
  files that no snapshot references any more (expiring snapshots after a compaction
  or a delete), the source objects included; a table created in this mode gets
  ``gc.enabled=false`` (``Ingester.open_route``), an existing one must be given it.
- **The table's FileIO must read the source bucket**: readers open these files with
  the catalog's ``s3.*`` properties, not with this process's S3 client. The first
  object registered in place per table and process is looked up through the table's
  FileIO first (:func:`check_source_readable`); a FileIO that cannot see it ends the
  run with a :class:`ConfigError` before anything in place is committed.
- **A rewritten object would change committed rows**, so ``on_changed = "ingest"``
  is refused with this mode (``config.py``). The footer read is pinned to the listed
  ETag, so an object rewritten between listing and reading fails like any fetch.
- **Only the footer is checked.** Page checksums are not verified and no value is
  decoded: a file with damaged pages is registered and fails when it is read. A
  footer that cannot be parsed, an encrypted one, or one whose length does not fit
  the object is quarantined; column chunks outside the object send it to the normal
  path, whose full read decides. The crash guard (``isolation.py``) covers only the
  normal path.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq

from .commit import TableHandle
from .config import Route
from .conform import drop_index_columns
from .discovery import ObjectRef
from .errors import ConfigError, UnreadableFileError
from .process import (
    Prepared,
    ProcessOptions,
    conform_to_table,
    prepare_reuse,
    refuse_non_parquet,
    translate_data_errors,
    translate_reader_errors,
)
from .reuse import describe_data_file

__all__ = [
    "FOOTER_READ",
    "check_source_readable",
    "find_layout_problem",
    "is_in_place_candidate",
    "prepare_in_place",
    "read_footer_length",
]

logger = logging.getLogger(__name__)

# One ranged GET of this many bytes from the end usually holds the whole footer.
FOOTER_READ = 64 * 1024

# "PAR1", then at the end the footer's length and "PAR1" again.
_MIN_SIZE = 12

# A path pyiceberg's FileIO would cut short: it parses data file paths as URLs.
_URL_SPECIAL = ("?", "#")


def is_in_place_candidate(obj: ObjectRef) -> bool:
    """Whether an object may be registered where it lies at all, before any read.

    Too small to hold a footer, or a key that a table's file path cannot name as it
    is: such objects take the normal path at once.
    """
    return obj.size >= _MIN_SIZE and not any(c in obj.key for c in _URL_SPECIAL)


def read_footer_length(tail: bytes, obj: ObjectRef) -> int:
    """The footer length that an object's last 8 bytes give, checked against its size.

    ``tail`` ends where the object ends. Raises :class:`UnreadableFileError` for an
    object that is not plain Parquet or whose footer cannot fit in it.
    """
    refuse_non_parquet(obj, None, tail[-4:])
    length = int.from_bytes(tail[-8:-4], "little")
    if length + _MIN_SIZE > obj.size:
        raise UnreadableFileError(
            f"{obj.uri}: footer length {length} does not fit in an object of "
            f"{obj.size} bytes; the file is corrupt"
        )

    return length


def open_footer(tail: bytes, obj: ObjectRef) -> pq.ParquetFile:
    """Parse the footer at the end of ``tail``, which must hold all of it."""
    length = read_footer_length(tail, obj)
    if len(tail) < length + 8:
        raise ValueError(f"{len(tail)} bytes do not hold a footer of {length}")

    # The reader only needs the leading magic and the footer to parse the metadata;
    # the data pages are never looked at.
    footer = b"PAR1" + tail[-(length + 8) :]
    with translate_reader_errors(obj):
        return pq.ParquetFile(pa.BufferReader(footer), coerce_int96_timestamp_unit="us")


def find_layout_problem(
    metadata: pq.FileMetaData, size: int, length: int
) -> str | None:
    """Why a footer does not describe an object of ``size`` bytes, or ``None``.

    Pure. Every column chunk must lie between the leading magic and the footer
    (``length`` bytes, then 8 more): a footer that points elsewhere belongs to another
    file, or the object was cut and a footer glued back on.
    """
    end_of_data = size - length - 8
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                start = min(start, chunk.dictionary_page_offset)

            end = start + chunk.total_compressed_size
            if start < 4 or end > end_of_data:
                return (
                    f"column {chunk.path_in_schema!r} of row group {group} lies at "
                    f"bytes {start} to {end}, outside the data (4 to {end_of_data})"
                )

    return None


def prepare_in_place(
    tail: bytes,
    obj: ObjectRef,
    handle: TableHandle,
    route: Route,
    options: ProcessOptions,
) -> Prepared | None:
    """Register an object where it lies if its footer qualifies, else return ``None``.

    ``tail`` is the end of the object and holds at least its whole footer. A missing
    table is created from the footer's schema, as the normal path would create it
    from the file. Raises :class:`UnreadableFileError` (quarantine) for a footer that
    cannot be read; ``None`` means the object is to be downloaded and take the normal
    path. Blocking: run it in a worker thread.
    """
    parquet = open_footer(tail, obj)
    metadata = parquet.metadata
    problem = find_layout_problem(metadata, obj.size, read_footer_length(tail, obj))
    if problem is not None or metadata.num_rows == 0:
        logger.debug("inplace.skip uri=%s reason=%s", obj.uri, problem or "no rows")
        return None

    with translate_data_errors(obj):
        if handle.table is None:
            schema_only = drop_index_columns(parquet.schema_arrow.empty_table())
            conform_to_table(schema_only, handle, route, options)

        reason = prepare_reuse(metadata, handle)
        if reason is not None:
            logger.debug("inplace.skip uri=%s reason=%s", obj.uri, reason)
            return None

        iceberg = handle.require()
        data_file = describe_data_file(obj.uri, obj.size, metadata, iceberg.metadata)

    logger.debug("inplace.registered uri=%s rows=%d", obj.uri, metadata.num_rows)
    return Prepared(obj=obj, rows=metadata.num_rows, files=[data_file], reused=True)


def check_source_readable(handle: TableHandle, obj: ObjectRef) -> None:
    """Check that the table's own FileIO sees an object registered in place.

    Readers of the table open such objects with the catalog's ``s3.*`` properties,
    not with the ingester's S3 client. Raises :class:`ConfigError` when that FileIO
    cannot find the object or sees another size. Blocking: one HEAD request.
    """
    io = handle.require().io
    try:
        size = len(io.new_input(obj.uri))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--zero-copy: table {handle.identifier!r} cannot read {obj.uri!r} "
            f"through its catalog's FileIO ({exc}); set the catalog's s3.* "
            "properties so that readers of the table reach the source bucket"
        ) from exc

    if size != obj.size:
        raise ConfigError(
            f"--zero-copy: table {handle.identifier!r} sees {obj.uri!r} as {size} "
            f"bytes, the listing as {obj.size}; set the catalog's s3.* properties "
            "to the source's endpoint"
        )
