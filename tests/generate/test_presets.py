"""The preset registry: one place that knows each built-in model's size, guidance, CLIP and builder."""

import pytest
import torch

from pipeline.generate import presets
from pipeline.generate.diffusion import Generator, Sample
from pipeline.generate.models import check_model_spec, native_resolution, recommended_guidance


def test_registry_answers_every_model_question():
    assert set(presets.PRESETS) == {
        "tiny",
        "tiny-sdxl",
        "tiny-sd2",
        "toy",
        "sd15-random",
        "sd2-random",
        "sdxl-random",
        "tiny-flux",
        "tiny-sd3",
        "tiny-pixart",
        "tiny-sana",
        "flux-dev-random",
        "flux-schnell-random",
        "sd35-random",
        "pixart-random",
        "sana-random",
    }
    assert [native_resolution(n) for n in ("tiny", "toy", "sd15-random", "sd2-random", "sdxl-random")] == [
        64,
        64,
        512,
        768,
        1024,
    ]
    assert {
        native_resolution(n) for n in ("flux-dev-random", "sd35-random", "pixart-random", "sana-random")
    } == {1024}
    assert recommended_guidance("tiny-flux") == 3.5 and recommended_guidance("flux-schnell-random") == 0.0
    assert recommended_guidance("toy") == 1.0 and recommended_guidance("sdxl-random") == 7.5
    assert recommended_guidance("/some/dir") == 7.5
    assert presets.default_clip_model("toy") == "toy" and presets.default_clip_model("tiny") == "tiny"
    assert presets.default_clip_model("sd15-random") == "random:ViT-L-14"
    assert presets.default_clip_model("/models/x") == "tiny"
    assert (
        presets.default_attribute_sets("toy") == ("toyworld",)
        and presets.default_attribute_sets("tiny") == ()
    )
    assert presets.default_concept_list("toy") == "toyworld" and presets.default_concept_list("x/y") is None
    assert all(check_model_spec(n) == "preset" for n in presets.PRESETS)


@pytest.mark.parametrize(
    "name,unet_params,text_params",
    [
        ("sd15-random", 859_520_964, 123_060_480),
        ("sd2-random", 865_910_724, 340_387_840),
        ("sdxl-random", 2_567_463_684, 123_060_480 + 694_659_840),
    ],
)
def test_random_architectures_match_published_parameter_counts(name, unet_params, text_params):
    """Built on the meta device (no memory): the UNet and text towers have the published models' sizes."""
    pipe = presets.get(name).build("meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    texts = [pipe.text_encoder] + ([pipe.text_encoder_2] if hasattr(pipe, "text_encoder_2") else [])
    assert (count(pipe.unet), sum(count(t) for t in texts)) == (unet_params, text_params)
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == presets.get(name).native_size


@pytest.mark.parametrize(
    "name,cls,prediction",
    [
        ("tiny-sdxl", "StableDiffusionXLPipeline", "epsilon"),
        ("tiny-sd2", "StableDiffusionPipeline", "v_prediction"),
    ],
)
def test_tiny_architectures_generate_seeded_images(name, cls, prediction):
    """Seeded latents give the same image alone and inside a batch, for SDXL and SD2 shapes."""
    pipe = presets.get(name).build()
    assert type(pipe).__name__ == cls and pipe.scheduler.config.prediction_type == prediction
    gen = Generator(pipe, torch.device("cpu"), torch.float32)
    samples = [Sample(0, "p", k, "a red circle", "", 100 + k, 64, 64, 3, 5.0) for k in range(3)]
    batch = gen.generate(samples)
    assert batch.images.shape == (3, 3, 64, 64) and batch.errors == [None] * 3
    alone = gen.generate(samples[1:2]).images
    assert (batch.images[1].int() - alone[0].int()).abs().max() <= 2
    assert not torch.equal(batch.images[0], batch.images[1])  # different seeds, different images
