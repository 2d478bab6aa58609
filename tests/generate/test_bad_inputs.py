"""Bad inputs and configs: each is a clear error raised before any model loads (naming file, row,
column and value), and nothing already committed is lost."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config, tree_bytes, write_prompts

import pipeline
from pipeline.core.config import ConfigError
from pipeline.core.storage import OutputError
from pipeline.generate.inputs import InputError
from pipeline.generate.models import ModelError
from pipeline.probes.scorer import ScorerError


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Validation must finish before any worker exists: building one (inline or as a Ray actor pool)
    fails the test, whichever model or scorer it would have loaded."""

    def boom(*a, **k):
        raise AssertionError("a worker was started before validation finished")

    monkeypatch.setattr("pipeline.generate.worker.ShardWorker.__init__", boom)
    monkeypatch.setattr("pipeline.generate.ray_pool.ActorPool.__enter__", boom)


def run(cfg, *overrides):
    return pipeline.run(cfg, list(overrides), progress=False)


def table_file(tmp_path, **cols):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table(cols), path)
    return str(path)


CASES = {  # name -> (columns of the input table, config overrides, error type, message fragments)
    "missing prompt column": ({"text": ["a"]}, [], InputError, ["has no 'prompt' column", "in.parquet"]),
    "prompt wrong type": ({"prompt": [1, 2]}, [], InputError, ["'prompt' must be strings", "int64"]),
    "null prompt": ({"prompt": ["a", None]}, [], InputError, ["row 1 column 'prompt'", "None"]),
    "prompt_id null": (
        {"prompt": ["a", "b"], "prompt_id": ["x", None]},
        [],
        InputError,
        ["row 1 column 'prompt_id'"],
    ),
    "row width not /8": ({"prompt": ["a"], "width": [65]}, [], InputError, ["row 0 column 'width'", "65"]),
    "row negative images_per_prompt": (
        {"prompt": ["a", "b"], "images_per_prompt": [1, -2]},
        [],
        InputError,
        ["row 1 column 'images_per_prompt'", "-2"],
    ),
    "row NaN guidance": (
        {"prompt": ["a"], "guidance_scale": [float("nan")]},
        [],
        InputError,
        ["column 'guidance_scale'", "nan"],
    ),
    "row negative seed": ({"prompt": ["a"], "seed": [-5]}, [], InputError, ["column 'seed'", "-5"]),
    "override wrong type": ({"prompt": ["a"], "steps": ["ten"]}, [], InputError, ["'steps' has type string"]),
    "passthrough collides": ({"prompt": ["a"], "status": ["x"]}, [], InputError, ["['status']", "rename"]),
    "config width not /8": (
        {"prompt": ["a"]},
        ["generation.width=100"],
        ConfigError,
        ["generation.width", "100"],
    ),
    "config negative ipp": (
        {"prompt": ["a"]},
        ["generation.images_per_prompt=-1"],
        ConfigError,
        ["images_per_prompt", "-1"],
    ),
    "config NaN guidance": (
        {"prompt": ["a"]},
        ["generation.guidance_scale=.nan"],
        ConfigError,
        ["guidance_scale"],
    ),
    "unknown scheduler": ({"prompt": ["a"]}, ["generation.scheduler=heun"], ConfigError, ["'heun'"]),
    "unknown config key": (
        {"prompt": ["a"]},
        ["generation.sampler=ddim"],
        ConfigError,
        ["generation.sampler: unknown key"],
    ),
    "duplicates with policy error": (
        {"prompt": ["a", "a"]},
        ["shards.duplicates=error"],
        InputError,
        ["repeat an earlier prompt_id", "row 1"],
    ),
    "missing model dir": (
        {"prompt": ["a"]},
        ["model=./no/such/model"],
        ModelError,
        ["no such local directory"],
    ),
    "hub id offline": (
        {"prompt": ["a"]},
        ["model=someorg/some-model"],
        ModelError,
        ["HF_HUB_OFFLINE", "someorg"],
    ),
    "clip name without weights": (
        {"prompt": ["a"]},
        ["scoring.clip_model=ViT-B-32"],
        ScorerError,
        ["clip_weights", "ViT-B-32"],
    ),
    "unknown clip model": ({"prompt": ["a"]}, ["scoring.clip_model=ViT-Q-99"], ScorerError, ["'ViT-Q-99'"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_a_clear_early_error(tmp_path, name):
    monkey_env = os.environ.get("HF_HUB_OFFLINE")
    assert monkey_env == "1"
    cols, overrides, err, fragments = CASES[name]
    cfg = tiny_config(table_file(tmp_path, **cols), tmp_path / "out")
    with pytest.raises(err) as e:
        run(cfg, *overrides)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))
    assert not (tmp_path / "out" / "run.json").exists()  # failed before any work was started


def test_empty_file(tmp_path):
    (tmp_path / "in.parquet").write_bytes(b"")
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        run(tiny_config(tmp_path / "in.parquet", tmp_path / "out"))


def test_not_parquet(tmp_path):
    (tmp_path / "in.parquet").write_text("prompt\na red circle\n")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        run(tiny_config(tmp_path / "in.parquet", tmp_path / "out"))


def test_zero_rows(tmp_path):
    path = table_file(tmp_path, prompt=pa.array([], pa.string()))
    with pytest.raises(InputError, match="has no rows"):
        run(tiny_config(path, tmp_path / "out"))


def test_missing_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        run(tiny_config(tmp_path / "nope.parquet", tmp_path / "out"))


def test_error_lists_every_bad_row_up_to_a_limit(tmp_path):
    path = table_file(tmp_path, prompt=["ok"] + [None] * 30)
    with pytest.raises(InputError) as e:
        run(tiny_config(path, tmp_path / "out"))
    assert "30 input row(s) are invalid" in str(e.value) and "and 10 more" in str(e.value)


def test_output_holding_another_config_is_refused_and_kept(tmp_path, monkeypatch):
    monkeypatch.undo()  # this one needs to generate
    src = write_prompts(tmp_path / "p.parquet", ["a", "b"])
    cfg = tiny_config(src, tmp_path / "out")
    run(cfg)
    before = tree_bytes(tmp_path / "out")
    with pytest.raises(OutputError, match=r"generation.steps \(3 -> 5\)"):
        run(cfg, "generation.steps=5")
    assert tree_bytes(tmp_path / "out") == before
