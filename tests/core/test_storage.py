import json
import os

import pytest

from pipeline.core.storage import Output, OutputError


def test_publish_then_commit_and_validity(tmp_path):
    out = Output(str(tmp_path / "o"))
    spool = out.spool_path("s1")
    open(spool, "wb").write(b"part-bytes")
    digest, size = out.publish_part(spool, "s1")
    assert not os.path.exists(spool) and size == 10
    assert os.listdir(tmp_path / "o" / "data") == ["part-s1.parquet"]
    assert out.committed_markers() == {}  # published but not committed: not done
    out.commit("s1", {"rows": 1, "sha256": digest, "size": size})
    marker = out.committed_markers()["s1"]
    assert out.marker_valid(marker)
    open(out.part_path("s1"), "wb").write(b"part-BYTES")  # same size, other bytes
    assert out.marker_valid(marker, "size") and not out.marker_valid(marker, "sha256")
    os.remove(out.part_path("s1"))
    assert not out.marker_valid(marker, "size")


def test_run_json_fingerprint_guard(tmp_path):
    out = Output(str(tmp_path / "o"))
    info = {"fingerprint": "aaa", "fingerprint_fields": {"generation": {"steps": 3}}}
    assert out.check_or_write_run(info) is True
    assert out.check_or_write_run(info) is False
    with pytest.raises(OutputError, match=r"generation.steps \(3 -> 9\)"):
        out.check_or_write_run({"fingerprint": "bbb", "fingerprint_fields": {"generation": {"steps": 9}}})


def test_atomic_small_writes_leave_no_temp_files(tmp_path):
    out = Output(str(tmp_path / "o"))
    out.write_json(out.path("_commits", "x.json"), {"shard": "x", "rows": 0})
    assert os.listdir(tmp_path / "o" / "_commits") == ["x.json"]
    assert json.loads(open(tmp_path / "o" / "_commits" / "x.json").read())["shard"] == "x"
