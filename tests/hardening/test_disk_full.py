"""Class 3/8: disk full during a run (a small tmpfs): committed shards kept, failed ones listed,
exit 1, summary written; after more space the re-run completes byte-identical to an uninterrupted
run, with no .tmp-* file anywhere (a dead run's stale one included)."""

import os
import subprocess
import time

import pytest
from conftest import read_output, tiny_config, tree_bytes, write_job, write_prompts

from pipeline.cli import main


def _mount(path, size):
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


@pytest.mark.slow
def test_disk_full_then_resume(tmp_path, capsys):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _mount(mnt, "200k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        inp = write_prompts(tmp_path / "in.parquet", [f"prompt {i}" for i in range(24)])
        cfg = tiny_config(inp, mnt / "out", write={"timing_columns": False, "contact_sheet": False})
        job = write_job(tmp_path / "job.yaml", cfg)
        assert main(["run", job, "--no-progress"]) == 1
        out = capsys.readouterr().out
        assert "No space left on device" in out and "FAILED" in out
        committed = os.listdir(mnt / "out" / "_commits")
        assert 0 < len(committed) < 8 and (mnt / "out" / "summary.json").exists()
        stale = mnt / "out" / ".tmp-dead-run"
        stale.write_bytes(b"x")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)
        assert main(["run", job, "--no-progress"]) == 0
        assert not [f for d, _, fs in os.walk(mnt / "out") for f in fs if f.startswith(".tmp-")]
        ref = tmp_path / "ref"
        assert (
            main(["run", write_job(tmp_path / "ref.yaml", {**cfg, "output": str(ref)}), "--no-progress"]) == 0
        )
        got, want = tree_bytes(mnt / "out" / "data"), tree_bytes(ref / "data")
        assert got == want and len(read_output(ref)) == 48
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
