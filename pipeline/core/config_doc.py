"""docs/CONFIG.md from the job config model: every key of JobConfig and of its sections, with its default
and the comment that sits beside the field in pipeline/core/config.py and sections.py, so the reference
cannot drift from the code. Made with `python -m pipeline.core.config_doc > docs/CONFIG.md` (`make docs`);
tests/core/test_config_doc.py fails when the file differs from render()."""

from __future__ import annotations

import ast
import inspect
import io
import json
import re
import tokenize
import typing

from pydantic import BaseModel

from pipeline.core.config import JobConfig

HEADER = """# Job configuration reference

Generated from the config model (`pipeline/core/config.py`, `pipeline/core/sections.py`) by
`python -m pipeline.core.config_doc > docs/CONFIG.md` (`make docs`): edit the comments in the code,
not this file. A job config is YAML; unknown keys are rejected by name, and `--set dotted.key=value`
overrides any key (values parse as YAML). [configs/demo.yaml](../configs/demo.yaml) lists every key
with a comment. `JobConfig.fingerprint_fields` decides which keys enter the output's fingerprint (a
committed output refuses a config with another one): execution knobs (batch size, device, compile,
workers, storage, retries, limits, audit defaults, quota) stay out of it, so a resume may change them.
"""


def _comments(model: type[BaseModel]) -> tuple[dict[str, str], str]:
    """({field: its comment}, the class's leading comment) read from the class source: the `# ...` at
    the end of the field's line, else the comment lines right above it, else "as `<previous field>`"
    for a field that shares the block above its neighbour (width, height)."""
    src = inspect.getsource(model)
    trailing, alone = {}, {}  # line number -> comment at the end of a line / on a line of its own
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            (alone if not tok.line[: tok.start[1]].strip() else trailing)[tok.start[0]] = text
    fields = [n for n in ast.parse(src).body[0].body if isinstance(n, ast.AnnAssign)]
    out, from_above, intro = {}, {}, ""
    for i, node in enumerate(fields):
        name, above, line = node.target.id, [], node.lineno - 1
        while line in alone:  # the contiguous comment block right above the field
            above.insert(0, alone[line])
            line -= 1
        own = next((trailing[n] for n in range(node.lineno, node.end_lineno + 1) if n in trailing), "")
        if i == 0 and own:  # a block above a first field that has its own comment introduces the class
            intro = " ".join(above)
        prev = fields[i - 1] if i else None
        shares = not own and not above and prev and from_above[prev.target.id] and prev.end_lineno == line
        out[name] = own or " ".join(above) or (f"as `{prev.target.id}`" if shares else "")
        from_above[name] = bool(above) and not own
    return out, intro


def _section_model(annotation) -> tuple[type[BaseModel] | None, str]:
    """(the nested section model of a field, "[]" for a list of them), or (None, "") for a plain value."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is list:
        model, _ = _section_model(args[0])
        return model, "[]" if model else ""
    if args and type(None) in args:  # Optional[Section]
        return _section_model(next(a for a in args if a is not type(None)))
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return (annotation if is_model else None), ""


def _value(v) -> str:
    """A default as it would be written in YAML."""
    if v is None or isinstance(v, bool):
        return {None: "null", True: "true", False: "false"}[v]
    if isinstance(v, str):
        return v or '""'
    return json.dumps(v) if isinstance(v, (list, dict)) else repr(v)


def _cell(text: str) -> str:
    """Markdown-safe: `|` would end the cell, `<id>` would read as an HTML tag, `*` as emphasis."""
    return re.sub(r"([|*]|<(?=[A-Za-z/]))", r"\\\1", text)


def _sections(model: type[BaseModel], prefix: str, intro: str) -> list[tuple[str, str, list[str]]]:
    """[(section key, intro paragraph, table rows)] for `model` and, after it, each nested section."""
    comments, lead = _comments(model)
    doc = " ".join(inspect.cleandoc(model.__doc__).split()) if model.__doc__ else lead
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key, (sub, suffix) = f"{prefix}{name}", _section_model(field.annotation)
        if sub is not None:  # a section of its own, introduced by its holder's comment
            nested += _sections(sub, f"{key}{suffix}.", comments.get(name, ""))
            continue
        value = None if field.is_required() else field.get_default(call_default_factory=True)
        default = "required" if field.is_required() else f"`{_value(value)}`"
        meaning = comments.get(name) or field.description or ""
        rows.append(f"| `{key}` | {_cell(default)} | {_cell(meaning)} |")
    text = " ".join(t + ("" if t.endswith(".") else ".") for t in (intro, doc) if t)
    return [(prefix.rstrip("."), text, rows)] + nested


def render() -> str:
    """docs/CONFIG.md: a header, then per section an intro and a table of key, default, meaning."""
    parts = [HEADER]
    for key, intro, rows in _sections(JobConfig, "", ""):
        parts.append(f"## {f'`{key}`' if key else 'Top level'}\n")
        if intro:
            parts.append(f"{_cell(intro)}\n")
        parts.append("\n".join(["| key | default | meaning |", "|---|---|---|", *rows]) + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
