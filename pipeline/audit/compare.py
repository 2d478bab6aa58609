"""`sdgen audit --compare OUT_A OUT_B`: B − A per group with CIs (paired where the prompts match), the
numbers behind `sdgen report --compare` (pipeline/pages/compare.py)."""

from __future__ import annotations

import datetime as dt

from pipeline.audit import tables as T
from pipeline.audit.data import AuditError, apply_where, attribute_labels, open_source, read_rows
from pipeline.audit.runner import dumps, jsonable, load_target
from pipeline.audit.spec import AuditSpec


def compare_labelled(src_a, src_b, attribute, spec: AuditSpec) -> dict:
    """The one run-vs-run difference code (`sdgen audit --compare` and `sdgen report --compare`):
    {"table": tables.compare(...), "classes", "target", "info" (A's attribute description),
    "frames": [A's, B's ok rows with labels]}. ``src_a``/``src_b``: opened Sources."""
    frames, infos = [], []
    for src in (src_a, src_b):
        df = apply_where(read_rows(src), spec.where)
        labelled, info = attribute_labels(src, df, attribute, **spec.probe.kwargs())
        frames.append(labelled[labelled["status"] == "ok"])
        infos.append(info)
    if list(infos[0]["classes"]) != list(infos[1]["classes"]):
        raise AuditError(
            f"attribute {attribute!r} has classes {infos[0]['classes']} in {src_a.url!r} but "
            f"{infos[1]['classes']} in {src_b.url!r}: the runs cannot be compared"
        )
    classes = list(infos[0]["classes"])
    t = load_target(spec.target, classes)
    if isinstance(t, dict) and "groups" in t:
        raise AuditError(
            "--compare takes one target (uniform or a {class: weight} file), not per-group targets"
        )
    try:
        table = T.compare(
            frames[0],
            frames[1],
            list(spec.group_by),
            f"attr_{attribute}",
            classes,
            t,
            min_n=spec.min_n,
            level=spec.level,
        )
    except ValueError as e:
        raise AuditError(f"compare: {e}") from None
    return {"table": table, "classes": classes, "target": t, "info": infos[0], "frames": frames}


def run_compare(a, b, spec: AuditSpec, out_file=None, name=None) -> dict:
    """Run B minus run A per group (proportions and D², with CIs; paired where prompt ids match) of
    ``spec``'s one attribute. ``a``/``b``: URLs or opened Sources. Writes the JSON to ``out_file``, else
    to B's audit/compare-<name or A's folder name>.json."""
    if len(spec.attributes) != 1:
        raise AuditError(f"a comparison takes exactly one attribute, got {list(spec.attributes)}")
    src_a, src_b = open_source(a), open_source(b)
    c = compare_labelled(src_a, src_b, spec.attributes[0], spec)
    table = c["table"]
    result = {
        "a": src_a.url,
        "b": src_b.url,
        "attribute": spec.attributes[0],
        "classes": c["classes"],
        "group_by": list(spec.group_by),
        "target": c["target"],
        "where": list(spec.where),
        "rows": table,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    result = jsonable(result)
    if out_file:
        path = out_file
        with open(path, "w") as f:
            f.write(dumps(result))
    else:
        path = f"{src_b.audit_dir}/compare-{name or stem(src_a.url)}.json"
        src_b.output.write_bytes_atomic(path, dumps(result).encode())
    return {"table": table, "result": result, "path": path}


def stem(url: str) -> str:
    import re

    return re.sub(r"[^\w.-]", "_", url.rstrip("/").rsplit("/", 1)[-1]) or "a"
