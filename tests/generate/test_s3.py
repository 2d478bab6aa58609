"""Input, output and model on s3:// against moto's S3 server on 127.0.0.1."""

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import PROMPTS, decode, tiny_config

import pipeline
from pipeline.tools.status import output_status


@pytest.fixture
def s3(s3_server):
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    bucket = f"sdgen-test-{len(fs.ls('/'))}"
    fs.mkdir(bucket)
    return fs, bucket


def test_s3_input_and_output_resume_and_redaction(s3, s3_server):
    fs, bucket = s3
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": PROMPTS, "group": list("abcabca")}), buf)
    fs.pipe(f"{bucket}/prompts/part-0.parquet", buf.getvalue())
    storage = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    cfg = tiny_config(f"s3://{bucket}/prompts/", f"s3://{bucket}/out", storage=storage)
    summary = pipeline.run(cfg, progress=False)
    assert summary["complete"] and summary["rows_total"] == 14
    assert fs.exists(f"{bucket}/out/_SUCCESS")
    files = fs.glob(f"{bucket}/out/data/*.parquet")
    assert len(files) == 3 and not fs.glob(f"{bucket}/out/data/.tmp*")
    df = pd.concat(pd.read_parquet(fs.open(f)) for f in files)
    assert len(df) == 14 and set(df.group) == {"a", "b", "c"}
    assert decode(df.image.iloc[0]["bytes"]).shape == (64, 64, 3)
    run = json.loads(fs.cat(f"{bucket}/out/run.json"))
    assert run["config"]["storage"]["secret"] == "***" and "testing" not in json.dumps(run["config"])

    # a new input file under the same prefix: only its shard runs; old bytes untouched
    before = {f: fs.cat(f) for f in files}
    pq.write_table(pa.table({"prompt": ["a brand new prompt"], "group": ["d"]}), buf := io.BytesIO())
    fs.pipe(f"{bucket}/prompts/part-1.parquet", buf.getvalue())
    fs.invalidate_cache()
    again = pipeline.run(cfg, progress=False)
    assert again["committed_this_run"] == 1 and again["rows_total"] == 16
    assert all(fs.cat(f) == b for f, b in before.items())

    from pipeline.core.config import StorageConfig

    st = output_status(f"s3://{bucket}/out", StorageConfig(**storage))
    assert st["committed_shards"] == 4 and st["rows"] == 16 and st["success"]


def test_model_from_s3_url_is_cached_then_loaded(s3, s3_server, tmp_path, monkeypatch):
    fs, bucket = s3
    monkeypatch.setenv("SDGEN_CACHE", str(tmp_path / "cache"))
    from pipeline.core.config import StorageConfig
    from pipeline.generate.models import build_tiny_pipeline, fetch_url_to_cache, load_pipeline

    build_tiny_pipeline().save_pretrained(tmp_path / "tiny")
    fs.put(str(tmp_path / "tiny"), f"{bucket}/models/tiny", recursive=True)
    storage = StorageConfig(endpoint_url=s3_server)
    local = fetch_url_to_cache(f"s3://{bucket}/models/tiny", storage)
    assert (tmp_path / "cache").as_posix() in local
    import torch

    pipe = load_pipeline(f"s3://{bucket}/models/tiny", torch.float32, "cpu", storage=storage)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert fetch_url_to_cache(f"s3://{bucket}/models/tiny", storage) == local  # second time: the cache
