"""Speed levers (accel.py): padding of short batches, levers that run on CPU keep the toy world's
colour accuracy, compile per shape, FP8 refused off CUDA with the key named."""

import json
import os

import pytest
import torch

from pipeline.core.config import from_dict
from pipeline.generate import presets
from pipeline.generate.accel import AccelError, apply
from pipeline.generate.diffusion import Generator, Sample
from pipeline.toyworld.analysis import dominant_colour
from tests.conftest import decode, read_output, tiny_config, write_prompts


def test_short_batch_padded_to_bucket_size_rows_unchanged():
    pipe = presets.get("tiny").build()
    sizes = []
    pipe.unet.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    batch = [Sample(0, "p", k, "a red circle", "", 70 + k, 64, 64, 3, 7.5) for k in range(3)]
    plain = Generator(pipe, torch.device("cpu"), torch.float32).generate(batch)
    assert set(sizes) == {6}  # 3 rows x CFG, every step
    sizes.clear()
    padded = Generator(pipe, torch.device("cpu"), torch.float32, pad_to=5).generate(batch)
    assert set(sizes) == {10} and padded.samples == batch and len(padded.errors) == 3
    assert padded.images.shape == plain.images.shape
    assert (padded.images.int() - plain.images.int()).abs().max() <= 2


COLOURS = ("red", "green", "blue", "yellow")


def _toy_colour_job(tmp_path, name, **accel):
    import pipeline

    prompts = [f"a {c} {s}" for c in COLOURS for s in ("circle", "square", "triangle")]
    src = write_prompts(tmp_path / "toy.parquet", prompts)
    cfg = {
        "input": src,
        "output": str(tmp_path / name),
        "model": "toy",
        "generation": {
            "images_per_prompt": 2,
            "batch_size": 8,
            "channels_last": accel.pop("channels_last", False),
        },
        "accel": accel,
        "ray": {"executor": "inline"},
        "write": {"timing_columns": False},
    }
    pipeline.run(cfg)
    df = read_output(tmp_path / name)
    want = [p.split()[1] for p in df.prompt]
    got = [dominant_colour(decode(b["bytes"])) for b in df.image]
    return df, sum(w == g for w, g in zip(want, got)) / len(df)


def test_cpu_levers_keep_toy_colour_accuracy(tmp_path):
    """Every lever that runs on CPU (fused QKV, channels_last UNet and VAE, one text encode per
    unique prompt) keeps the toy world's colour accuracy >= 0.99, measured from pixels."""
    base, acc_base = _toy_colour_job(tmp_path, "base")
    fast, acc_fast = _toy_colour_job(
        tmp_path,
        "fast",
        fuse_qkv=True,
        channels_last=True,
        channels_last_vae=True,
        encode_unique_prompts=True,
    )
    assert len(fast) == 24 and acc_base >= 0.99 and acc_fast >= 0.99, (acc_base, acc_fast)
    diffs = [
        abs(decode(a["bytes"]).astype(int) - decode(b["bytes"]).astype(int)).max()
        for a, b in zip(base.image, fast.image)
    ]
    assert max(diffs) <= 2, max(diffs)
    markers = [
        json.load(open(tmp_path / "fast" / "_commits" / f))
        for f in os.listdir(tmp_path / "fast" / "_commits")
    ]
    assert markers[0]["accel"] == {"fuse_qkv": True, "channels_last": True, "channels_last_vae": True}


def test_fp8_is_refused_off_cuda_and_fingerprinted():
    cfg = from_dict({"input": "x", "output": "y", "accel": {"fp8": True}})
    with pytest.raises(AccelError, match="accel.fp8 needs a CUDA device"):
        apply(presets.get("tiny").build(), cfg, torch.device("cpu"))
    assert cfg.fingerprint() != from_dict({"input": "x", "output": "y"}).fingerprint()
    assert (
        from_dict({"input": "x", "output": "y", "accel": {"fuse_qkv": True}}).fingerprint()
        == from_dict({"input": "x", "output": "y"}).fingerprint()
    )  # numerics-preserving levers are not


@pytest.mark.slow
def test_regional_compile_with_padding_end_to_end(tmp_path):
    """generation.compile with regional scope and a compile cache: rows within 2/255 of eager."""
    import pipeline

    src = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square"])
    pipeline.run(tiny_config(src, tmp_path / "eager"))
    pipeline.run(
        tiny_config(
            src,
            tmp_path / "comp",
            generation={"compile": True},
            accel={"compile_scope": "regional", "compile_cache_dir": str(tmp_path / "cache")},
        )
    )
    a, b = read_output(tmp_path / "eager"), read_output(tmp_path / "comp")
    assert len(a) == len(b) == 4 and (b.status == "ok").all()
    diffs = [
        abs(decode(x["bytes"]).astype(int) - decode(y["bytes"]).astype(int)).max()
        for x, y in zip(a.image, b.image)
    ]
    assert max(diffs) <= 2 and os.listdir(tmp_path / "cache")
