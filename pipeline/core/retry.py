"""Retries of transient storage faults (5xx, throttling, timeouts, connection resets) with bounded
exponential backoff, around every storage call that matters (listing, footers, row scans, range
reads, part upload, marker and run.json writes). What still fails after the last try is a
`StorageError`: a fault of the storage, never reported as bad input.

The policy is the job's `retry` section; `configure` sets it for the process (driver and each
worker; a read-side command given `--config`), `call` applies it. Full jitter (AWS's recommendation)
spreads retries of many workers. `RetryingFS` puts every call to a store through `call`: listing,
head/size/exists, reads (and each read of an open file, which pyarrow makes), puts and deletes: each
call gets `attempts` tries of its own (a listing of several requests is not failed by faults spread
over them). What outlasts them is a StorageError, which no outer `call` (a whole-file scan around its
reads) retries again: tries never multiply. A non-transient refusal of a remote store (403,
NoSuchBucket) becomes a `StorageError` at once, with its own line.
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
TRANSIENT_WORDS = (
    "slowdown",
    "slow down",
    "throttl",
    "(503)",
    "status 503",
    "internalerror",
    "internal error",
    "serviceunavailable",
    "service unavailable",
    "requesttimeout",
    "timed out",
    "timeout",
    "connection reset",
    "connection aborted",
    "serverdisconnected",
    "server disconnected",
    "bad gateway",
    "gateway timeout",
    "remote end closed",
    "(500)",
    "status 500",
)


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
        if (
            isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError))
            or type(e).__name__ == "ArrowInvalid"
        ):  # bad bytes are not transient
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
    """fn(*args, **kwargs), retried on transient errors; then StorageError naming `what` (never retried
    again by an outer call: is_transient says no to it)."""
    p = policy or _policy
    for attempt in range(1, p.attempts + 1):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e):
                raise
            if attempt == p.attempts:
                raise StorageError(
                    f"storage error: {what} failed {p.attempts} time(s) with transient errors "
                    f"(last: {type(e).__name__}: {_short(e)}); retry later or raise "
                    "retry.attempts"
                ) from e
        time.sleep(random.uniform(0, min(p.max_s, p.base_s * 2 ** (attempt - 1))))


def _short(e: BaseException) -> str:
    """An error's text on one line, at most 300 characters (botocore's can span lines)."""
    text = " ".join(str(e).split())
    return text if len(text) <= 300 else text[:297] + "..."


# what each wrapped filesystem method does, for the error line: "listing 'bucket/out/_commits' failed ..."
VERBS = {
    "ls": "listing",
    "find": "listing",
    "glob": "listing",
    "walk": "listing",
    "info": "checking",
    "size": "reading the size of",
    "cat_file": "reading",
    "cat": "reading",
    "open": "opening",
    "pipe_file": "writing",
    "put_file": "uploading",
    "get_file": "downloading",
    "rm": "deleting",
    "rm_file": "deleting",
    "mkdir": "creating",
    "makedirs": "creating",
    "touch": "writing",
    "mv": "moving",
    "copy": "copying",
}
# what a store says when it refuses for good (not worth retrying, and not the user's "not found")
PASS_THROUGH = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    NotImplementedError,
    TypeError,
    ValueError,
)


class RetryingFS:
    """An fsspec filesystem whose every store call goes through `call` (the one retry place). Anything
    not in VERBS (protocol, sep, ...) is the wrapped filesystem's own attribute. `.raw` is the wrapped
    one, for code that must talk to the store without retries (there is none today)."""

    def __init__(self, fs, remote: bool):
        self.raw, self.remote = fs, remote

    def __getattr__(self, name):
        attr = getattr(self.raw, name)
        if name not in VERBS or not callable(attr):
            return attr

        def wrapped(path=None, *args, **kwargs):
            what = f"{VERBS[name]} {_key(args[0] if name == 'put_file' and args else path)!r}"
            result = self._call(attr, path, *args, what=what, **kwargs)
            return RetryingFile(result, what, self) if name == "open" and hasattr(result, "read") else result

        return wrapped

    # fsspec's exists/isfile/isdir answer False on *any* error, so a 503 would read as "not there" (an
    # input "does not exist", a _SUCCESS missing): asked through info instead, retried, and only a real
    # FileNotFoundError means absent.
    def exists(self, path, **kwargs) -> bool:
        return self._kind(path) is not None

    def isfile(self, path) -> bool:
        return self._kind(path) == "file"

    def isdir(self, path) -> bool:
        return self._kind(path) == "directory"

    def _kind(self, path) -> str | None:
        try:
            return self._call(self.raw.info, path, what=f"checking {_key(path)!r}").get("type")
        except FileNotFoundError:
            return None

    def _call(self, fn, *args, what: str, **kwargs):
        try:
            return call(fn, *args, what=what, **kwargs)
        except StorageError:
            raise
        except PASS_THROUGH:
            raise
        except OSError as e:
            if "precondition" in str(e).lower() or "(412)" in str(e):  # a conditional put lost its race
                raise FileExistsError(f"{what}: the object exists (precondition failed)") from e
            if not self.remote or is_transient(e):
                # transient: the caller retries it; local: the OS's own error (read-only, no space) is the
                # caller's to report
                raise
            raise StorageError(
                f"storage error: {what} was refused by the store ({type(e).__name__}: "
                f"{_short(e)}); check the credentials, bucket and permissions"
            ) from e


def _key(path) -> str:
    return path[0] if isinstance(path, (list, tuple)) and path else str(path)


class RetryingFile:
    """A file opened through RetryingFS: each read (and seek, which may fetch) retried on its own. A failed
    read leaves the position where it was (fsspec advances it only after a fetch), so a retry reads the
    same bytes; pyarrow reads Parquet through these calls."""

    def __init__(self, f, what: str, fs: RetryingFS):
        self._f, self._what, self._fs = f, what.replace("opening", "reading", 1), fs

    def read(self, *a):
        return self._fs._call(self._f.read, *a, what=self._what)

    def readinto(self, b):
        return self._fs._call(self._f.readinto, b, what=self._what)

    def seek(self, *a):
        return self._fs._call(self._f.seek, *a, what=self._what)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __iter__(self):
        return iter(self._f)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
