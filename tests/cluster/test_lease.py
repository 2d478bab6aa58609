"""The output's lease (_lock) and run history (_runs/): two runs at once (one works, one exits 3 and
does nothing), stale leases taken over, renewal, the history's contents; the lease on S3 (moto)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import read_output, tiny_config, write_prompts

import pipeline
from pipeline.cli import main as sdgen_main
from pipeline.core.lease import LEASE_EXIT_CODE, Lease, LeaseHeld, read_history
from pipeline.core.storage import Output


def _runs(out) -> list[str]:
    d = out / "_runs"
    return sorted(os.listdir(d)) if d.exists() else []


def test_two_runs_at_once_one_works_one_exits_3(tmp_path, capsys):
    src = write_prompts(tmp_path / "p.parquet")
    out = tmp_path / "out"
    cfg = tiny_config(src, out, shards={"rows_per_shard": 1}, generation={"steps": 6, "images_per_prompt": 3})
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(cfg))
    a = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "_lock").exists() and a.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert (out / "_lock").exists(), "the first run never took the lease"
    holder = json.loads((out / "_lock").read_text())
    code = sdgen_main(["run", str(job), "--no-progress"])  # the overlapping run, while A works
    err = capsys.readouterr().err
    assert a.poll() is None, "the first run ended before the second started: inconclusive"
    assert code == LEASE_EXIT_CODE == 3
    assert "another run holds the lease" in err and holder["run_id"][:12] in err and "nothing done" in err
    assert err.count("\n") == 1  # one line
    assert json.loads((out / "_lock").read_text())["run_id"] == holder["run_id"]  # A's lease untouched
    stdout, stderr = a.communicate(timeout=300)
    assert a.returncode == 0, stderr[-3000:]
    assert not (out / "_lock").exists()  # released
    assert len(_runs(out)) == 1 and len(read_output(out)) == 7 * 3  # one record: B did no work
    assert read_history(Output(str(out)))[0]["run_id"] == holder["run_id"]


def _stale(out, **rec) -> None:
    out.mkdir(parents=True, exist_ok=True)
    base = {"run_id": "f" * 32, "host": "elsewhere", "pid": 1, "acquired": 0, "expires": time.time() + 600}
    (out / "_lock").write_text(json.dumps({**base, **rec}))


@pytest.mark.parametrize("kind", ["expired", "dead-pid"])
def test_a_stale_lease_is_taken_over_and_said_so(tmp_path, capsys, kind):
    import socket

    src = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    out = tmp_path / "out"
    if kind == "expired":
        _stale(out, expires=time.time() - 5)
    else:  # same host, a process that has exited
        p = subprocess.Popen([sys.executable, "-c", "pass"])
        p.wait()
        _stale(out, host=socket.gethostname(), pid=p.pid)
    summary = pipeline.run(tiny_config(src, out), progress=False)
    err = capsys.readouterr().err
    assert summary["complete"] and summary["rows_this_run"] == 4
    assert "took over the stale lease of run ffffffffffff" in err
    assert ("expired at" if kind == "expired" else "is gone") in err
    (rec,) = read_history(Output(str(out)))
    assert rec["took_over_lease"]["run_id"] == "f" * 32
    assert not (out / "_lock").exists() and not [f for f in os.listdir(out) if f.startswith("_lock")]


def test_a_live_lease_of_another_host_is_respected(tmp_path):
    src = write_prompts(tmp_path / "p.parquet", ["a red circle"])
    out = tmp_path / "out"
    _stale(out)  # another host, expires in 10 minutes
    with pytest.raises(LeaseHeld, match="host elsewhere"):
        pipeline.run(tiny_config(src, out), progress=False)
    assert sorted(os.listdir(out)) == ["_lock"]  # no run.json, no parts, no history


def test_history_records_each_run_that_did_work(tmp_path):
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    write_prompts(src_dir / "a.parquet")  # 7 rows -> shards of 3: 3 shards, 14 images
    out = tmp_path / "out"
    cfg = tiny_config(src_dir, out)
    first = pipeline.run(cfg, progress=False)
    (rec,) = read_history(Output(str(out)))
    run_json = json.loads((out / "run.json").read_text())
    assert rec["fingerprint"] == run_json["fingerprint"] == first["fingerprint"]
    assert (rec["new_shards"], rec["committed_shards"], rec["committed_rows"], rec["failed_shards"]) == (
        3,
        3,
        14,
        0,
    )
    assert rec["complete"] is True and rec["duration_s"] > 0 and rec["failed"] == {}
    assert rec["pid"] == os.getpid() and len(rec["run_id"]) == 32
    started = dt.datetime.fromisoformat(rec["started"])
    (name,) = _runs(out)  # _runs/<utc start, ms>Z-<run id>.json
    assert name.startswith(started.strftime("%Y%m%dT%H%M%S")) and name.endswith(f"Z-{rec['run_id'][:8]}.json")

    pipeline.run(cfg, progress=False)  # nothing new: no record
    assert len(_runs(out)) == 1
    write_prompts(src_dir / "b.parquet", ["a new prompt", "another new prompt"])
    pipeline.run(cfg, progress=False)
    hist = read_history(Output(str(out)))
    assert [(h["new_shards"], h["committed_rows"], h["rows_total"]) for h in hist] == [
        (3, 14, 14),
        (1, 4, 18),
    ]
    from pipeline.tools.status import output_status

    st = output_status(str(out))
    assert st["lease"] is None and [r["committed_rows"] for r in st["last_runs"]] == [14, 4]


def _until(cond, limit_s: float = 60.0):
    """Poll ``cond`` until it returns something truthy (returned), or fail after ``limit_s``."""
    deadline = time.monotonic() + limit_s
    while not (got := cond()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)
    return got


def test_renewal_extends_the_lease_and_notices_a_new_holder(tmp_path):
    out = Output(str(tmp_path / "o"))
    logs = []
    with Lease(out, ttl_s=0.3, log=logs.append) as lease:
        first = out.read_json(out.path("_lock"))
        # events, not sleeps: the renewal thread rewrites the lock, then notices the new holder (the
        # 60 s bounds only a renewal thread that never runs)
        later = _until(lambda: (lk := out.read_json(out.path("_lock")))["expires"] > first["expires"] and lk)
        assert later["run_id"] == lease.run_id
        out.write_json(out.path("_lock"), {**later, "run_id": "x" * 32, "expires": time.time() + 60})
        assert _until(lambda: lease.lost)
        assert any("now held by run xxxxxxxxxxxx" in m for m in logs)
    assert out.read_json(out.path("_lock"))["run_id"] == "x" * 32  # not ours: left in place


def test_only_one_of_two_takeovers_proceeds(tmp_path):
    out = Output(str(tmp_path / "o"))
    _stale(tmp_path / "o", expires=time.time() - 1)
    (tmp_path / "o" / ("_lock.takeover-" + "f" * 32)).write_text("{}")  # the other run got here first
    with pytest.raises(LeaseHeld, match="another run is taking over its stale lease"):
        Lease(out, ttl_s=60).acquire()


def test_lease_on_s3_is_exclusive(s3_server):
    import s3fs

    s3fs.S3FileSystem(endpoint_url=s3_server).mkdir("lease-bucket")
    from pipeline.core.config import StorageConfig

    out = Output("s3://lease-bucket/out", StorageConfig(endpoint_url=s3_server))
    with Lease(out, ttl_s=60) as held:
        assert out.read_json(out.path("_lock"))["run_id"] == held.run_id
        with pytest.raises(LeaseHeld):
            Lease(out, ttl_s=60).acquire()
    assert not out.exists(out.path("_lock"))


def test_scheduled_run_script_skips_cleanly_and_prints_the_trend(tmp_path):
    src = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    out = tmp_path / "out"
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(tiny_config(src, out)))
    script = [str(Path(__file__).resolve().parents[2] / "jobs" / "scheduled_run.sh"), str(job)]
    env = dict(os.environ, SDGEN_PYTHON=sys.executable, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    r = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (line,) = [x for x in r.stdout.splitlines() if x[:4].isdigit()]  # one run in the trend
    assert line.split()[2:5] == ["1", "1", "4"]  # 1 new shard, 1 committed, 4 rows
    _stale(out)  # a live lease of another host: the next run is skipped
    r = subprocess.run(script, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "scheduled_run: skipped" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "another run holds the lease" in r.stderr
    assert len(_runs(out)) == 1
