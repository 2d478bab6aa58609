"""Class 4: transient storage faults are retried with bounded backoff; what outlasts the retries is a
storage error (exit 1), never "not a readable Parquet file"."""

import fsspec
import pytest
from conftest import write_prompts

from pipeline.core import retry
from pipeline.core.config import from_dict
from pipeline.generate.inputs import InputError, read_footer, read_rows, scan_input

FAST = retry.Policy(attempts=4, base_s=0.0, max_s=0.0)


class Flaky:
    """Fails the first `n` calls with `exc`, then calls through."""

    def __init__(self, fn, n, exc):
        self.fn, self.n, self.exc, self.calls = fn, n, exc, 0

    def __call__(self, *a, **k):
        self.calls += 1
        if self.calls <= self.n:
            raise self.exc
        return self.fn(*a, **k)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError("read timed out"),
        OSError("An error occurred (SlowDown) when calling GetObject"),
        OSError("An error occurred (503) Service Unavailable"),
        OSError("An error occurred (InternalError) (500)"),
    ],
)
def test_transient_is_retried(exc):
    f = Flaky(lambda: 42, 3, exc)
    assert retry.call(f, policy=FAST) == 42 and f.calls == 4
    f = Flaky(lambda: 42, 4, exc)
    with pytest.raises(retry.StorageError, match="storage error: x failed 4 time"):
        retry.call(f, what="x", policy=FAST)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("nope"),
        PermissionError("denied"),
        ValueError("bad"),
        OSError("Corrupt snappy compressed data."),
    ],
)
def test_not_transient_is_raised_at_once(exc):
    f = Flaky(lambda: 42, 1, exc)
    with pytest.raises(type(exc)):
        retry.call(f, policy=FAST)
    assert f.calls == 1


def test_flaky_storage_during_validation(tmp_path, monkeypatch):
    path = write_prompts(tmp_path / "in.parquet")
    fs = fsspec.filesystem("file")
    retry.configure(FAST)
    try:
        monkeypatch.setattr(fs, "open", Flaky(fs.open, 3, ConnectionResetError("reset")))
        assert read_footer(fs, path).num_rows == 7
        monkeypatch.setattr(fs, "open", Flaky(fs.open, 2, OSError("(SlowDown) please reduce")))
        assert scan_input(fs, [path], 2).images == 14  # a retried scan counts each row once
        monkeypatch.setattr(fs, "open", Flaky(fs.open, 1, TimeoutError("timed out")))
        assert read_rows(fs, path, 2, 5).num_rows == 3
        monkeypatch.setattr(fs, "open", Flaky(fs.open, 99, OSError("(503) Service Unavailable")))
        with pytest.raises(retry.StorageError) as e:
            read_footer(fs, path)
        assert not isinstance(e.value, InputError) and "in.parquet" in str(e.value)
    finally:
        retry.configure(retry.Policy())


def test_retry_section_defaults_and_fingerprint(tmp_path):
    base = {"input": "i", "output": "o"}
    cfg = from_dict(base)
    assert (cfg.retry.attempts, cfg.retry.base_s, cfg.retry.max_s) == (5, 0.2, 10.0)
    assert from_dict({**base, "retry": {"attempts": 1}}).fingerprint() == cfg.fingerprint()
