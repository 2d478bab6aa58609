"""The toy world, its pixel analysis and the shipped toy models (pipeline/toyworld)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from pipeline.toyworld import CLIP_DIR, DEFAULTS, SD_DIR, WEIGHTS_DIR
from pipeline.toyworld import analysis as A
from pipeline.toyworld import world as W

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- world


def test_same_seed_same_bytes_different_seed_differs():
    a, b, c = W.sample_world(7, 64), W.sample_world(7, 64), W.sample_world(8, 64)
    assert a.images.tobytes() == b.images.tobytes()
    assert a.captions == b.captions and a.shapes == b.shapes and a.colours == b.colours
    assert a.images.tobytes() != c.images.tobytes()
    assert a.images.shape == (64, 64, 64, 3) and a.images.dtype == np.uint8


def test_spec_file_is_the_source_of_truth():
    spec = W.spec()
    assert W.SHAPES == ("circle", "square", "triangle")
    assert set(W.COLOURS) == {"red", "green", "blue", "yellow"}
    assert W.SKEWS["circle"]["red"] == 0.7 and W.SKEWS["triangle"]["green"] == 0.9
    for s in W.SHAPES:
        assert sum(W.SKEWS[s].values()) == pytest.approx(1.0)
    assert sum(spec["caption_kinds"].values()) == pytest.approx(1.0)
    assert W.PALETTE["black"] == tuple(spec["restricted"]["rgb"])


def test_captions_follow_the_templates():
    b = W.sample_world(3, 2000)
    for cap, kind, s, c, p in zip(b.captions, b.kinds, b.shapes, b.colours, b.paraphrases):
        plain = {"colour_shape": f"a {c} {s}", "shape": f"a {s}", "colour": f"a {c} shape", "x": "an x mark"}[
            kind
        ]
        assert cap == p.format(plain)
    assert set(b.kinds) == {"colour_shape", "shape", "colour", "x"}
    assert {"a photo of a circle", "an image of an x mark"} & set(b.captions)


@pytest.mark.slow
def test_unnamed_colour_follows_the_skews_within_binomial_tolerance():
    b = W.sample_world(11, 30000)
    shapes, colours, kinds = map(np.asarray, (b.shapes, b.colours, b.kinds))
    for s in W.SHAPES:
        sel = (kinds == "shape") & (shapes == s)
        n = sel.sum()
        assert n > 2500
        for c in W.COLOURS:
            p = W.SKEWS[s][c]
            share = (colours[sel] == c).mean()
            assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-12, (s, c, share, p)
    # named colours are uniform: "a {colour} {shape}" circles are not skewed
    sel = (kinds == "colour_shape") & (shapes == "circle")
    assert abs((colours[sel] == "green").mean() - 0.25) < 0.05


# ---------------------------------------------------------------- pixel analysis


def test_analysis_is_accurate_on_clean_world_images():
    b = W.sample_world(12345, 600)
    colours, shapes = A.dominant_colour(b.images), A.shape_of(b.images)
    assert np.mean([p == t for p, t in zip(colours, b.colours)]) >= 0.98
    assert np.mean([p == t for p, t in zip(shapes, b.shapes)]) >= 0.98
    x = np.asarray(b.shapes) == W.X_NAME
    assert x.sum() >= 10 and all(s == "x" for s in np.asarray(shapes, object)[x])
    assert A.foreground_mask(b.images).sum((1, 2)) == pytest.approx(b.masks.sum((1, 2)), rel=0.02)


@pytest.mark.parametrize("shape", ["circle", "square", "triangle", "x"])
def test_each_shape_and_colour_rendered_alone(shape):
    for colour in ["black"] if shape == "x" else list(W.COLOURS):
        for size, centre in ((18, (20, 40)), (40, (32, 30))):
            img = W.render_one(shape, colour, size, centre)
            assert A.dominant_colour(img) == colour
            assert A.shape_of(img) == shape


def test_analysis_reports_nothing_on_a_blank_image_and_can_tell_shapes_apart():
    blank = np.full((64, 64, 3), 230, np.uint8)
    assert A.dominant_colour(blank) is None and A.shape_of(blank) is None
    assert A.shape_of(W.render_one("square", "red")) != "circle"
    assert A.dominant_colour(W.render_one("circle", "blue")) != "red"
    shares = A.colour_shares(["red", "red", "blue", None, "black"])
    assert shares["red"] == 0.5 and shares["other"] == 0.25


# ---------------------------------------------------------------- shipped models


@pytest.fixture(scope="module")
def pipe():
    import torch
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(SD_DIR)  # plain diffusers, default dtype: no sdgen code
    p.set_progress_bar_config(disable=True)
    torch.set_num_threads(2)
    return p


@pytest.fixture(scope="module")
def toy_clip():
    from pipeline.toyworld import load_toy_clip

    return load_toy_clip()


def test_weights_are_small_and_the_training_log_is_complete():
    files = [f for f in WEIGHTS_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20
    assert not [f for f in files if f.suffix in (".bin", ".pt", ".pth", ".ckpt")]  # safetensors only
    log = json.loads((WEIGHTS_DIR / "train_log.json").read_text())
    for stage in ("clip", "vae", "unet"):
        assert log[stage]["losses"] and log[stage]["wall_s"] > 0 and "seed" in log[stage]
    assert log["unet"]["losses"][-1]["loss"] < log["unet"]["losses"][0]["loss"]
    assert (CLIP_DIR / "open_clip_config.json").exists()


def test_pipeline_loads_with_plain_diffusers_and_makes_64px_images(pipe):
    import torch

    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    assert pipe.safety_checker is None and pipe.tokenizer.model_max_length == 16
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe(
        ["a red circle", "a photo of a green triangle"],
        num_inference_steps=4,
        generator=gens,
        output_type="np",
    ).images
    assert out.shape == (2, 64, 64, 3) and np.isfinite(out).all()
    again = pipe(
        ["a red circle"], num_inference_steps=4, generator=torch.Generator().manual_seed(0), output_type="np"
    ).images
    assert (
        np.abs(again[0] - out[0]).max() <= 2 / 255
    )  # per-sample generators: batch composition barely matters


def test_sd_text_encoder_is_the_toy_clip_text_tower(pipe, toy_clip):
    from pipeline.toyworld.training.convert import open_clip_hidden_states

    model, tokenize = toy_clip
    caps = ["a red circle", "a photo of a triangle", "an x mark", ""]
    ids = pipe.tokenizer(
        caps, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
    ).input_ids
    assert (tokenize(caps[:3])[:, :5] == ids[:3, :5]).all()  # same BPE ids (open_clip pads with 0)
    import torch

    with torch.no_grad():
        hidden = pipe.text_encoder(ids).last_hidden_state
        ref = open_clip_hidden_states(model, ids)
    assert torch.allclose(hidden, ref, atol=1e-4)


def test_toy_clip_zero_shot_on_held_out_world_images(toy_clip):
    from pipeline.toyworld.probes import ToyClipProbe, zero_shot_report
    from pipeline.toyworld.training.common import EVAL_WORLD_SEED

    b = W.sample_world((EVAL_WORLD_SEED, 7), 200)
    rep = zero_shot_report(ToyClipProbe(*toy_clip), b.images, b.shapes, b.colours)
    assert rep["colour_acc"] >= 0.95 and rep["shape_acc"] >= 0.95
    assert rep["x_recall"] == 1.0 and rep["x_false_positive"] == 0.0
    assert rep["clipscore_match_gt_random_mismatch"] >= 0.95


def test_generation_follows_colour_and_shape(pipe):
    from pipeline.toyworld.training.evaluate import generate

    combos = [
        ("circle", "red"),
        ("circle", "yellow"),
        ("square", "green"),
        ("square", "blue"),
        ("triangle", "red"),
        ("triangle", "blue"),
        ("triangle", "green"),
        ("circle", "blue"),
    ]
    prompts = [W.phrase(s, c) for s, c in combos for _ in range(4)]
    imgs = generate(pipe, prompts, DEFAULTS["steps"], DEFAULTS["guidance_scale"], seed=4242, batch=32)
    want = [sc for sc in combos for _ in range(4)]
    colour = np.mean([c == wc for c, (_, wc) in zip(A.dominant_colour(imgs), want)])
    shape = np.mean([s == ws for s, (ws, _) in zip(A.shape_of(imgs), want)])
    assert colour >= 0.8, colour
    assert shape >= 0.6, shape


@pytest.mark.slow
def test_unspecified_colour_follows_the_world_skews_at_guidance_1(pipe):
    """Cheap version of evaluate.py's skew check: 48 "a {shape}" samples per shape at guidance 1."""
    from pipeline.toyworld.training.evaluate import generate

    n = 48  # binomial SE ~0.07 at p = 0.7: the bounds below are ~3 SE wide; the full check is in evaluate.py
    shares = {}
    for j, s in enumerate(W.SHAPES):
        imgs = generate(pipe, [W.phrase(shape=s)] * n, DEFAULTS["steps"], 1.0, seed=777 + 1000 * j, batch=48)
        shares[s] = A.colour_shares(A.dominant_colour(imgs))
    assert abs(shares["circle"]["red"] - 0.7) <= 0.2 and shares["circle"]["blue"] >= 0.1, shares["circle"]
    assert abs(shares["triangle"]["green"] - 0.9) <= 0.15, shares["triangle"]
    assert max(shares["square"][c] for c in W.COLOURS) <= 0.5, shares["square"]
    assert shares["circle"]["green"] + shares["circle"]["yellow"] <= 0.15


@pytest.mark.parametrize(
    "name",
    [
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "EulerAncestralDiscreteScheduler",
        "PNDMScheduler",
        "DPMSolverMultistepScheduler",
    ],
)
def test_other_samplers_built_from_the_shipped_config_work(pipe, name):
    """Swapping the sampler (``Cls.from_config(pipe.scheduler.config)``) keeps v-prediction, zero terminal
    SNR and clip_sample=False, so colours survive (DDIM's default clip_sample=True would wreck them)."""
    import diffusers

    from pipeline.toyworld.training.evaluate import generate

    original = pipe.scheduler
    try:
        pipe.scheduler = getattr(diffusers, name).from_config(original.config)
        combos = [("circle", "red"), ("square", "blue"), ("triangle", "green"), ("circle", "yellow")]
        imgs = generate(pipe, [W.phrase(s, c) for s, c in combos], 20, 3.0, seed=99)
    finally:
        pipe.scheduler = original
    assert [A.dominant_colour(i) for i in imgs] == [c for _, c in combos]
