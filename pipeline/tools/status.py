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
    parts = {p.rsplit("/", 1)[-1][len("part-") : -len(".parquet")] for p in out.data_files()}
    history = read_history(out)
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
        "last_runs": history[-3:],  # OUTPUT/_runs/: the latest run records
        "cost_so_far": cost_so_far(history),  # summed over every run that did work
    }


def cost_so_far(history: list[dict]) -> dict:
    """Worker-hours (and money, where the runs had a price) over an output's run history."""
    ws = sum(h.get("worker_seconds") or 0 for h in history)
    out = {"runs": len(history), "worker_hours": round(ws / 3600, 5)}
    priced = [h for h in history if h.get("cost") is not None]
    if priced:
        out.update(cost=round(sum(h["cost"] for h in priced), 2), currency=priced[-1].get("currency"))
    return out
