"""The run summary: what a run planned, committed and failed, printed by `sdgen run` and saved as
OUTPUT/summary.json (docs/DESIGN.md §4)."""
from __future__ import annotations

from collections import Counter


def build_summary(prep, result: dict, wall: float) -> dict:
    """The summary of a run from its Prepared plan and the executors' result (committed, failed)."""
    done = {**prep.committed, **result["committed"]}
    status = Counter()
    for m in done.values():
        status.update(m.get("status_counts", {}))
    new_rows = sum(m["rows"] for m in result["committed"].values())
    stages = Counter()
    for m in result["committed"].values():
        stages.update(m.get("timings", {}))
    return {
        "output": prep.cfg.output, "fingerprint": prep.cfg.fingerprint(), **prep.info,
        "committed_this_run": len(result["committed"]),
        "failed_shards": dict(sorted(result["failed"].items())),
        "complete": len(done) == len(prep.shards) and not result["failed"],
        "rows_total": sum(m["rows"] for m in done.values()), "status_counts": dict(status),
        "rows_this_run": new_rows, "wall_s": round(wall, 2),
        "images_per_s": round(new_rows / wall, 3) if wall > 0 else None,
        "model_load_s": [round(x, 2) for x in result["load_s"]],
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
    }


def format_summary(s: dict) -> str:
    lines = [
        f"output      {s['output']}",
        f"shards      {s['shards']} planned, {s['committed_shards']} already committed, "
        f"{s['committed_this_run']} committed now, {len(s['failed_shards'])} failed",
        f"rows        {s['rows_total']} total ({s['rows_this_run']} this run); status {s['status_counts']}",
        f"speed       {s['images_per_s']} images/s over {s['wall_s']} s (model load {s['model_load_s']} s)",
    ]
    if s.get("rows_overriding_images_per_prompt"):
        lines.append(f"overrides   {s['rows_overriding_images_per_prompt']} row(s) set their own images_per_prompt "
                     "(it overrides generation.images_per_prompt for them)")
    if s.get("duplicate_ids"):
        lines.append(f"duplicates  {s['duplicate_ids']} row(s) repeated an earlier prompt_id (see shards.duplicates)")
    if s.get("invalid_rows"):
        lines.append(f"invalid     {s['invalid_rows']} input row(s) marked status 'invalid'")
    for name, err in s["failed_shards"].items():
        lines.append(f"FAILED      {name}: {err}")
    if s.get("contact_sheet"):
        lines.append(f"sheet       {s['contact_sheet']}")
    lines.append("complete    yes (_SUCCESS written)" if s["complete"] else "complete    no")
    return "\n".join(lines)
