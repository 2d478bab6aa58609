"""One run at a time per output: a lease file OUTPUT/_lock, and the run history OUTPUT/_runs/.

    OUTPUT/_lock               {"run_id", "host", "pid", "acquired", "expires"} (unix seconds)
    OUTPUT/_runs/<utc>.json    one per run that did work: new, committed, failed, duration

A run takes the lease before any work and gives it back at the end; a background thread renews it
every ttl/3 seconds. A second run while the lease is live does no work and exits with code 3
(LeaseHeld). A lease is stale when it expired (its holder died without releasing it) or when its
holder ran on this host and its process is gone; a stale lease is taken over, and the run says so.

Atomicity: creating the lock is exclusive (local: O_EXCL; S3: a conditional PUT, If-None-Match,
through fsspec's mode="create"). Taking over a stale lease first creates `_lock.takeover-<old run
id>` exclusively, so of two runs that find the same stale lease only one proceeds. Renewal and
release are plain overwrites/deletes by the holder after re-reading the lock; on an object store
without conditional writes (fsspec raises NotImplementedError / the server ignores the header) the
create falls back to check-then-write, which leaves a window of one round trip in which two runs
starting at the same moment could both proceed (the commit protocol still keeps rows exactly once).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid

from pipeline.core import layout
from pipeline.core.retry import StorageError
from pipeline.core.storage import pid_alive

LEASE_EXIT_CODE = 3  # `sdgen run` exit code when another run holds the output's lease


class LeaseHeld(RuntimeError):
    """Another live run holds the output's lease; this run did nothing."""


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


