"""Loading beyond SD1.5 through the real-model paths: SDXL / SD2 directories (AutoPipeline,
safetensors), LoRA weights from a local path, single-file checkpoints; a tiny SDXL job end to end."""

import pytest
import torch

from pipeline.core.config import ConfigError, LoraConfig, from_dict
from pipeline.generate import presets
from pipeline.generate.diffusion import Generator, Sample
from pipeline.generate.models import ModelError, check_model_spec, load_pipeline, native_resolution
from pipeline.generate.seeds import sample_seed
from tests.conftest import decode, read_output, tiny_config, write_prompts


def images(pipe, seeds=(7, 8), guidance=5.0):
    gen = Generator(pipe, torch.device("cpu"), torch.float32)
    return gen.generate(
        [Sample(0, "p", k, "a red circle", "", s, 64, 64, 3, guidance) for k, s in enumerate(seeds)]
    ).images


@pytest.mark.parametrize(
    "name,cls", [("tiny-sdxl", "StableDiffusionXLPipeline"), ("tiny-sd2", "StableDiffusionPipeline")]
)
def test_saved_directory_loads_through_autopipeline(tmp_path, name, cls):
    built = presets.get(name).build()
    built.save_pretrained(tmp_path / "m")
    assert not list((tmp_path / "m").rglob("*.bin"))  # safetensors only
    assert check_model_spec(str(tmp_path / "m")) == "dir" and native_resolution(str(tmp_path / "m")) == 64
    loaded = load_pipeline(str(tmp_path / "m"), torch.float32, "cpu")
    assert type(loaded).__name__ == cls
    assert loaded.scheduler.config.prediction_type == built.scheduler.config.prediction_type
    assert torch.equal(images(built), images(loaded))


def test_tiny_sdxl_job_end_to_end(tmp_path):
    """Rows, decoded images and seeds as the contract says; a stored seed reproduces its image with
    plain diffusers (StableDiffusionXLPipeline, generator=torch.Generator('cpu').manual_seed(seed))."""
    import pipeline

    src = write_prompts(tmp_path / "p.parquet", ["a red circle", "a blue square", "a green triangle"])
    pipeline.run(tiny_config(src, tmp_path / "out", model="tiny-sdxl"))
    df = read_output(tmp_path / "out")
    assert len(df) == 6 and (df.status == "ok").all() and set(df.model) == {"tiny-sdxl"}
    assert all(s == sample_seed(0, p, k) for s, p, k in zip(df.seed, df.prompt_id, df.sample_idx))
    arrays = [decode(b["bytes"]) for b in df.image]
    assert all(a.shape == (64, 64, 3) and a.std() > 0 for a in arrays)
    row = df.iloc[0]
    pipe = presets.get("tiny-sdxl").build()
    ref = pipe(
        row.prompt,
        negative_prompt="",
        height=64,
        width=64,
        num_inference_steps=3,
        guidance_scale=7.5,
        generator=torch.Generator("cpu").manual_seed(int(row.seed)),
        output_type="np",
    ).images[0]
    diff = abs((ref * 255).round().astype(int) - arrays[0].astype(int)).max()
    assert diff <= 2, diff


def _tiny_lora(tmp_path):
    """A LoRA on the tiny UNet's attention projections with non-zero weights, saved the diffusers way."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig as PeftLora
    from peft.utils import get_peft_model_state_dict

    pipe = presets.get("tiny").build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        pipe.unet.add_adapter(
            PeftLora(
                r=4,
                lora_alpha=4,
                init_lora_weights=False,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            )
        )
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(pipe.unet), safe_serialization=True
    )
    return pipe, str(tmp_path / "lora")


def test_lora_from_local_path_is_fused(tmp_path):
    with_adapter, path = _tiny_lora(tmp_path)
    one = (7,)
    base = images(load_pipeline("tiny", torch.float32, "cpu"), one)
    fused = images(load_pipeline("tiny", torch.float32, "cpu", lora=LoraConfig(path=path)), one)
    ref = images(with_adapter, one)  # the adapter applied unfused, by peft
    assert (fused.int() - ref.int()).abs().max() <= 2
    assert (fused.int() - base.int()).abs().max() > 10  # the LoRA changes the images
    zero = images(load_pipeline("tiny", torch.float32, "cpu", lora=LoraConfig(path=path, scale=0.0)), one)
    assert (zero.int() - base.int()).abs().max() <= 2
    with pytest.raises(ModelError, match="no such file"):
        load_pipeline("tiny", torch.float32, "cpu", lora=LoraConfig(path=str(tmp_path / "missing")))
    cfg = from_dict({"input": "x", "output": "y", "lora": {"path": path}})
    assert cfg.fingerprint() != from_dict({"input": "x", "output": "y"}).fingerprint()


def test_single_file_needs_local_configs(tmp_path):
    with pytest.raises(ConfigError, match="single_file_config"):
        from_dict({"input": "x", "output": "y", "model": "/m/model.safetensors"})
    with pytest.raises(ModelError, match="no such single-file checkpoint"):
        check_model_spec(str(tmp_path / "nope.safetensors"))
    (tmp_path / "m.safetensors").write_bytes(b"")
    assert check_model_spec(str(tmp_path / "m.safetensors")) == "file"
    with pytest.raises(ModelError, match="no model_index.json"):
        load_pipeline(str(tmp_path / "m.safetensors"), torch.float32, "cpu", single_file_config=str(tmp_path))


def test_single_file_checkpoint_loads_offline_with_local_configs(tmp_path):
    """The tiny model written as one original-layout .safetensors (tests/generate/ldm_keys.py) loads
    through from_single_file with the local config dir: same weights, same images, nothing fetched."""
    from safetensors.torch import save_file

    from tests.generate.ldm_keys import to_original

    pipe = presets.get("tiny").build()
    pipe.save_pretrained(tmp_path / "cfg")
    save_file(to_original(pipe), str(tmp_path / "tiny.safetensors"))
    loaded = load_pipeline(
        str(tmp_path / "tiny.safetensors"), torch.float32, "cpu", single_file_config=str(tmp_path / "cfg")
    )
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert torch.equal(images(pipe), images(loaded))
    cfg = from_dict(
        {
            "input": "x",
            "output": "y",
            "model": str(tmp_path / "tiny.safetensors"),
            "single_file_config": str(tmp_path / "cfg"),
        }
    )
    assert native_resolution(cfg.model, None, cfg.single_file_config) == 64
