"""Run events: one sink for what a run tells its operator (stderr), as text lines or JSON objects.

    run_started      fingerprint, shards, images, executor
    worker_ready     worker, host, gpu, load_s          worker_died / worker_start_failed: worker, host, error
    shard_started    shard, worker, attempt            shard_committed: shard, rows, status_counts, seconds
    shard_failed     shard, attempt, error, requeued
    progress         images, total, images_per_s, eta_s (json, or text without a bar; every 10 s)
    run_finished     the summary

`--log-format json` writes one JSON object per line (``{"ts": ..., "event": ..., ...}``) for log
shippers; text writes ``sdgen: <event> key=value ...`` lines. With a progress bar on a terminal,
text mode prints only what an operator must see (workers, failures) and lets the bar show the rest;
without one (``--no-progress``, job logs) every shard gets a line, so a live job is visible.
"""

from __future__ import annotations

import json
import sys
import time

QUIET_WITH_BAR = {"shard_started", "shard_committed", "progress"}  # the bar shows these
TEXT_SKIP = {"run_finished"}  # text mode: the summary is printed on stdout anyway
PROGRESS_EVERY_S = 10.0


class EventSink:
    def __init__(self, fmt: str = "text", stream=None, bar_shown: bool = False):
        if fmt not in ("text", "json"):
            raise ValueError(f"log format must be 'text' or 'json', got {fmt!r}")
        self.fmt, self.stream, self.bar_shown = fmt, stream, bar_shown
        self.counts: dict[str, int] = {}
        self._last_progress = 0.0
        self._first: tuple[float, int] | None = None  # (time, images) of the first progress call

    def emit(self, event: str, **fields) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        stream = self.stream or sys.stderr
        if self.fmt == "json":
            stream.write(
                json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str) + "\n"
            )
        elif event not in TEXT_SKIP and not (self.bar_shown and event in QUIET_WITH_BAR):
            line = "sdgen: " + event + "".join(f" {k}={_text(v)}" for k, v in fields.items())
            if self.bar_shown:
                from tqdm import tqdm

                tqdm.write(line, file=stream)
            else:
                stream.write(line + "\n")
        stream.flush()

    def progress(self, images: int, total: int) -> None:
        """A progress event, rate-limited: the bar covers interactive runs, this covers log files. It
        carries images/s since the first commit and the ETA at that rate."""
        now = time.time()
        if self._first is None:
            self._first = (now, images)  # the rate counts from the first commit (model loads excluded)
        if not self.bar_shown and now - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = now
            t0, n0 = self._first
            dt = now - t0
            rate = (images - n0) / dt if dt > 0 and images > n0 else None
            eta = round((total - images) / rate, 1) if rate else None
            self.emit(
                "progress",
                images=images,
                total=total,
                images_per_s=round(rate, 3) if rate else None,
                eta_s=eta,
            )


class NullSink(EventSink):
    """Events dropped (the Python API's default: callers get the summary dict)."""

    def emit(self, event: str, **fields) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1


def _text(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), default=str)
    s = str(v)
    return json.dumps(s) if (" " in s or not s) else s
