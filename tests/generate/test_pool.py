"""The elastic pool's error paths: every actor failing to start is exit 2 with the cause, fast; a
cluster that never has room for a worker is exit 2 after ray.start_timeout_s, not an endless wait."""

import time

from conftest import tiny_config, write_prompts

from pipeline.cli import main


def _job(tmp_path, **ray) -> str:
    import yaml

    src = write_prompts(tmp_path / "p.parquet", ["a", "b", "c", "d"])
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tiny_config(src, tmp_path / "o", ray={"executor": "ray", **ray})))
    return str(path)


def test_every_worker_failing_to_start_is_exit_2(ray_cluster, tmp_path, capsys):
    # the actor's __init__ raises (as a model that fails to load would): no endless re-requesting
    env = {"env_vars": {"SDGEN_WORKER_CLASS": "pipeline.no_such_module:Worker"}}
    t = time.time()
    assert main(["run", _job(tmp_path, num_workers=2, runtime_env=env), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "every worker failed to start" in err and "no_such_module" in err, err
    assert "worker_start_failed" in err and time.time() - t < 60


def test_no_capacity_times_out_with_exit_2(ray_cluster, tmp_path, capsys):
    # address "auto": a cluster that might autoscale, so the pool waits, but only start_timeout_s
    job = _job(tmp_path, address="auto", num_cpus_per_worker=64, start_timeout_s=3)
    t = time.time()
    assert main(["run", job, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "0 of the 1 needed workers ready after ray.start_timeout_s=3 s" in err and "64" in err, err
    assert time.time() - t < 30


def test_live_progress_drops_counts_that_arrive_after_their_shard():
    """Per-batch counts reach the tally asynchronously: a count for a shard whose result is already in
    must not move the bar (it once read 80 of 64 images at the end of the demo)."""
    from pipeline.generate.ray_pool import LiveProgress

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    live = LiveProgress(bar)
    live.open("s1")
    live.add({"s1": 3})
    assert bar.n == 3
    live.done("s1")
    bar.update(4)  # the commit counts the shard's rows
    live.add({"s1": 1})  # its last batch, late
    assert bar.n == 4
    live.open("s1")  # re-queued after a failure: counts for the new attempt move the bar again
    live.add({"s1": 2})
    live.done("s1")
    assert bar.n == 4
