import hashlib
import json
import os

import pytest

from pipeline.core.storage import Output, OutputError


def test_commit_part_publishes_then_marks_and_validity(tmp_path):
    out = Output(str(tmp_path / "o"))
    spool = out.spool_path("s1")
    open(spool, "wb").write(b"part-bytes")
    marker = out.commit_part("s1", spool, {"rows": 1, "status_counts": {"ok": 1}})
    assert not os.path.exists(spool) and marker["size"] == 10 and marker["rows"] == 1
    assert marker["sha256"] == hashlib.sha256(b"part-bytes").hexdigest()
    assert os.listdir(tmp_path / "o" / "data") == ["part-s1.parquet"]
    assert out.committed_markers()["s1"] == marker and out.valid_commits() == {"s1": marker}
    open(out.part_path("s1"), "wb").write(b"part-BYTES")  # same size, other bytes
    assert out.marker_valid(marker, "size") and not out.marker_valid(marker, "sha256")
    assert out.valid_commits("size") == {"s1": marker} and out.valid_commits("sha256") == {}
    os.remove(out.part_path("s1"))
    assert not out.marker_valid(marker, "size") and out.valid_commits("size") == {}


def test_crash_between_publish_and_marker_is_not_a_commit(tmp_path, monkeypatch):
    """The part is published first; if the marker never lands, the shard is not committed."""
    out = Output(str(tmp_path / "o"))
    spool = out.spool_path("s1")
    open(spool, "wb").write(b"part-bytes")

    def die(*a):
        raise OSError("killed before the marker")

    monkeypatch.setattr(out, "_write_marker", die)
    with pytest.raises(OSError, match="killed"):
        out.commit_part("s1", spool, {"rows": 1})
    assert os.path.exists(out.part_path("s1")) and not os.path.exists(spool)
    assert out.committed_markers() == {} and out.valid_commits() == {}


def test_run_json_fingerprint_guard(tmp_path):
    out = Output(str(tmp_path / "o"))
    info = {"fingerprint": "aaa", "fingerprint_fields": {"generation": {"steps": 3}}}
    assert out.check_or_write_run(info) is True
    assert out.check_or_write_run(info) is False
    other = {"fingerprint": "bbb", "fingerprint_fields": {"generation": {"steps": 9}}}
    with pytest.warns(UserWarning, match="no committed shard"):  # nothing committed: not locked (class 5)
        assert out.check_or_write_run(other) is True
    out.write_json(out.marker_path("s"), {"shard": "s", "rows": 0})  # committed work locks it
    with pytest.raises(OutputError, match=r"generation.steps \(9 -> 3\)"):
        out.check_or_write_run(info)


def test_atomic_small_writes_leave_no_temp_files(tmp_path):
    out = Output(str(tmp_path / "o"))
    out.write_json(out.path("_commits", "x.json"), {"shard": "x", "rows": 0})
    assert os.listdir(tmp_path / "o" / "_commits") == ["x.json"]
    assert json.loads(open(tmp_path / "o" / "_commits" / "x.json").read())["shard"] == "x"


def test_spools_are_private_to_their_output_and_live_process(tmp_path):
    """Object-store spools share the local temp dir: two outputs' spools of one shard never touch (issue
    26: two runs of one config into two prefixes deleted each other's spools); a run's start removes only
    its output's spools whose process is gone; a new attempt of a shard removes its earlier spools."""
    import subprocess
    import sys
    import tempfile

    from pipeline.core.storage import remove_stale_temp

    a, b = Output("memory://sdgen-spool-a/out"), Output("memory://sdgen-spool-b/out")
    sa = a.spool_path("s1")
    open(sa, "wb").write(b"a")
    sb = b.spool_path("s1")  # the same shard name of another output
    open(sb, "wb").write(b"b")
    assert os.path.dirname(sa) == os.path.dirname(sb) == tempfile.gettempdir() and sa != sb
    assert (
        os.path.exists(sa)
        and a.spool_tag in os.path.basename(sa)
        and str(os.getpid()) in os.path.basename(sa)
    )
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()  # a pid whose process has ended
    ghost = os.path.join(tempfile.gettempdir(), f".tmp-part-{a.spool_tag}-{dead}-s1-0123abcd.parquet")
    alive = os.path.join(
        tempfile.gettempdir(), f".tmp-part-{a.spool_tag}-1-s1-0123abcd.parquet"
    )  # pid 1 lives
    for p in (ghost, alive):
        open(p, "wb").write(b"x")
    assert remove_stale_temp(a) == [ghost]  # a run's start: only this output's spools of a gone process
    assert os.path.exists(sa) and os.path.exists(alive) and os.path.exists(sb)
    # a new attempt of s1 (the driver gave up on the earlier ones): every earlier spool of s1 of this
    # output goes, whichever process wrote it; the other output's spool of s1 stays
    again = a.spool_path("s1")
    assert not os.path.exists(sa) and not os.path.exists(alive) and os.path.exists(sb)
    for p in (alive, sb, again):
        if os.path.exists(p):
            os.remove(p)
