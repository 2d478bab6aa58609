"""What a run spends, and its budgets (`limits.max_worker_hours`, `limits.max_wall_hours`).

Worker-seconds run from a worker's request (a Ray actor asked for, the inline worker built) to its
release, model load included, summed over workers: what a rented GPU is billed for. The executors
ask `exhausted()` before they start each shard: once a budget is reached no new shard starts, shards
in flight finish and commit, and the run ends with `stopped` saying why (`sdgen run` exits 4).
"""

from __future__ import annotations

import time

monotonic = time.monotonic  # the clock (a module attribute: tests move it forward)


class Budget:
    def __init__(self, limits=None, cost=None):
        self.max_worker_s = limits.max_worker_hours * 3600 if limits and limits.max_worker_hours else None
        self.max_wall_s = limits.max_wall_hours * 3600 if limits and limits.max_wall_hours else None
        self.cost = cost  # CostConfig or None
        self.t0 = monotonic()  # the run's start
        self.closed_s = 0.0  # worker-seconds of released workers
        self.open: dict[str, float] = {}  # worker id -> when it was requested
        self.stopped: str | None = None  # why no new shard starts, once a budget is reached

    def worker_started(self, wid: str) -> None:
        self.worker_released(wid)  # a re-requested actor (after a death) starts a new span
        self.open[wid] = monotonic()

    def worker_released(self, wid: str) -> None:
        start = self.open.pop(wid, None)
        if start is not None:
            self.closed_s += monotonic() - start

    def worker_seconds(self) -> float:
        now = monotonic()
        return self.closed_s + sum(now - s for s in self.open.values())

    def wall_seconds(self) -> float:
        return monotonic() - self.t0

    def exhausted(self) -> bool:
        """Whether a budget is reached (then `stopped` says which); asked before each new shard."""
        if (
            self.stopped is None
            and self.max_worker_s is not None
            and self.worker_seconds() >= self.max_worker_s
        ):
            self.stopped = f"limits.max_worker_hours ({self.max_worker_s / 3600:g}) reached"
        if self.stopped is None and self.max_wall_s is not None and self.wall_seconds() >= self.max_wall_s:
            self.stopped = f"limits.max_wall_hours ({self.max_wall_s / 3600:g}) reached"
        return self.stopped is not None

    def spent(self, images: int) -> dict:
        """Worker-seconds, images per worker-hour and money (when priced), for the summary and history."""
        ws = self.worker_seconds()
        out = {
            "worker_seconds": round(ws, 2),
            "images_per_worker_hour": round(images * 3600 / ws, 1) if ws else None,
        }
        out.update(money(ws / 3600, self.cost))
        return out


def money(worker_hours: float, cost) -> dict:
    """{"cost": amount, "currency": ...} when a price per worker-hour is configured, else {}."""
    if cost is None or cost.per_worker_hour is None:
        return {}
    return {"cost": round(worker_hours * cost.per_worker_hour, 2), "currency": cost.currency}
