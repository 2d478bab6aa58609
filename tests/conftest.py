"""Shared fixtures: tiny job configs, prompt files, a session Ray cluster, an S3 server on loopback."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow square", "a photo of a doctor",
           "a photo of a nurse", "an x mark"]


def write_prompts(path, prompts=PROMPTS, **columns) -> str:
    """A prompt Parquet file with optional extra columns (row groups of 3 to exercise range reads)."""
    data = {"prompt": list(prompts), **{k: list(v) for k, v in columns.items()}}
    pq.write_table(pa.table(data), str(path), row_group_size=3)
    return str(path)


def tiny_config(input_path, output, **sections) -> dict:
    """A small, fast job: tiny model, 64x64, 3 steps, inline executor unless told otherwise."""
    cfg = {
        "input": str(input_path), "output": str(output), "model": "tiny",
        "generation": {"width": 64, "height": 64, "steps": 3, "images_per_prompt": 2, "batch_size": 3},
        "shards": {"rows_per_shard": 3},
        "ray": {"executor": "inline"},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


def write_job(path, cfg: dict) -> str:
    """The one way tests write a job YAML: ``cfg`` (e.g. from tiny_config) dumped to ``path``."""
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return str(path)


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def read_output(output) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    df = pd.read_parquet(os.path.join(str(output), "data"))
    assert_unique_keys(df)
    return df.sort_values(["prompt_id", "sample_idx"]).reset_index(drop=True)


def assert_unique_keys(df) -> None:
    """The output contract (README, section Prompt ids): (prompt_id, sample_idx) is unique and never null."""
    if not {"prompt_id", "sample_idx"} <= set(df.columns):
        return  # a column subset read by a test
    assert df["prompt_id"].notna().all(), "null prompt_id in the output"
    dup = df[df.duplicated(["prompt_id", "sample_idx"], keep=False)]
    assert dup.empty, f"duplicate (prompt_id, sample_idx) keys: {dup[['prompt_id', 'sample_idx']].values.tolist()[:5]}"


def tree_bytes(root) -> dict:
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


@pytest.fixture
def prompts_file(tmp_path):
    return write_prompts(tmp_path / "prompts.parquet", group=["a", "b", "c", "a", "b", "c", "a"])


@pytest.fixture
def ray_cluster():
    """One local Ray shared by the tests that use it (starting one costs ~5 s): jobs join it instead
    of starting their own. Started on first use, and again if a test (tests/cluster/ brings its own
    clusters) shut it down meanwhile; stopped at the end of the session."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}})
    yield ray


def pytest_sessionfinish(session, exitstatus):
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (as s3fs's own tests do); yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    proc.terminate()
    proc.wait(10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
