import numpy as np
import pytest
import torch

from pipeline.generate import families
from pipeline.generate.diffusion import Generator, Sample, make_batches
from pipeline.generate.models import build_tiny_pipeline, set_scheduler
from pipeline.generate.seeds import sample_seed


@pytest.fixture(scope="module")
def pipe():
    p = build_tiny_pipeline()
    p.set_progress_bar_config(disable=True)
    return p


def samples(n, **kw):
    base = dict(width=64, height=64, steps=3, guidance_scale=5.0, negative_prompt="")
    base.update(kw)
    return [
        Sample(
            row=i,
            prompt_id=f"p{i}",
            sample_idx=0,
            prompt=f"a shape number {i}",
            seed=sample_seed(0, f"p{i}", 0),
            **base,
        )
        for i in range(n)
    ]


def test_buckets_never_mix_shapes_and_keep_order():
    s = samples(3) + samples(2, width=32) + samples(2, steps=4)
    batches = make_batches(s, 2)
    assert all(len({x.bucket for x in b}) == 1 for b in batches)
    assert [len(b) for b in batches] == [2, 1, 2, 2]
    assert [x.row for b in batches for x in b] == [0, 1, 2, 0, 1, 0, 1]


def test_batch_composition_changes_pixels_by_at_most_2(pipe):
    gen = Generator(pipe, torch.device("cpu"), torch.float32)
    s = samples(4)
    together = gen.generate(s).images
    alone = torch.cat([gen.generate([x]).images for x in s])
    assert together.dtype == torch.uint8 and together.shape == (4, 3, 64, 64)
    diff = (together.int() - alone.int()).abs().max().item()
    assert diff <= 2, diff
    assert gen.generate(s[:1]).images.equal(gen.generate(s[:1]).images)  # same batch: same bytes


def test_same_seed_same_image_as_plain_diffusers(pipe):
    """A row's seed reproduces what pipe(generator=Generator('cpu').manual_seed(seed)) makes."""
    gen = Generator(pipe, torch.device("cpu"), torch.float32)
    s = samples(1)[0]
    ours = gen.generate([s]).images[0]
    ref = pipe(
        s.prompt,
        negative_prompt="",
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=5.0,
        generator=torch.Generator("cpu").manual_seed(s.seed),
        output_type="np",
    ).images[0]
    ref_u8 = torch.from_numpy((ref * 255).round().astype(np.uint8)).permute(2, 0, 1)
    assert (ours.int() - ref_u8.int()).abs().max().item() <= 1


class FlakyPipe:
    """Wraps a real pipeline; raises out-of-memory above a batch size, NaNs for a marked prompt."""

    def __init__(self, pipe, max_batch, nan_prompt=None, fail_prompt=None):
        self.pipe, self.max_batch, self.nan_prompt, self.fail_prompt = (
            pipe,
            max_batch,
            nan_prompt,
            fail_prompt,
        )
        self.unet, self.vae_scale_factor, self.calls = pipe.unet, pipe.vae_scale_factor, []

    def __call__(self, prompt, **kw):
        self.calls.append(len(prompt))
        if len(prompt) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.fail_prompt in prompt:
            raise RuntimeError("this prompt always fails")
        out = self.pipe(prompt, **kw)
        if self.nan_prompt in prompt:
            out.images[prompt.index(self.nan_prompt)] = float("nan")
        return out


def test_oom_halves_the_batch_down_to_rows(pipe):
    flaky = FlakyPipe(pipe, max_batch=2)
    gen = Generator(flaky, torch.device("cpu"), torch.float32, family=families.get("sd"))
    res = gen.generate(samples(5))
    assert flaky.calls == [5, 2, 3, 1, 2]  # 5 -> (2, 3) -> 3 -> (1, 2)
    assert res.errors == [None] * 5 and gen.oom_splits == 2


def test_rows_that_still_fail_are_marked_not_dropped(pipe):
    s = samples(4)
    gen = Generator(
        FlakyPipe(pipe, max_batch=8, nan_prompt=s[1].prompt, fail_prompt=s[2].prompt),
        torch.device("cpu"),
        torch.float32,
        family=families.get("sd"),
    )
    res = gen.generate(s)
    assert len(res.samples) == 4 and res.images.shape[0] == 4
    assert res.errors[0] is None and res.errors[3] is None
    assert "non-finite" in res.errors[1]
    assert "this prompt always fails" in res.errors[2]
    assert res.images[1].max().item() == 0 and res.images[2].max().item() == 0


@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++", "euler", "euler_a"])
def test_schedulers_swap_and_generate(pipe, name):
    set_scheduler(pipe, name)
    try:
        gen = Generator(pipe, torch.device("cpu"), torch.float32)
        a, b = gen.generate(samples(2)), gen.generate(samples(2))
        assert a.errors == [None, None] and a.images.equal(b.images)  # deterministic, euler_a included
    finally:
        set_scheduler(pipe, "pndm")
