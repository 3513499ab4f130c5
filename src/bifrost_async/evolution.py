"""Schema evolution: which changes a file asks of its table, under a route's mode.

This module owns the decisions of ``add``, ``freeze`` and ``discard``: new top-level
columns, new nested struct fields, and safe type widenings (int to long, float to
double, a decimal with more digits). It only compares schemas; ``conform.py`` checks
the values against the schema it plans, and ``commit.py`` applies the change.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from .errors import ConformError
from .normalize import is_list_type, normalize_field, normalize_type

__all__ = [
    "EvolutionMode",
    "find_nested_additions",
    "find_new_fields",
    "find_widened_fields",
    "is_safe_widening",
    "plan_schema",
]

EvolutionMode = Literal["add", "freeze", "discard"]


def find_new_fields(
    source: pa.Schema,
    target: pa.Schema,
    evolution: EvolutionMode,
) -> tuple[list[pa.Field], list[str]]:
    """Compare names: the fields the table would gain, and the names discarded.

    ``freeze`` refuses new columns, ``discard`` returns their names as discarded; a
    case-only twin of a table column is refused in every mode.
    """
    # Sets built once: Schema.names is a new list on every access.
    known = set(target.names)
    by_lower = {name.lower(): name for name in known}
    extra: list[pa.Field] = []
    for source_field in source:
        if source_field.name in known:
            continue

        twin = by_lower.get(source_field.name.lower())
        if twin is not None:
            raise ConformError(
                f"column {source_field.name!r} differs from table column {twin!r} only "
                "by case; rename it in the source or with a transform"
            )

        normalized = normalize_field(source_field)
        if normalized is not None:
            extra.append(normalized)

    if not extra:
        return [], []

    names = [f.name for f in extra]
    if evolution == "freeze":
        raise ConformError(
            f"new column(s) {', '.join(map(repr, names))} not in the table and schema "
            "evolution is frozen"
        )

    if evolution == "discard":
        return [], names

    return extra, []


def find_widened_fields(source: pa.Schema, target: pa.Schema) -> list[pa.Field]:
    """Table columns that a file's wider type would promote, with that type."""
    widened = []
    present = set(source.names)
    for target_field in target:
        if target_field.name not in present:
            continue

        try:
            wider = normalize_type(source.field(target_field.name).type)
        except ConformError:
            continue  # no table type can hold it; its values may still fit the column

        if wider is not None and is_safe_widening(target_field.type, wider):
            widened.append(pa.field(target_field.name, wider, target_field.nullable))

    return widened


def find_nested_additions(source: pa.Schema, target: pa.Schema) -> list[pa.Field]:
    """Table columns whose structs would gain the file's new nested fields."""
    grown = []
    present = set(source.names)
    for target_field in target:
        if target_field.name not in present:
            continue

        source_type = source.field(target_field.name).type
        merged = merge_nested(source_type, target_field.type, target_field.name)
        if merged is not None:
            grown.append(pa.field(target_field.name, merged, target_field.nullable))

    return grown


def merge_nested(
    source: pa.DataType, target: pa.DataType, path: str
) -> pa.DataType | None:
    """``target`` with the struct fields only ``source`` has, at any depth; or None.

    New nested fields are optional; a case-only twin of a nested field is refused.
    """
    if pa.types.is_dictionary(source):
        source = source.value_type

    if pa.types.is_struct(source) and pa.types.is_struct(target):
        fields = [strip_field(target.field(i)) for i in range(target.num_fields)]
        by_name = {f.name: i for i, f in enumerate(fields)}
        by_lower = {f.name.lower(): f.name for f in fields}
        changed = False
        for index in range(source.num_fields):
            child = source.field(index)
            child_path = f"{path}.{child.name}"
            if child.name in by_name:
                position = by_name[child.name]
                merged = merge_nested(child.type, fields[position].type, child_path)
                if merged is not None:
                    fields[position] = fields[position].with_type(merged)
                    changed = True
            elif child.name.lower() in by_lower:
                raise ConformError(
                    f"column {child_path!r} differs from table column "
                    f"{path + '.' + by_lower[child.name.lower()]!r} only by case"
                )
            elif (added := normalize_field(child)) is not None:
                fields.append(added)
                changed = True

        return pa.struct(fields) if changed else None

    if is_list_type(source) and is_list_type(target):
        item = merge_nested(source.value_type, target.value_type, f"{path}[]")
        if item is None:
            return None

        return pa.large_list(strip_field(target.value_field).with_type(item))

    if pa.types.is_map(source) and pa.types.is_map(target):
        item = merge_nested(source.item_type, target.item_type, f"{path}.value")
        if item is None:
            return None

        item_field = strip_field(target.item_field).with_type(item)
        return pa.map_(strip_field(target.key_field), item_field)

    return None


def strip_field(source: pa.Field) -> pa.Field:
    """A field without metadata (table field ids), at every depth."""
    return pa.field(source.name, strip_type(source.type), source.nullable)


def strip_type(data_type: pa.DataType) -> pa.DataType:
    """A type whose nested fields carry no metadata."""
    if pa.types.is_struct(data_type):
        return pa.struct(
            [strip_field(data_type.field(i)) for i in range(data_type.num_fields)]
        )

    if pa.types.is_large_list(data_type):
        return pa.large_list(strip_field(data_type.value_field))

    if pa.types.is_list(data_type):
        return pa.list_(strip_field(data_type.value_field))

    if pa.types.is_map(data_type):
        return pa.map_(
            strip_field(data_type.key_field), strip_field(data_type.item_field)
        )

    return data_type


def is_safe_widening(old: pa.DataType, new: pa.DataType) -> bool:
    """The promotions Iceberg allows: int to long, float to double, decimal digits."""
    if old == pa.int32() and new == pa.int64():
        return True

    if old == pa.float32() and new == pa.float64():
        return True

    return bool(
        pa.types.is_decimal(old)
        and pa.types.is_decimal(new)
        and new.scale == old.scale
        and old.precision < new.precision <= 38
    )


def plan_schema(target: pa.Schema, changes: list[pa.Field]) -> pa.Schema:
    """The table's schema after ``changes``: wider types in place, new columns last."""
    by_name = {f.name: f for f in changes}
    fields = [by_name.pop(f.name, f) for f in target]
    return pa.schema(fields + list(by_name.values()))
