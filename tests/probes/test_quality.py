"""Aesthetic MLP plumbing with RANDOM weights (no real weights offline): the column equals the MLP on
the stored embedding, a wrong width is a clear error, policies can threshold it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import read_output, tiny_config, write_prompts

from pipeline.core.config import from_dict
from pipeline.launch import run as run_job
from pipeline.probes.quality import AestheticScorer, aesthetic_mlp
from pipeline.probes.scorer import ScorerError


def _weights(path, dim: int) -> str:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({f"layers.{k}": v.contiguous() for k, v in aesthetic_mlp(dim).state_dict().items()}, str(path))
    return str(path)


def test_aesthetic_column_equals_mlp_on_embedding(tmp_path):
    w = _weights(tmp_path / "aes.safetensors", 32)  # tiny CLIP is 32-d; the real LAION MLP is 768-d
    prompts = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    cfg = tiny_config(prompts, tmp_path / "out", scoring={"aesthetic_weights": w}, write={"embeddings": True})
    c = from_dict(cfg)
    assert c.fingerprint_fields()["scoring"]["aesthetic_weights"] == w
    assert (
        "aesthetic_weights"
        not in from_dict(tiny_config(prompts, tmp_path / "o2")).fingerprint_fields()["scoring"]
    )
    run_job(c, progress=False)
    df = read_output(tmp_path / "out")
    mlp = AestheticScorer(w, 32, "cpu")
    emb = torch.tensor(np.stack(df.clip_image_embedding.to_list()).astype(np.float32))
    assert np.allclose(df.aesthetic.to_numpy(), mlp(emb), atol=5e-3)  # fp16 storage of the embedding
    assert df.aesthetic.std() > 0


def test_wrong_width_and_layout_are_named(tmp_path):
    w = _weights(tmp_path / "aes768.safetensors", 768)
    with pytest.raises(ScorerError, match="768-d embeddings but the scoring CLIP gives 32-d"):
        AestheticScorer(w, 32, "cpu")
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ScorerError, match="expected keys layers.0.weight"):
        AestheticScorer(str(tmp_path / "bad.safetensors"), 32, "cpu")
    with pytest.raises(ScorerError, match="file not found"):
        AestheticScorer(str(tmp_path / "none.safetensors"), 32, "cpu")


def test_preference_shared_forward_and_second_tower(tmp_path):
    """Same model as the scorer: logit_scale x clip_cos (no second forward); another model (toy):
    its own cosine of the same images and prompts."""
    from conftest import decode

    from pipeline.probes.scorer import ClipScorer

    prompts = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    run_job(
        from_dict(tiny_config(prompts, tmp_path / "a", scoring={"preference_model": "tiny"})), progress=False
    )
    a = read_output(tmp_path / "a")
    tiny = ClipScorer("tiny", None, "cpu", torch.float32)
    scale = float(tiny.model.logit_scale.detach().exp())
    assert np.allclose(a.preference, scale * a.clip_cos, rtol=1e-5)
    run_job(
        from_dict(tiny_config(prompts, tmp_path / "b", scoring={"preference_model": "toy"})), progress=False
    )
    b = read_output(tmp_path / "b")
    toy = ClipScorer("toy", None, "cpu", torch.float32)
    img = torch.from_numpy(np.stack([decode(x["bytes"]) for x in b.image]).transpose(0, 3, 1, 2).copy())
    want = float(toy.model.logit_scale.detach().exp()) * (
        toy.encode_images(img) * toy.encode_texts(list(b.prompt))
    ).sum(-1)
    assert np.allclose(b.preference, want.numpy(), atol=1e-3)
