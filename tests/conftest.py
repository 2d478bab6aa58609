"""Shared fixtures: tiny job configs, prompt files, a session Ray cluster, an S3 server on loopback."""

from __future__ import annotations

import io
import os
import pathlib
import signal
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

# Reproducible randomness. Under CI (the CI variable set, as .ci/run's runner does) hypothesis draws the
# same examples every run (derandomize: a seed derived from each test's name; no example database), with
# the example budget each test states; elsewhere it explores randomly and keeps its database. Loaded here,
# before any test module builds its settings objects, so theirs inherit the profile.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
_hyp_settings.register_profile("dev", print_blob=True)
_hyp_settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The seed of the global RNGs (random, numpy, torch) each test starts from: fixed under CI, else drawn
# anew per session unless SDGEN_TEST_SEED pins it. Printed, so a failure shows how to rerun it.
TEST_SEED = int(
    os.environ.get("SDGEN_TEST_SEED")
    or (20261206 if os.environ.get("CI") else int.from_bytes(os.urandom(4), "little"))
)

PROMPTS = [
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow square",
    "a photo of a doctor",
    "a photo of a nurse",
    "an x mark",
]


def write_prompts(path, prompts=PROMPTS, **columns) -> str:
    """A prompt Parquet file with optional extra columns (row groups of 3 to exercise range reads)."""
    data = {"prompt": list(prompts), **{k: list(v) for k, v in columns.items()}}
    pq.write_table(pa.table(data), str(path), row_group_size=3)
    return str(path)


def tiny_config(input_path, output, **sections) -> dict:
    """A small, fast job: tiny model, 64x64, 3 steps, inline executor unless told otherwise."""
    cfg = {
        "input": str(input_path),
        "output": str(output),
        "model": "tiny",
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


def committed_markers(output) -> int:
    """Committed shard markers of an output (a kill mid-write leaves a .tmp-* file beside them)."""
    commits = pathlib.Path(output) / "_commits"
    return len([f for f in os.listdir(commits) if f.endswith(".json")]) if commits.exists() else 0


def kill_after_markers(proc, output, n: int, limit_s: float = 240) -> int:
    """SIGKILL `proc` once `n` shards of `output` are committed (or it ended); returns how many were."""
    deadline = time.time() + limit_s
    while time.time() < deadline and committed_markers(output) < n and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return committed_markers(output)


def decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def read_output(output) -> "pandas.DataFrame":  # noqa: F821
    import pandas as pd

    df = pd.read_parquet(os.path.join(str(output), "data"))
    assert_unique_keys(df)
    return df.sort_values(["prompt_id", "sample_idx"]).reset_index(drop=True)


def assert_unique_keys(df) -> None:
    """The output contract (docs/OUTPUT.md, section Prompt ids): (prompt_id, sample_idx) is unique and never
    null."""
    if not {"prompt_id", "sample_idx"} <= set(df.columns):
        return  # a column subset read by a test
    assert df["prompt_id"].notna().all(), "null prompt_id in the output"
    dup = df[df.duplicated(["prompt_id", "sample_idx"], keep=False)]
    assert dup.empty, (
        f"duplicate (prompt_id, sample_idx) keys: {dup[['prompt_id', 'sample_idx']].values.tolist()[:5]}"
    )


def tree_bytes(root) -> dict:
    """{relative path: bytes} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            out[os.path.relpath(p, root)] = open(p, "rb").read()
    return out


def pytest_report_header(config):
    return (
        f"sdgen test seed: {TEST_SEED} (rerun with SDGEN_TEST_SEED={TEST_SEED}); hypothesis profile: "
        f"{_hyp_settings.get_current_profile_name()}"
    )


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Every test starts its global RNGs from TEST_SEED, so one that draws unseeded numbers (torch.randint
    with no generator, say) draws the same ones on every CI run; the seed is in the report header and in a
    failing test's captured output."""
    import random

    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(TEST_SEED)
    print(f"sdgen test seed: {TEST_SEED}")
    yield


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
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
    yield ray


def pytest_sessionfinish(session, exitstatus):
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def wait_for_port(port: int, proc: subprocess.Popen, what: str, limit_s: float = 300) -> None:
    """Wait until ``proc`` accepts connections on ``port`` (the event), failing at once if it exits first;
    ``limit_s`` only bounds a server that hangs (a loaded CI machine starts moto in seconds, not minutes)."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {proc.returncode} before listening on port {port}"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on port {port} within {limit_s:.0f} s") from None
            time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (as s3fs's own tests do); yields its endpoint URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for_port(port, proc, "moto.server")
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    yield endpoint
    proc.terminate()
    proc.wait(10)
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
