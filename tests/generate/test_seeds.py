import hashlib
import struct

import torch

from pipeline.generate.seeds import initial_latents, sample_seed, seeds_for_row


def reference_seed(job_seed, prompt_id, k):
    """docs/DESIGN.md §3, computed independently: first 8 bytes big-endian, masked to 63 bits."""
    digest = hashlib.sha256(f"{job_seed}:{prompt_id}:{k}".encode()).digest()
    (value,) = struct.unpack(">Q", digest[:8])
    return value % (2**63)


def test_sample_seed_matches_contract():
    for job_seed, pid, k in [
        (0, "abc", 0),
        (0, "abc", 1),
        (42, "a photo of a doctor", 7),
        (2**40, "ü-ñ", 123),
    ]:
        assert sample_seed(job_seed, pid, k) == reference_seed(job_seed, pid, k)
    assert sample_seed(0, "abc", 0) != sample_seed(1, "abc", 0)
    assert all(0 <= sample_seed(5, str(i), i) < 2**63 for i in range(200))


def test_row_seed_means_seed_plus_k():
    assert seeds_for_row(0, "x", 3, row_seed=1000) == [1000, 1001, 1002]
    assert seeds_for_row(9, "x", 2) == [reference_seed(9, "x", 0), reference_seed(9, "x", 1)]


def test_latents_independent_of_batch_and_match_diffusers_convention():
    shape = (4, 8, 8)
    batch, gens = initial_latents([11, 22, 33], shape, "cpu", torch.float32)
    alone, _ = initial_latents([22], shape, "cpu", torch.float32)
    assert torch.equal(batch[1], alone[0])
    # what diffusers draws for pipe(generator=torch.Generator("cpu").manual_seed(22)) at batch 1
    ref = torch.randn((1, *shape), generator=torch.Generator("cpu").manual_seed(22))
    assert torch.equal(alone, ref)
    # generators continue their own streams (step noise of stochastic schedulers)
    assert not torch.equal(torch.randn(3, generator=gens[0]), torch.randn(3, generator=gens[1]))


def test_no_global_rng_use():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    initial_latents([1, 2], (4, 8, 8), "cpu", torch.float32)
    assert torch.equal(before, torch.get_rng_state())
