"""`sdgen status OUTPUT`: what an output holds, from its markers and run.json (no part is read
except to check sizes)."""
from __future__ import annotations

from collections import Counter

from pipeline.core import layout
from pipeline.core.dataset import Dataset
from pipeline.core.lease import read_history


def output_status(url: str, storage=None) -> dict:
    ds = Dataset(url, storage).require_run()
    out, run = ds.output, ds.run
    markers = out.committed_markers()
    valid = ds.commits
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
        "rows": ds.rows,
        "status_counts": dict(status),
        "success": out.exists(out.path(layout.SUCCESS)),
        "last_summary": out.read_json(out.path(layout.SUMMARY)),
        "lease": out.read_json(out.path(layout.LOCK)),  # the running run's holder and expiry; null = none
        "last_runs": read_history(out)[-3:],  # OUTPUT/_runs/: the latest run records
    }
