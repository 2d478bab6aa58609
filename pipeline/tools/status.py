"""`sdgen status OUTPUT`: what an output holds, from its markers and run.json (no part is read
except to check sizes)."""
from __future__ import annotations

from collections import Counter

from pipeline.core.storage import Output, OutputError


def output_status(url: str, storage=None) -> dict:
    out = Output(url, storage)
    run = out.read_json(out.path("run.json"))
    if run is None:
        raise OutputError(f"{url!r} has no run.json: not an sdgen output")
    markers = out.committed_markers()
    valid = {n: m for n, m in markers.items() if out.marker_valid(m, "size")}
    status = Counter()
    for m in valid.values():
        status.update(m.get("status_counts", {}))
    parts = {p.rsplit("/", 1)[-1][len("part-"):-len(".parquet")] for p in out.data_files()}
    return {
        "output": url,
        "fingerprint": run.get("fingerprint"),
        "model": run.get("config", {}).get("model"),
        "created": run.get("created"),
        "committed_shards": len(valid),
        "invalid_markers": sorted(set(markers) - set(valid)),
        "uncommitted_parts": sorted(parts - set(valid)),  # published, marker missing: redone on resume
        "rows": sum(m["rows"] for m in valid.values()),
        "status_counts": dict(status),
        "success": out.exists(out.path("_SUCCESS")),
        "last_summary": out.read_json(out.path("summary.json")),
    }
