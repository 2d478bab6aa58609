"""Class 2 (bounded work): limits from config `limits` and the scheduler's training timesteps, checked
before any model loads with file, row, column and value named; `sdgen plan` counts pixel-steps."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config, write_job

import pipeline
from pipeline.cli import main
from pipeline.core.config import ConfigError, from_dict
from pipeline.generate.inputs import InputError
from pipeline.generate.models import train_timesteps


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a worker was started before validation finished")

    monkeypatch.setattr("pipeline.generate.worker.ShardWorker.__init__", boom)


def _input(tmp_path, **cols):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], **cols}), path)
    return path


@pytest.mark.parametrize(
    "cols, fragment",
    [
        (
            {"steps": [3, 5000, None]},
            "row 1 column 'steps': exceeds the scheduler's training timesteps (1000) (value 5000)",
        ),
        (
            {"width": [64, None, 100000]},
            "row 2 column 'width': exceeds limits.max_side (8192) (value 100000)",
        ),
        (
            {"width": [64, None, 128]},
            "row 2 column 'width': 8192 pixels exceed limits.max_pixels (4096) (value '128x64')",
        ),
        (
            {"images_per_prompt": [1, 1000000000, 1]},
            "row 1 column 'images_per_prompt': exceeds limits.max_images_per_prompt",
        ),
    ],
)
def test_row_beyond_a_limit_is_named(tmp_path, cols, fragment):
    cfg = tiny_config(
        _input(tmp_path, **cols), tmp_path / "out", limits={"max_pixels": 4096, "max_steps": 2000}
    )
    with pytest.raises(InputError) as e:
        pipeline.run(cfg, progress=False)
    assert fragment in str(e.value) and "in.parquet" in str(e.value)


def test_config_beyond_a_limit(tmp_path):
    base = tiny_config(_input(tmp_path), tmp_path / "out")
    with pytest.raises(ConfigError, match="generation.steps 20 exceeds limits.max_steps 10"):
        from_dict({**base, "limits": {"max_steps": 10}, "generation": {**base["generation"], "steps": 20}})
    with pytest.raises(ConfigError, match="training timesteps"):
        pipeline.run(
            {**base, "generation": {**base["generation"], "steps": 1001}, "limits": {"max_steps": 5000}},
            progress=False,
        )
    with pytest.raises(InputError, match=r"asks for 6 images, more than limits.max_images \(5\)"):
        pipeline.run({**base, "limits": {"max_images": 5}}, progress=False)


def test_train_timesteps_without_loading():
    assert train_timesteps("tiny") == 1000 and train_timesteps("toy") == 1000
    assert train_timesteps("some/hub-id") is None


def test_limits_do_not_change_the_fingerprint(tmp_path):
    base = tiny_config(_input(tmp_path), tmp_path / "out")
    assert from_dict(base).fingerprint() == from_dict({**base, "limits": {"max_steps": 50}}).fingerprint()


def test_plan_reports_pixel_steps_and_overrides(tmp_path, capsys):
    cfg = tiny_config(
        _input(tmp_path, images_per_prompt=[None, 3, None], steps=[None, None, 10]), tmp_path / "out"
    )
    assert main(["plan", write_job(tmp_path / "job.yaml", cfg)]) == 0
    out = capsys.readouterr().out
    # images: 2 + 3 + 2 = 7; pixel-steps: 64*64*(2*3 + 3*3 + 2*10) = 4096 * 35
    assert (
        "images                            7" in out
        and f"pixel_steps                       {4096 * 35}" in out
    )
    assert "1 row(s) set their own images_per_prompt" in out


def test_plan_without_prompt_column_exits_2(tmp_path, capsys):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": ["a"]}), path)
    assert main(["plan", write_job(tmp_path / "job.yaml", tiny_config(path, tmp_path / "out"))]) == 2
    assert "has no 'prompt' column" in capsys.readouterr().err