class Lease:
    """Context manager: acquire on enter (raises LeaseHeld), renew in the background, release on exit."""

    def __init__(self, output, ttl_s: float, log=print):
        self.out, self.ttl = output, float(ttl_s)
        self.path = output.path(layout.LOCK)
        self.run_id = uuid.uuid4().hex
        self.holder = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid()}
        self.took_over: dict | None = None  # the stale lease this run replaced, if any
        self.lost = False  # set when a renewal found another holder
        self.log = log
        self._acquired = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- file operations ------------------------------------------------------------------------
    def _record(self) -> bytes:
        now = time.time()
        rec = {
            **self.holder,
            "acquired": self._acquired,
            "expires": now + self.ttl,
            "acquired_utc": utc(self._acquired),
            "expires_utc": utc(now + self.ttl),
        }
        return json.dumps(rec, indent=1, sort_keys=True).encode()

    def _create_exclusive(self, path: str, data: bytes) -> bool:
        """Write `path` only if it does not exist; False when it does."""
        if self.out.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        try:
            self.out.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, TypeError):  # no conditional writes here: check, then write
            if self.out.fs.exists(path):
                return False
            self.out.fs.pipe_file(path, data)
            return True
        except OSError as e:  # botocore's PreconditionFailed (412) surfaces as an OSError in s3fs
            if "Precondition" in str(e) or "412" in str(e):
                return False
            raise

    def _read(self, path: str | None = None) -> dict | None:
        rec = self.out.read_json(path or self.path)
        return rec if isinstance(rec, dict) else None

    def _ours(self, path: str) -> bool:
        """``path`` holds this run's record (a create whose reply was lost, then retried)."""
        return (self._read(path) or {}).get("run_id") == self.run_id

    def stale_reason(self, rec: dict, now: float | None = None) -> str | None:
        now = time.time() if now is None else now
        if rec.get("expires", 0) < now:
            return f"expired at {utc(rec.get('expires', 0))}"
        if (
            rec.get("host") == self.holder["host"]
            and isinstance(rec.get("pid"), int)
            and rec["pid"] != os.getpid()
            and not pid_alive(rec["pid"])
        ):
            return f"its process {rec['pid']} on this host is gone"
        return None

    # ---- acquire / renew / release ------------------------------------------------------------------
    def acquire(self) -> "Lease":
        self._acquired = time.time()
        if self._create_exclusive(self.path, self._record()):
            return self
        rec = self._read()
        if rec is None:  # released between our create and read: try once more
            if self._create_exclusive(self.path, self._record()):
                return self
            rec = self._read() or {}
        if rec.get("run_id") == self.run_id:  # our create reached the store, its reply was lost and the
            return self  # retry found the lock: it is ours
        why = self.stale_reason(rec)
        if why is None:
            raise LeaseHeld(self._held_message(rec))
        marker = self.out.path(layout.takeover(rec.get("run_id", "unknown")))
        if not self._create_exclusive(marker, self._record()) and not self._ours(marker):
            raise LeaseHeld(self._held_message(rec, "another run is taking over its stale lease"))
        self.out.write_bytes_atomic(self.path, self._record())
        self._remove(marker)
        self.took_over = {**rec, "reason": why}
        self.log(
            f"sdgen: took over the stale lease of run {rec.get('run_id', '?')[:12]} "
            f"(host {rec.get('host')}, pid {rec.get('pid')}): {why}"
        )
        return self

    def _held_message(self, rec: dict, extra: str = "") -> str:
        return (
            f"another run holds the lease on {self.out.url!r} (run {str(rec.get('run_id'))[:12]}, host "
            f"{rec.get('host')}, pid {rec.get('pid')}, until {utc(rec.get('expires', 0))})"
            f"{'; ' + extra if extra else ''}; nothing done (exit {LEASE_EXIT_CODE})"
        )

    def renew(self) -> bool:
        rec = self._read()
        if rec is not None and rec.get("run_id") != self.run_id:
            self.lost = True
            self.log(
                f"sdgen: warning: the lease on {self.out.url!r} is now held by run "
                f"{str(rec.get('run_id'))[:12]} (host {rec.get('host')}); this run keeps committing "
                "shards (exactly once), but two runs overlap"
            )
            return False
        self.out.write_bytes_atomic(self.path, self._record())
        return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                if not self.renew():
                    return
            except Exception as e:  # noqa: BLE001 - a flaky store must not kill the run; retried next tick
                self.log(f"sdgen: warning: lease renewal failed ({type(e).__name__}: {e}); retrying")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rec = self._read()
        if rec is not None and rec.get("run_id") == self.run_id:
            self._remove(self.path)

    def _remove(self, path: str) -> None:
        try:
            self.out.fs.rm(path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Lease":
        self.acquire()
        self._thread = threading.Thread(target=self._renew_loop, name="sdgen-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.release()  # its read and delete retried by the store's policy
        except OSError as e:
            if exc is not None:  # the run's own error is the one to report; the lock expires by itself
                self.log(
                    f"sdgen: warning: the lease on {self.out.url!r} was not released ({e}); it expires at "
                    f"{utc(time.time() + self.ttl)} or is taken over by the next run on this host"
                )
                return
            raise StorageError(
                f"{e}; the run itself finished, only releasing the lease failed: the next run "
                "takes the stale lease over (at once on this host, else after its expiry)"
            ) from e


def history_name(started: float, run_id: str = "") -> str:
    """<utc start to the millisecond>Z[-<run id>].json: names sort by start, and two runs that start
    within one second (a budget stop and its re-run) keep a record each."""
    t = dt.datetime.fromtimestamp(started, dt.timezone.utc)
    return (
        t.strftime("%Y%m%dT%H%M%S")
        + f"{t.microsecond // 1000:03d}Z"
        + (f"-{run_id[:8]}" if run_id else "")
        + ".json"
    )


def write_history(output, started: float, summary: dict, lease: Lease | None) -> str:
    """OUTPUT/_runs/<utc start>-<run>.json: what was new, what was committed and failed, how long."""
    rec = {
        "started": utc(started),
        "finished": utc(time.time()),
        "duration_s": summary.get("wall_s"),
        "fingerprint": summary.get("fingerprint"),
        "new_shards": summary.get("pending_shards"),
        "images_planned": summary.get("images"),
        "committed_shards": summary.get("committed_this_run"),
        "committed_rows": summary.get("rows_this_run"),
        "failed_shards": len(summary.get("failed_shards") or {}),
        "failed": summary.get("failed_shards") or {},
        "status_counts_total": summary.get("status_counts"),
        "rows_total": summary.get("rows_total"),
        "complete": summary.get("complete"),
        "images_per_s": summary.get("images_per_s"),
        # what it cost, and what `sdgen plan` estimates the next run from (generate/estimate.py)
        "worker_seconds": summary.get("worker_seconds"),
        "images_per_worker_hour": summary.get("images_per_worker_hour"),
        "model_load_s": summary.get("model_load_s"),
        "pixel_steps": summary.get("pixel_steps_this_run"),
        "model": summary.get("model"),
        "size": summary.get("size"),
        "steps": summary.get("steps"),
        **{k: summary[k] for k in ("cost", "currency", "budget_stop") if summary.get(k) is not None},
    }
    if lease is not None:
        rec.update(
            run_id=lease.run_id,
            host=lease.holder["host"],
            pid=lease.holder["pid"],
            took_over_lease=lease.took_over,
        )
    path = output.path(layout.run_record(history_name(started, lease.run_id if lease is not None else "")))
    output.write_json(path, rec)
    return path


def read_history(output) -> list[dict]:
    """Every run record, oldest first."""
    try:
        names = sorted(p for p in output.fs.ls(output.path(layout.RUNS), detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []
    return [r for r in (output.read_json(p) for p in names) if r]


def history_trend(output, last: int = 10) -> str:
    """The last runs, one line each (what a nightly job's operator reads)."""
    hist = read_history(output)[-last:]
    if not hist:
        return f"no runs recorded in {output.url}/_runs"
    lines = [
        f"{'started':25s} {'seconds':>8s} {'new':>5s} {'committed':>9s} {'rows':>7s} {'failed':>6s} "
        f"{'img/s':>7s}  complete"
    ]
    for h in hist:
        lines.append(
            f"{h.get('started', '?'):25s} {h.get('duration_s') or 0:8.1f} {h.get('new_shards') or 0:5d} "
            f"{h.get('committed_shards') or 0:9d} {h.get('committed_rows') or 0:7d} "
            f"{h.get('failed_shards') or 0:6d} {h.get('images_per_s') or 0:7.2f}  {h.get('complete')}"
        )
    return "\n".join(lines)
