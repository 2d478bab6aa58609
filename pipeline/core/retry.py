"""Retries of transient storage faults (5xx, throttling, timeouts, connection resets) with bounded
exponential backoff, around every storage call that matters (listing, footers, row scans, range
reads, part upload, marker and run.json writes). What still fails after the last try is a
`StorageError`: a fault of the storage, never reported as bad input.

The policy is the job's `retry` section; `configure` sets it for the process (driver and each
worker), `call` applies it. Full jitter (AWS's recommendation) spreads retries of many workers.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass


class StorageError(OSError):
    """A storage call that kept failing with transient errors; the message names the call and path."""


@dataclass(frozen=True)
class Policy:
    attempts: int = 5  # tries in all (1 = no retry)
    base_s: float = 0.2  # backoff before the 2nd try; doubles each time, with full jitter
    max_s: float = 10.0  # cap on one backoff


_policy = Policy()
# in an error's text (s3fs turns botocore errors into OSError with the S3 code in the message)
TRANSIENT_WORDS = ("slowdown", "slow down", "throttl", "(503)", "status 503", "internalerror", "internal error",
                   "serviceunavailable", "service unavailable", "requesttimeout", "timed out", "timeout",
                   "connection reset", "connection aborted", "serverdisconnected", "server disconnected",
                   "bad gateway", "gateway timeout", "remote end closed", "(500)", "status 500")


def configure(policy) -> None:
    """Set the process-wide policy from a config section (anything with attempts, base_s, max_s)."""
    global _policy
    _policy = Policy(policy.attempts, policy.base_s, policy.max_s)


def is_transient(e: BaseException) -> bool:
    """Connection resets, timeouts, 5xx and throttling, looking through the exception's causes."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, StorageError):
            return False  # already retried
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) \
                or type(e).__name__ == "ArrowInvalid":  # bad bytes are not transient
            return False
        name = type(e).__name__.lower()
        if any(w in name for w in ("timeout", "connection", "disconnected", "throttl")):
            return True
        text = str(e).lower()
        if any(w in text for w in TRANSIENT_WORDS):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def call(fn, *args, what: str = "storage call", policy: Policy | None = None, **kwargs):
    """fn(*args, **kwargs), retried on transient errors; then StorageError naming `what`."""
    p = policy or _policy
    for attempt in range(1, p.attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == p.attempts:
                raise StorageError(f"storage error: {what} failed {p.attempts} time(s) with transient errors "
                                   f"(last: {type(e).__name__}: {e}); retry later or raise retry.attempts") from e
            time.sleep(random.uniform(0, min(p.max_s, p.base_s * 2 ** (attempt - 1))))
