"""jobs/submit.py against a real Ray head (`ray start --head` on 127.0.0.1, token auth on): a tiny
job succeeds and writes its rows, a bad config fails with sdgen's error line and exit code 2, a
client without the token is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import read_output, tiny_config, write_prompts
from ray_head import ROOT, RayHead

SUBMIT = str(ROOT / "jobs" / "submit.py")


@pytest.fixture(scope="module")
def head():
    h = RayHead.started(num_cpus=2)
    yield h
    h.stop()


def _submit(head, config: Path, *extra, token=True, timeout=300):
    cmd = [sys.executable, SUBMIT, str(config), "--address", head.address, *extra]
    return subprocess.run(cmd, env=head.client_env(token), capture_output=True, text=True, timeout=timeout)


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_tiny_job_succeeds_through_the_jobs_api(head, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.parquet", group=list("abcabca"))
    out = tmp_path / "out"
    # ray executor joining the job's cluster (address auto), with a runtime env of its own next to
    # the job's (--env): the merge that used to fail
    cfg = tiny_config(
        prompts,
        out,
        ray={
            "executor": "ray",
            "num_workers": 1,
            "runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        },
    )
    r = _submit(head, _write(tmp_path / "job.yaml", cfg), "--env", "HF_HUB_OFFLINE=1", "--wait")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert "SUCCEEDED (exit code 0)" in r.stdout, log[-4000:]
    assert "complete    yes" in r.stdout  # sdgen's summary, streamed from the job's logs
    df = read_output(out)
    assert len(df) == 7 * 2 and set(df["status"]) == {"ok"}
    assert sorted(df["group"].unique()) == ["a", "b", "c"]


def test_bad_config_fails_with_exit_code_2_and_the_error_in_the_logs(head, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.parquet")
    cfg = tiny_config(prompts, tmp_path / "out", generation={"stepz": 3})
    r = _submit(head, _write(tmp_path / "bad.yaml", cfg), "--wait")
    assert r.returncode == 2, (r.stdout + r.stderr)[-4000:]
    assert "sdgen: error: invalid config" in r.stdout and "generation.stepz: unknown key" in r.stdout
    assert "FAILED (exit code 2)" in r.stdout
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_client_without_the_token_is_refused(head, tmp_path):
    cfg = tiny_config(tmp_path / "p.parquet", tmp_path / "out")
    r = _submit(head, _write(tmp_path / "job.yaml", cfg), token=False, timeout=120)
    assert r.returncode == 1
    assert "could not submit" in r.stderr and "auth" in r.stderr.lower(), r.stderr[-2000:]


def test_token_file_option(head, tmp_path):
    token = tmp_path / "token"
    token.write_text(head.token)
    prompts = write_prompts(tmp_path / "prompts.parquet", prompts=["a red circle"])
    cfg = tiny_config(prompts, tmp_path / "out", generation={"images_per_prompt": 1})
    r = _submit(head, _write(tmp_path / "job.yaml", cfg), "--token-file", str(token), token=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert r.stdout.startswith("submitted raysubmit_")  # no --wait: submitted, not followed


def test_ray_job_submit_cli_as_documented(head, tmp_path):
    """The README's `ray job submit --working-dir DIR -- python -m pipeline.cli run job.yaml`."""
    prompts = write_prompts(tmp_path / "prompts.parquet", prompts=["a red circle", "a blue square"])
    wd = tmp_path / "wd"
    wd.mkdir()
    _write(wd / "job.yaml", tiny_config(prompts, tmp_path / "out", generation={"images_per_prompt": 1}))
    cmd = [
        str(Path(sys.executable).parent / "ray"),
        "job",
        "submit",
        "--address",
        head.address,
        "--working-dir",
        str(wd),
        "--",
        "python",
        "-m",
        "pipeline.cli",
        "run",
        "job.yaml",
        "--no-progress",
    ]
    r = subprocess.run(cmd, env=head.client_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "succeeded" in (r.stdout + r.stderr).lower()
    assert len(read_output(tmp_path / "out")) == 2


def test_joining_the_head_with_address_auto(head, tmp_path):
    """`sdgen run job.yaml --set ray.address=auto` from a node of the cluster (RAY_ADDRESS names the head)."""
    prompts = write_prompts(
        tmp_path / "prompts.parquet", prompts=["a red circle", "a blue square", "a square"]
    )
    job = _write(tmp_path / "job.yaml", tiny_config(prompts, tmp_path / "out", ray={"executor": "ray"}))
    env = dict(head.client_env(), RAY_ADDRESS=f"127.0.0.1:{head.gcs}")
    r = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(job), "--set", "ray.address=auto", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert f"Using address 127.0.0.1:{head.gcs}" in r.stderr and "Connected to Ray cluster" in r.stderr
    assert len(read_output(tmp_path / "out")) == 6


@pytest.mark.slow  # ~70 s on 2 shared cores: a worker is killed and replaced
def test_failed_shards_make_submit_exit_1(head, tmp_path):
    """A worker killed mid-shard with ray.max_shard_tries 1: the shard fails, the rest commit, the job
    ends FAILED with sdgen's exit code 1, and submit.py exits 1 too."""
    prompts = write_prompts(
        tmp_path / "prompts.parquet", prompts=["a red circle", "a blue square", "a square"]
    )
    out = tmp_path / "out"
    cfg = tiny_config(
        prompts,
        out,
        shards={"rows_per_shard": 1},
        generation={"batch_size": 1},
        ray={"executor": "ray", "max_shard_tries": 1},
    )
    flag = tmp_path / "killed-once"
    r = _submit(
        head,
        _write(tmp_path / "job.yaml", cfg),
        "--wait",
        "--env",
        "SDGEN_FAULT_KILL_AFTER_BATCHES=1",
        "--env",
        f"SDGEN_FAULT_ONCE_FILE={flag}",
    )
    assert flag.exists(), "the fault was never injected"
    assert r.returncode == 1, (r.stdout + r.stderr)[-3000:]
    assert "FAILED (exit code 1)" in r.stdout and "FAILED      " in r.stdout  # sdgen lists the failed shard
    assert len(read_output(out)) == 2 * 2  # the two other shards committed


def test_submit_helpers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("submit", SUBMIT)
    submit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(submit)
    assert submit.parse_env(["HF_HUB_OFFLINE=1", "A=b=c"]) == {"HF_HUB_OFFLINE": "1", "A": "b=c"}
    for bad in ("AWS_SECRET_ACCESS_KEY=x", "RAY_AUTH_TOKEN=x", "NOVALUE", "1BAD=x"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            submit.parse_env([bad])
    assert [
        submit.exit_code(s, c)
        for s, c in [
            ("SUCCEEDED", 0),
            ("FAILED", 2),
            ("FAILED", 1),
            ("FAILED", None),
            ("STOPPED", None),
            ("FAILED", 4),
        ]
    ] == [0, 2, 1, 1, 1, 4]
    args = submit.build_parser().parse_args(["job.yaml", "--set", "generation.steps=5"])
    from pipeline.cli import build_parser

    argv = submit.entrypoint(args).split()
    parsed = build_parser().parse_args(argv[3:])
    assert argv[:3] == ["python", "-m", "pipeline.cli"] and parsed.config == "job.yaml"
    assert parsed.set == ["generation.steps=5", "ray.address=auto"] and parsed.no_progress
