"""The run summary: what a run planned, committed and failed, printed by `sdgen run` and saved as
OUTPUT/summary.json (docs/DESIGN.md §4)."""

from __future__ import annotations

from collections import Counter


class Tally:
    """What the executors report, aggregated as it arrives: memory flat in the shard count (the driver
    once kept every commit marker, ~2 KB a shard). Only a shard that failed once and was re-queued can
    report a commit twice (its first attempt committed, then died before answering): those few are
    remembered to count once. ``on_marker`` sees each marker before it is dropped."""

    def __init__(self, on_marker=None):
        self.count = 0  # shards committed this run
        self.rows = 0  # rows committed this run
        self.status: Counter = Counter()  # status counts of this run's commits
        self.stages: Counter = Counter()  # summed stage seconds of this run's commits
        self.failed: dict[str, str] = {}  # shard -> last error, for shards not (yet) committed
        self.retried: dict[str, bool] = {}  # shard that failed once -> whether it has committed since
        self.load_s: list[float] = []  # model load seconds per worker
        self.on_marker = on_marker

    def commit(self, shard: str, marker: dict) -> None:
        self.failed.pop(shard, None)
        if self.on_marker is not None:
            self.on_marker(marker)
        if self.retried.get(shard):
            return  # its second report: counted already
        if shard in self.retried:
            self.retried[shard] = True
        self.count += 1
        self.rows += marker["rows"]
        self.status.update(marker.get("status_counts", {}))
        self.stages.update(marker.get("timings", {}))

    def fail(self, shard: str, error: str) -> None:
        self.failed[shard] = error
        self.retried.setdefault(shard, False)


def build_summary(prep, tally: Tally, wall: float) -> dict:
    """The summary of a run from its Prepared plan (shards committed before it) and the executors' Tally."""
    status = Counter(tally.status)
    for m in prep.committed.values():
        status.update(m.get("status_counts", {}))
    return {
        "output": prep.cfg.output,
        "fingerprint": prep.cfg.fingerprint(),
        **prep.info,
        "committed_this_run": tally.count,
        "failed_shards": dict(sorted(tally.failed.items())),
        "complete": len(prep.committed) + tally.count == len(prep.shards) and not tally.failed,
        "rows_total": sum(m["rows"] for m in prep.committed.values()) + tally.rows,
        "status_counts": dict(status),
        "rows_this_run": tally.rows,
        "wall_s": round(wall, 2),
        "images_per_s": round(tally.rows / wall, 3) if wall > 0 else None,
        "model_load_s": [round(x, 2) for x in tally.load_s],
        "stage_seconds": {k: round(v, 2) for k, v in tally.stages.items()},
    }


def work_fields(cfg, rows: int) -> dict:
    """What a run made, in the units `sdgen plan` estimates from: the model, size and steps, and its
    pixel-steps (rows × width × height × steps at the configured values; per-row overrides aside)."""
    g = cfg.generation
    return {
        "model": cfg.model,
        "size": [g.width, g.height],
        "steps": g.steps,
        "pixel_steps_this_run": rows * g.width * g.height * g.steps,
    }


def merge_summaries(a: dict, b: dict, wall: float) -> dict:
    """One run's summary over its plan and the quota rounds after it (b: a round's own summary)."""
    rows = a["rows_this_run"] + b["rows_this_run"]
    status, stages = Counter(a["status_counts"]), Counter(a["stage_seconds"])
    status.update(b["status_counts"])
    stages.update(b["stage_seconds"])
    added = (
        "files",
        "rows",
        "shards",
        "committed_shards",
        "pending_shards",
        "committed_this_run",
        "rows_total",
    )
    return {
        **a,
        **{k: a.get(k, 0) + b.get(k, 0) for k in added},
        "status_counts": dict(status),
        "failed_shards": {**a["failed_shards"], **b["failed_shards"]},
        "complete": a["complete"] and b["complete"],
        "rows_this_run": rows,
        "wall_s": round(wall, 2),
        "images_per_s": round(rows / wall, 3) if wall > 0 else None,
        "model_load_s": a["model_load_s"] + b["model_load_s"],
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
    if s.get("worker_seconds") is not None:
        money = f"; {s['cost']:.2f} {s['currency']}" if s.get("cost") is not None else ""
        lines.append(
            f"cost        {s['worker_seconds'] / 3600:.4f} worker-hours ({s['images_per_worker_hour']} "
            f"images per worker-hour){money}"
        )
    if s.get("budget_stop"):
        b = s["budget_stop"]
        lines.append(
            f"BUDGET      {b['reason']}: {b['shards_not_started']} shard(s) not started; what was "
            "committed is kept: run again (a larger budget) to continue (exit 4)"
        )
    if s.get("rows_overriding_images_per_prompt"):
        lines.append(
            f"overrides   {s['rows_overriding_images_per_prompt']} row(s) set their own images_per_prompt "
            "(it overrides generation.images_per_prompt for them)"
        )
    if s.get("duplicate_ids"):
        lines.append(
            f"duplicates  {s['duplicate_ids']} row(s) repeated an earlier prompt_id (see shards.duplicates)"
        )
    if s.get("invalid_rows"):
        lines.append(f"invalid     {s['invalid_rows']} input row(s) marked status 'invalid'")
    for name, err in s["failed_shards"].items():
        lines.append(f"FAILED      {name}: {err}")
    if s.get("contact_sheet"):
        lines.append(f"sheet       {s['contact_sheet']}")
    lines.append("complete    yes (_SUCCESS written)" if s["complete"] else "complete    no")
    return "\n".join(lines)
