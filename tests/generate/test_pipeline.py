"""End to end on the tiny model, inline executor (Ray has its own tests in test_ray.py)."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import PROMPTS, decode, read_output, tiny_config, tree_bytes, write_prompts

import pipeline
from pipeline.generate.seeds import sample_seed


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    src = write_prompts(
        tmp / "prompts.parquet",
        group=["a", "b", "c", "a", "b", "c", "a"],
        score=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5],
    )
    cfg = tiny_config(src, tmp / "out")
    summary = pipeline.run(cfg, progress=False)
    return cfg, summary, tmp / "out"


def test_rows_ids_images_scores_passthrough(finished):
    cfg, summary, out = finished
    df = read_output(out)
    assert len(df) == len(PROMPTS) * 2 == summary["rows_total"]
    assert not df.duplicated(["prompt_id", "sample_idx"]).any()
    assert (df.status == "ok").all() and df.error.isna().all()
    for png in df.image:
        assert decode(png["bytes"]).shape == (64, 64, 3)
    assert np.isfinite(df.clip_score).all() and np.isfinite(df.clip_cos).all()
    assert np.allclose(df.clip_score, 2.5 * np.maximum(df.clip_cos, 0), atol=1e-6)
    by_prompt = df.groupby("prompt").first()
    assert by_prompt.loc["a blue square", "group"] == "b" and by_prompt.loc["an x mark", "score"] == 6.5
    for r in df.itertuples():
        assert r.seed == sample_seed(0, r.prompt_id, r.sample_idx)
    assert os.path.exists(out / "_SUCCESS") and summary["complete"]


def test_rerun_changes_no_byte(finished):
    cfg, _, out = finished
    before = tree_bytes(out)
    summary = pipeline.run(cfg, progress=False)
    assert summary["committed_this_run"] == 0 and summary["complete"]
    assert tree_bytes(out) == before


def test_resume_redoes_only_missing_shards(finished, tmp_path):
    cfg, _, out = finished
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    victim = sorted(os.listdir(copy / "_commits"))[1]
    os.remove(copy / "_commits" / victim)  # as if the run died between publish and commit
    cfg2 = {**cfg, "output": str(copy)}
    summary = pipeline.run(cfg2, progress=False)
    assert summary["committed_this_run"] == 1 and summary["committed_shards"] == 2
    a, b = read_output(out), read_output(copy)
    assert [x["bytes"] for x in a.image] == [x["bytes"] for x in b.image]


def test_loads_with_datasets_pandas_and_arrow(finished):
    _, _, out = finished
    import datasets

    d = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    assert len(d) == 14 and d.features["image"].__class__.__name__ == "Image"
    assert d[0]["image"].size == (64, 64)
    assert ds.dataset(str(out / "data"), format="parquet").count_rows() == 14
    meta = pq.ParquetFile(next((out / "data").glob("*.parquet"))).metadata
    assert meta.num_row_groups >= 1 and meta.row_group(0).num_rows <= 32


def test_per_row_overrides_and_negative_prompts(tmp_path):
    src = write_prompts(
        tmp_path / "p.parquet",
        ["a", "b", "c"],
        width=[64, 32, None],
        height=[64, 64, None],
        steps=[2, 3, None],
        images_per_prompt=[1, 3, None],
        seed=[None, 1000, None],
        negative_prompt=["blurry", None, None],
        guidance_scale=[1.0, None, 2.0],
    )
    summary = pipeline.run(tiny_config(src, tmp_path / "o"), progress=False)
    df = read_output(tmp_path / "o")
    assert len(df) == 1 + 3 + 2 == summary["rows_total"]
    b = df[df.prompt == "b"]
    assert list(b.seed) == [1000, 1001, 1002] and set(b.width) == {32} and set(b.steps) == {3}
    assert decode(b.image.iloc[0]["bytes"]).shape == (64, 32, 3)
    a = df[df.prompt == "a"].iloc[0]
    assert a.negative_prompt == "blurry" and a.guidance_scale == 1.0 and a.steps == 2
    assert set(df[df.prompt == "c"].guidance_scale) == {2.0}
    fields = pq.read_schema(next((tmp_path / "o" / "data").glob("*.parquet")))
    names = [f.name for f in fields]  # consumed as an override, not duplicated as a passthrough column
    assert names.count("width") == 1 and fields.field("width").type == pa.int32()


def test_invalid_rows_marked_when_asked(tmp_path):
    src = write_prompts(tmp_path / "p.parquet", ["ok one", None, "ok two"], width=[64, 64, 60])
    cfg = tiny_config(src, tmp_path / "o", shards={"on_invalid_row": "mark"})
    summary = pipeline.run(cfg, progress=False)
    df = read_output(tmp_path / "o")
    assert summary["status_counts"]["invalid"] == 2 and summary["status_counts"]["ok"] == 2
    bad = df[df.status == "invalid"]
    assert bad.image.isna().all() and bad.error.str.contains("row 2 column 'width'").any()


def test_duplicate_prompts_numbered(tmp_path):
    src = write_prompts(tmp_path / "p.parquet", ["same", "same", "other"])
    summary = pipeline.run(tiny_config(src, tmp_path / "o"), progress=False)
    df = read_output(tmp_path / "o")
    assert len(df) == 6 and summary["duplicate_ids"] == 1
    ids = sorted(df.prompt_id.unique())
    assert any(i.endswith("~1") for i in ids) and not df.duplicated(["prompt_id", "sample_idx"]).any()


def test_failing_shard_is_retried_then_reported_and_committed_work_kept(tmp_path, monkeypatch, capsys):
    import yaml

    from pipeline.cli import main
    from pipeline.generate.worker import ShardWorker

    src = write_prompts(tmp_path / "p.parquet", ["a", "b", "c", "d", "e", "f"])
    cfg = tiny_config(src, tmp_path / "o", ray={"executor": "inline", "max_shard_tries": 2})
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(cfg))
    real, tries = ShardWorker.process, []

    def flaky(self, shard, attempt=1):
        if shard.start == 3:  # the second shard always fails
            tries.append(attempt)
            raise RuntimeError("disk on fire")
        return real(self, shard, attempt)

    monkeypatch.setattr(ShardWorker, "process", flaky)
    assert main(["run", str(tmp_path / "job.yaml"), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert tries == [1, 2] and "FAILED" in out and "disk on fire" in out and "complete    no" in out
    assert len(os.listdir(tmp_path / "o" / "_commits")) == 1 and not (tmp_path / "o" / "_SUCCESS").exists()
    monkeypatch.undo()
    assert main(["run", str(tmp_path / "job.yaml"), "--no-progress"]) == 0
    assert len(read_output(tmp_path / "o")) == 12 and (tmp_path / "o" / "_SUCCESS").exists()
