"""The text encoder runs once per unique (prompt, negative) pair of a batch; images stay as before."""

import pytest
import torch

from pipeline.generate import presets
from pipeline.generate.diffusion import Generator, Sample
from pipeline.generate.encode import unique_pairs


def test_unique_pairs_keep_order_and_index():
    pairs, index = unique_pairs(["a", "b", "a", "a"], ["", "", "x", ""])
    assert pairs == [("a", ""), ("b", ""), ("a", "x")] and index == [0, 1, 2, 0]


def _rows_encoded(pipe):
    """Counts the rows every text encoder sees."""
    seen = []
    for name in ("text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is not None:
            getattr(pipe, name).register_forward_hook(
                lambda m, args, kw, out: seen.append(
                    (kw.get("input_ids") if "input_ids" in kw else args[0]).shape[0]
                ),
                with_kwargs=True,
            )
    return seen


@pytest.mark.parametrize("name,guidance", [("tiny", 7.5), ("tiny", 1.0), ("tiny-sdxl", 5.0)])
def test_one_encode_per_unique_prompt_same_images(name, guidance):
    pipe = presets.get(name).build()
    prompts = ["a red circle"] * 3 + ["a blue square"]
    batch = [Sample(0, "p", k, p, "", 40 + k, 64, 64, 3, guidance) for k, p in enumerate(prompts)]
    seen = _rows_encoded(pipe)
    plain = Generator(pipe, torch.device("cpu"), torch.float32, False).generate(batch).images
    per_call_plain, seen[:] = list(seen), []
    once = Generator(pipe, torch.device("cpu"), torch.float32, True).generate(batch).images
    encoders = 2 if name == "tiny-sdxl" else 1
    cfg_factor = 2 if guidance > 1 else 1
    assert sum(per_call_plain) == 4 * cfg_factor * encoders  # every row, and every negative
    assert sum(seen) == 2 * cfg_factor * encoders  # two unique pairs (and their negatives)
    diff = (plain.int() - once.int()).abs()
    assert diff.max() <= 2, diff.max()
    if guidance <= 1:
        assert torch.equal(plain, once)  # no negatives: the same embeddings, bit for bit
