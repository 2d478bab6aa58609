"""Classes 3, 5, 6, 7: clear errors with the right exit code, nothing left behind, small things."""

import json
import logging
import os
import stat
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config, write_job, write_prompts

import pipeline
from pipeline.cli import main
from pipeline.core.config import ConfigError, from_dict, load
from pipeline.generate.diffusion import shorten_truncation_warnings
from pipeline.generate.partwriter import image_path
from pipeline.probes.scorer import ScorerError, check_scorer_spec


def _job(tmp_path, output=None, **sections):
    inp = write_prompts(tmp_path / "in.parquet", ["a red circle", "a blue square"])
    return tiny_config(inp, output or tmp_path / "out", generation={"images_per_prompt": 1}, **sections)


def _cli(tmp_path, cfg, capsys, *args):
    rc = main(["run", write_job(tmp_path / "job.yaml", cfg), "--no-progress", *args])
    return rc, capsys.readouterr().err


def test_output_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    rc, err = _cli(tmp_path, _job(tmp_path), capsys)
    assert rc == 2 and "is a file, not a directory" in err and err.startswith("sdgen: error:")


def test_output_on_a_read_only_filesystem(tmp_path, capsys):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        rc, err = _cli(tmp_path, _job(tmp_path, mnt / "out"), capsys)
        assert rc == 2 and "read-only filesystem" in err and str(mnt) in err
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_corrupt_data_pages_name_the_file(tmp_path, capsys):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": [f"a long prompt number {i}" for i in range(2000)]}), path)
    raw = bytearray(path.read_bytes())
    raw[100 : len(raw) // 2] = b"\xff" * (len(raw) // 2 - 100)  # data pages only: the footer stays valid
    path.write_bytes(bytes(raw))
    cfg = tiny_config(path, tmp_path / "out")
    rc, err = _cli(tmp_path, cfg, capsys)
    assert rc == 2 and "in.parquet" in err and "cannot be decoded" in err


def test_pickle_clip_weights_are_refused(tmp_path):
    import torch

    weights = tmp_path / "clip.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(ScorerError, match="not a safetensors file"):
        check_scorer_spec("ViT-B-32", str(weights))
    d = tmp_path / "clipdir"
    d.mkdir()
    (d / "open_clip_pytorch_model.bin").write_bytes(weights.read_bytes())
    with pytest.raises(ScorerError, match="only pickle weights"):
        check_scorer_spec(f"local-dir:{d}", None)


def test_failed_start_does_not_lock_the_output(tmp_path):
    cfg = _job(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"fingerprint": "0" * 64, "fingerprint_fields": {"model": "x"}}))
    with pytest.warns(UserWarning, match="no committed shard"):
        summary = pipeline.run(cfg, progress=False)
    assert (
        summary["complete"]
        and json.loads((out / "run.json").read_text())["fingerprint"] == summary["fingerprint"]
    )
    # committed work does lock it
    with pytest.raises(Exception, match="different config"):
        pipeline.run({**cfg, "generation": {**cfg["generation"], "seed": 5}}, progress=False)


def test_files_follow_the_umask_and_no_tmp_left(tmp_path):
    old = os.umask(0o022)
    try:
        pipeline.run(_job(tmp_path), progress=False)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    for p in [out / "run.json", out / "_SUCCESS", *(out / "_commits").iterdir()]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p
    assert not [f for d, _, fs in os.walk(out) for f in fs if f.startswith(".tmp-")]


def test_secret_values_are_never_echoed():
    for raw in (
        {"storage": {"secret_key": "hunter2"}},
        {"storage": {"api_token": "hunter2"}},
        {"storage": {"secret": 12345}},
    ):
        with pytest.raises(ConfigError) as e:
            from_dict({"input": "i", "output": "o", **raw})
        assert "hunter2" not in str(e.value) and "12345" not in str(e.value) and "hidden" in str(e.value)


def test_value_echoed_once():
    with pytest.raises(ConfigError) as e:
        from_dict({"input": "i", "output": "o", "generation": {"width": 65}})
    assert str(e.value).count("65") == 1, str(e.value)


def test_image_path_is_a_safe_relative_name():
    assert image_path("abc", 0) == "abc_0.png" and image_path("doctor 1", 2) == "doctor 1_2.png"
    for pid in ("../../escape", "/etc/passwd", ".hidden", "a\\b", "c:x", ""):
        p = image_path(pid, 0)
        assert "/" not in p and "\\" not in p and not p.startswith(".") and ":" not in p, p
    assert image_path("a/b", 0) != image_path("a_b", 0)


def test_truncation_warning_is_short(caplog):
    shorten_truncation_warnings("h_test.pipeline")
    with caplog.at_level(logging.WARNING, "h_test.pipeline"):
        logging.getLogger("h_test.pipeline").warning(
            "The following part of your input was truncated because CLIP can only handle sequences up to"
            f" 77 tokens: {['word ' * 2000]}"
        )
    assert len(caplog.records[0].getMessage()) < 300 and "chars)" in caplog.records[0].getMessage()


def test_status_into_a_closed_pipe(tmp_path):
    pipeline.run(_job(tmp_path), progress=False)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "status", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    p.stdout.close()  # `| head` that has already left
    err = p.stderr.read().decode()
    assert p.wait(60) == 0 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    sub = tmp_path / "jobs"
    sub.mkdir()
    write_prompts(sub / "p.parquet", ["a"])
    write_job(sub / "job.yaml", {"input": "p.parquet", "output": "../out", "model": "tiny"})
    monkeypatch.chdir("/")
    cfg = load(sub / "job.yaml", ["output=rel_from_cwd"])
    assert os.path.samefile(cfg.input, sub / "p.parquet") and cfg.output == "rel_from_cwd"
    assert os.path.abspath(load(sub / "job.yaml").output) == str(tmp_path / "out")


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"sdgen {pipeline.__version__}"
