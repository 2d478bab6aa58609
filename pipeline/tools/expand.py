"""Prompt templates -> a prompt Parquet file (`sdgen expand TEMPLATES.yaml -o prompts.parquet`).

A templates file is YAML:

    templates:                        # str.format templates; each one is crossed with its own slots
      - "a photo of a {profession}"
      - template: "a portrait of a {profession}"
        images_per_prompt: 8          # optional, per template (the job's value otherwise)
        columns: {framing: portrait}  # optional constants for this template's rows
    slots:
      profession: [doctor, nurse, engineer]
    columns: {domain: people}         # optional constants for every row
    images_per_prompt: 4              # optional default for every template

Each template is expanded over the Cartesian product of the slots it names (a template without
slots gives one row); slots it does not name are null in its rows. Output columns: `prompt`,
`prompt_id`, `template`, one column per slot, then the constants and `images_per_prompt` when given.
Slot and constant columns pass through the pipeline unchanged, so audits can group by them.

`prompt_id` = first 16 hex digits of sha256 over the template and the slot values it uses (JSON,
sorted keys): it does not depend on the order of templates or values in the file, so adding a
profession to the list keeps every existing id (and with the seed contract every existing image).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from pathlib import Path

import pyarrow as pa

from pipeline.core import schema

RESERVED = {schema.PROMPT, schema.PROMPT_ID, "template", *schema.OVERRIDES}
TEMPLATE_KEYS = {"template", "images_per_prompt", "columns"}
TOP_KEYS = {"templates", "slots", "columns", "images_per_prompt", "description", "name"}


class TemplateError(ValueError):
    """A problem in a templates file; the message names the template or slot and echoes the value."""


def template_slots(template: str) -> list[str]:
    """Slot names a template uses, in order of first use ("{x}" only: no attributes or indexing)."""
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(f"a template must be a non-empty string, got {template!r}")
    try:
        parsed = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise TemplateError(f"template {template!r} is not a valid format string: {e}") from None
    fields = [f for f, _, _ in parsed]
    for f, spec, conv in parsed:
        if not f.isidentifier() or spec or conv:
            raise TemplateError(
                f"template {template!r}: slot {{{f}}} must be a plain name like {{profession}} "
                f"(no positions, attributes, format specs or conversions)"
            )
    return list(dict.fromkeys(fields))


def prompt_id(template: str, values: dict) -> str:
    """Stable id from the template and the slot values it uses (never from a position)."""
    blob = json.dumps([template, values], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_slots(slots) -> dict[str, list[str]]:
    if not isinstance(slots, dict):
        raise TemplateError(f"'slots' must be a mapping of slot name -> list of values, got {slots!r}")
    out = {}
    for name, values in slots.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise TemplateError(f"slot name {name!r} must be an identifier (letters, digits, _)")
        if name in RESERVED:
            raise TemplateError(
                f"slot {name!r} would shadow the reserved column {name!r}; rename it "
                f"(reserved: {sorted(RESERVED)})"
            )
        if not isinstance(values, list) or not values:
            raise TemplateError(f"slot {name!r} needs a non-empty list of values, got {values!r}")
        bad = [v for v in values if not isinstance(v, (str, int, float)) or isinstance(v, bool)]
        if bad:
            raise TemplateError(f"slot {name!r}: values must be strings or numbers, got {bad[0]!r}")
        vals = [str(v) for v in values]
        dup = sorted({v for v in vals if vals.count(v) > 1})
        if dup:
            raise TemplateError(f"slot {name!r} lists {dup[0]!r} more than once")
        out[name] = vals
    return out


def _check_columns(columns, where: str, slots) -> dict:
    if columns is None:
        return {}
    if not isinstance(columns, dict):
        raise TemplateError(f"{where}: 'columns' must be a mapping of column -> constant, got {columns!r}")
    for name, value in columns.items():
        if (
            not isinstance(name, str)
            or name in (schema.PROMPT, schema.PROMPT_ID, "template")
            or name in slots
        ):
            raise TemplateError(
                f"{where}: constant column {name!r} clashes with prompt, prompt_id, template or a slot"
            )
        if isinstance(value, (dict, list)):
            raise TemplateError(f"{where}: constant column {name!r} must be a scalar, got {value!r}")
    return dict(columns)


def _ipp(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TemplateError(f"{where}: images_per_prompt must be an integer >= 1, got {value!r}")
    return value


def _templates(raw: dict, slots: dict) -> list[dict]:
    items = raw.get("templates")
    if not isinstance(items, list) or not items:
        raise TemplateError(f"'templates' must be a non-empty list, got {items!r}")
    default_ipp = _ipp(raw.get("images_per_prompt"), "top level")
    out, seen = [], set()
    for i, item in enumerate(items):
        t = {"template": item} if isinstance(item, str) else item
        if not isinstance(t, dict) or set(t) - TEMPLATE_KEYS or "template" not in t:
            raise TemplateError(
                f"templates[{i}] must be a string or a mapping with keys {sorted(TEMPLATE_KEYS)}, "
                f"got {item!r}"
            )
        text = t["template"]
        where = f"template {text!r}"
        used = template_slots(text)
        missing = [s for s in used if s not in slots]
        if missing:
            raise TemplateError(f"{where} uses slot {{{missing[0]}}}, which is not in slots {sorted(slots)}")
        if text in seen:
            raise TemplateError(f"{where} is listed twice")
        seen.add(text)
        ipp = _ipp(t.get("images_per_prompt"), where)
        out.append(
            {
                "template": text,
                "slots": used,
                "columns": _check_columns(t.get("columns"), where, slots),
                "images_per_prompt": ipp if ipp is not None else default_ipp,
            }
        )
    return out


def expand(raw: dict) -> pa.Table:
    """The prompt table for a parsed templates mapping (see the module docstring)."""
    if not isinstance(raw, dict):
        raise TemplateError(f"a templates file must be a YAML mapping, got {type(raw).__name__}")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise TemplateError(f"unknown top-level keys {sorted(unknown)}; expected some of {sorted(TOP_KEYS)}")
    slots = _check_slots(raw.get("slots") or {})
    constants = _check_columns(raw.get("columns"), "top level", slots)
    templates = _templates(raw, slots)
    const_names = list(dict.fromkeys([*constants, *(c for t in templates for c in t["columns"])]))
    rows = []
    for t in templates:
        for combo in itertools.product(*(slots[s] for s in t["slots"])):
            values = dict(zip(t["slots"], combo))
            row = {
                "prompt": t["template"].format(**values),
                "prompt_id": prompt_id(t["template"], values),
                "template": t["template"],
                **{s: values.get(s) for s in slots},
            }
            row.update({c: t["columns"].get(c, constants.get(c)) for c in const_names})
            if any(x["images_per_prompt"] is not None for x in templates):
                row["images_per_prompt"] = t["images_per_prompt"]
            rows.append(row)
    ids = [r["prompt_id"] for r in rows]
    if len(set(ids)) != len(ids):  # sha256 prefixes of distinct (template, values): only on a collision
        raise TemplateError("two rows got the same prompt_id; report this (sha256 prefix collision)")
    table = pa.Table.from_pylist(rows)
    for i, f in enumerate(table.schema):  # a slot no template uses is all null: keep it a string column
        want = (
            pa.int32() if f.name == "images_per_prompt" else pa.string() if pa.types.is_null(f.type) else None
        )
        if want is not None:
            table = table.set_column(i, f.name, table.column(i).cast(want))
    return table


def expand_file(path: str | Path) -> pa.Table:
    """Read a templates YAML file and expand it; errors name the file."""
    from pipeline.core.config import read_yaml

    raw = read_yaml(path, "templates", TemplateError)
    try:
        return expand(raw)
    except TemplateError as e:
        raise TemplateError(f"{path}: {e}") from None


def write_prompts(table: pa.Table, out: str) -> None:
    """Write the prompt table as one Parquet file (local path or URL), atomically where local."""

    from pipeline.core.storage import Output

    o = Output(out)
    o.write_table(o.root, table)
