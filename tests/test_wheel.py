"""The installable wheel: built from this checkout, installed into a fresh virtual environment, and
run with the default toy model from a directory outside the checkout. Catches package data that a
source checkout has and an installation lacks (the toy weights, the shipped YAML)."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import write_job, write_prompts

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    dist, src = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("src") / "sdgen"
    # build from a copy of the tracked files: no build/ left in the checkout, no stale file in the wheel
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    # --no-build-isolation: the test venv's setuptools; nothing is downloaded
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ]
    )
    (whl,) = dist.glob("sdgen-*.whl")
    return whl


def test_wheel_holds_the_toy_weights_and_every_shipped_yaml(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in (
        "pipeline/toyworld/weights/sd/unet/diffusion_pytorch_model.safetensors",
        "pipeline/toyworld/weights/sd/model_index.json",
        "pipeline/toyworld/weights/clip/open_clip_model.safetensors",
        "pipeline/toyworld/weights/sd/tokenizer/merges.txt",
    ):
        assert rel in names, f"{rel} missing from {wheel.name}"
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline" / "data").rglob("*.yaml")}
    assert shipped and shipped <= names, sorted(shipped - names)
    templates = {str(p.relative_to(ROOT)) for p in (ROOT / "pipeline" / "pages" / "templates").iterdir()}
    assert templates and templates <= names, sorted(templates - names)  # the pages' jinja templates
    assert not any(n.startswith("tests/") for n in names)


def test_installed_wheel_runs_the_toy_model_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # dependencies (torch, diffusers, ...) come from the test venv's site-packages, added after the
    # new venv's own; sdgen itself only from the wheel (a .pth line does not run the editable finder)
    Path(site, "_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    work = tmp_path / "elsewhere"
    work.mkdir()
    write_prompts(work / "p.parquet", ["a red circle", "a blue square"], shape=["circle", "square"])
    write_job(
        work / "job.yaml",
        {
            "input": str(work / "p.parquet"),
            "output": str(work / "out"),
            "model": "toy",
            "generation": {"images_per_prompt": 1, "steps": 4},
            "ray": {"executor": "inline"},
        },
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    where = _run(
        [str(py), "-c", "import pipeline, pipeline.toyworld as t; print(pipeline.__file__, t.SD_DIR)"],
        cwd=work,
        env=env,
    ).stdout
    assert str(ROOT) not in where and str(venv) in where  # the installed copy, not this checkout
    version = _run([str(venv / "bin" / "sdgen"), "--version"], cwd=work, env=env).stdout
    assert version.strip() == f"sdgen {_version()}"
    _run([str(venv / "bin" / "sdgen"), "run", "job.yaml", "--no-progress"], cwd=work, env=env)
    assert (work / "out" / "_SUCCESS").exists()
    import pandas as pd

    df = pd.read_parquet(work / "out" / "data")
    assert len(df) == 2 and (df.status == "ok").all() and set(df.model) == {"toy"}
    # the report page's templates (page, CSS, script) load from the installed package
    _run([str(venv / "bin" / "sdgen"), "report", "out", "-o", "r.html"], cwd=work, env=env)
    page = (work / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>\nbody{" in page and "data-images-ok" in page


def _version() -> str:
    import pipeline

    return pipeline.__version__
