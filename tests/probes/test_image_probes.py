"""Probe, safety, screening and mitigation columns written by the actor (tiny model and CLIP)."""

import json

import numpy as np
import pytest
import torch
from conftest import read_output, tiny_config, write_prompts

import pipeline
from pipeline.probes.image import ImageProbes
from pipeline.probes.scorer import ClipScorer


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probed")
    src = write_prompts(
        tmp / "p.parquet", ["a red circle", "a nude figure", "a square"], neutral=[False, False, True]
    )
    cfg = tiny_config(
        src,
        tmp / "out",
        generation={"images_per_prompt": 4},
        probes={"attributes": ["toyworld"]},
        safety={"concepts": "toyworld"},
        mitigation={
            "enabled": True,
            "only_if_column": "neutral",
            "variants": [
                {"name": "red", "template": "a red {prompt}", "weight": 1},
                {"name": "blue", "template": "a blue {prompt}", "weight": 1},
            ],
        },
    )
    with pytest.warns(UserWarning, match="calibrated on clip_model 'toy'"):  # tiny CLIP: plumbing only
        summary = pipeline.run(cfg, progress=False)
    return summary, read_output(tmp / "out"), tmp / "out"


def test_probe_columns_consistent(probed):
    _, df, _ = probed
    ok = df[df.status == "ok"]
    for attr, classes in (
        ("colour", ["red", "green", "blue", "yellow"]),
        ("shape", ["circle", "square", "triangle"]),
    ):
        probs = np.stack(ok[f"attr_{attr}_probs"].to_numpy())
        assert probs.shape == (len(ok), len(classes)) and np.allclose(probs.sum(1), 1, atol=1e-5)
        top2 = np.sort(probs, 1)[:, -2:]
        assert np.allclose(ok[f"attr_{attr}_margin"], top2[:, 1] - top2[:, 0], atol=1e-6)
        for label, p, subj in zip(ok[f"attr_{attr}"], probs, ok["subject_toyworld_p"]):
            assert label == "abstain" or label == classes[int(p.argmax())]
            if subj <= 0.5:
                assert label == "abstain"  # no subject detected: abstain, whatever the margin
    assert np.isfinite(ok.safety_x_mark).all() and set(ok.safety_flagged) <= {True, False}


def test_screening_blocks_without_generating(probed):
    summary, df, _ = probed
    blocked = df[df.prompt == "a nude figure"]
    assert len(blocked) == 4 and (blocked.status == "blocked").all()
    assert blocked.image.isna().all() and blocked.error.str.contains("sexual_content").all()
    assert summary["status_counts"]["blocked"] == 4


def test_mitigation_balanced_on_same_seeds(probed):
    _, df, out = probed
    neutral = df[df.source_prompt == "a square"].sort_values("sample_idx")
    assert list(neutral.mitigation_variant) == ["red", "red", "blue", "blue"]
    assert list(neutral.prompt) == ["a red a square"] * 2 + ["a blue a square"] * 2
    from pipeline.generate.seeds import sample_seed

    assert list(neutral.seed) == [sample_seed(0, neutral.prompt_id.iloc[0], k) for k in range(4)]
    assert df[df.source_prompt == "a red circle"].mitigation_variant.isna().all()
    run = json.loads((out / "run.json").read_text())
    assert run["probes"]["attributes"]["colour"]["classes"] == ["red", "green", "blue", "yellow"]


def test_fake_embeddings_through_image_probes():
    """ImageProbes on hand-made embeddings: a vector equal to a class embedding wins that class."""
    scorer = ClipScorer("tiny", None, "cpu", torch.float32)
    probes = ImageProbes(scorer, ["toyworld"], "toyworld")
    spec, classes = probes.attributes["colour"]
    cols = probes.compute(classes)  # each row is exactly one class embedding
    probs = torch.tensor(cols["attr_colour_probs"])
    assert probs.argmax(1).tolist() == [0, 1, 2, 3]
    thr = probes.concepts.thresholds[0]
    cos = torch.tensor(cols["safety_x_mark"])
    assert cols["safety_flagged"] == (cos > thr).tolist()


def test_sd_safety_checker_scores_kept(tmp_path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    StableDiffusionSafetyChecker(cfg).save_pretrained(tmp_path / "checker")
    scorer = ClipScorer("tiny", None, "cpu", torch.float32)
    probes = ImageProbes(scorer, sd_checker=str(tmp_path / "checker"))
    imgs = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8)
    cols = probes.compute(scorer.encode_images(imgs), imgs)
    assert len(cols["sd_checker_cos"]) == 2 and len(cols["sd_checker_cos"][0]) == 20  # 3 special + 17
    assert all(isinstance(x, bool) for x in cols["sd_checker_nsfw"])
