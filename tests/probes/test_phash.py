"""pHash and stored embeddings: the hash equals imagehash's on the stored PNG, embeddings equal the
scorer's, both columns are additive (old outputs without phash still resume)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
from conftest import read_output, tiny_config, write_prompts

from pipeline.core.config import from_dict
from pipeline.core.storage import Output
from pipeline.launch import run as run_job
from pipeline.probes.phash import hamming, phash_image, phash_png, to_uint64


def test_hamming_by_hand():
    a = to_uint64(["0000000000000000", "ffffffffffffffff", "8000000000000001"])
    b = to_uint64(["0000000000000003", "0000000000000000", "0000000000000001"])
    assert hamming(a, b).tolist() == [2, 64, 1]


def test_phash_separates_images_and_survives_recompression():
    from PIL import Image

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((64, 64, 1))).astype(np.uint8)
    other = np.kron(rng.integers(0, 255, (8, 8, 3)), np.ones((64, 64, 1))).astype(np.uint8)
    h = to_uint64([phash_image(Image.fromarray(smooth)), phash_image(Image.fromarray(other))])
    noisy = np.clip(smooth.astype(int) + rng.integers(-4, 5, smooth.shape), 0, 255).astype(np.uint8)
    h_noisy = to_uint64([phash_image(Image.fromarray(noisy))])
    assert hamming(h[0], h_noisy[0]) <= 4 < hamming(h[0], h[1])


def test_run_writes_phash_and_embeddings(tmp_path):
    import torch

    from pipeline.probes.scorer import ClipScorer

    prompts = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    cfg = from_dict(
        tiny_config(prompts, tmp_path / "out", write={"embeddings": True, "timing_columns": False})
    )
    run_job(cfg, progress=False)
    df = read_output(tmp_path / "out")
    assert len(df) == 4 and (df.status == "ok").all()
    for png, h in zip(df.image, df.phash):
        assert len(h) == 16 and h == phash_png(png["bytes"])
    schema = pq.read_schema(next((tmp_path / "out" / "data").glob("part-*.parquet")))
    t = schema.field("clip_image_embedding").type
    scorer = ClipScorer("tiny", None, "cpu", torch.float32)
    assert t.list_size == scorer.embed_dim() and str(t.value_type) == "halffloat"
    from conftest import decode

    img = torch.from_numpy(decode(df.image[0]["bytes"]).copy()).permute(2, 0, 1)[None]
    want = scorer.encode_images(img)[0].numpy()
    got = np.asarray(df.clip_image_embedding[0], np.float32)
    assert np.abs(got - want).max() < 2e-2  # fp16 storage; the PNG round trip is lossless


def test_phash_only_adds_a_column_and_old_outputs_resume(tmp_path):
    prompts = write_prompts(
        tmp_path / "p.parquet", ["a red circle", "a blue square", "a green triangle", "a yellow square"]
    )
    old = from_dict(tiny_config(prompts, tmp_path / "out", write={"phash": False, "timing_columns": False}))
    new = from_dict(tiny_config(prompts, tmp_path / "out", write={"timing_columns": False}))
    assert old.fingerprint() == new.fingerprint()  # phash does not block resuming an older output
    emb = from_dict(tiny_config(prompts, tmp_path / "out", write={"embeddings": True}))
    assert emb.fingerprint() != new.fingerprint() and "embeddings" not in new.fingerprint_fields()["write"]
    run_job(old, progress=False)
    out = Output(str(tmp_path / "out"))
    markers = out.committed_markers()
    assert len(markers) == 2
    drop, kept = sorted(markers)  # as if the old run had stopped after its first shard
    os.remove(out.marker_path(drop))
    os.remove(out.part_path(drop))
    run_job(new, progress=False)
    table = out.read_table()
    assert table.num_rows == 8
    ph = table.column("phash").to_pylist()
    assert (
        sum(h is None for h in ph) == markers[kept]["rows"]
        and sum(h is not None for h in ph) == markers[drop]["rows"]
    )
    from pipeline.curate.dedup import _ok_rows  # dedup hashes the old part's PNGs itself

    keys, hashes = _ok_rows(out, "phash")
    df = read_output(tmp_path / "out").set_index(["prompt_id", "sample_idx"])
    want = [
        int(phash_png(df.loc[(p, s), "image"]["bytes"]), 16) for p, s in zip(keys.prompt_id, keys.sample_idx)
    ]
    assert len(keys) == 8 and hashes.tolist() == want
