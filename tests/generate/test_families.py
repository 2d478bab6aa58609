"""Model families (generate/families.py): every family's tiny preset runs end to end, a stored row's seed
reproduces its image with plain diffusers, `sdgen verify` regenerates it; FLUX and SD3 directories
saved by plain diffusers run as `model: DIR`; an unsupported pipeline class is an exit-2 error."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import decode, kill_after_markers, read_output, tiny_config, write_job, write_prompts

import pipeline
from pipeline.cli import main
from pipeline.core.config import from_dict
from pipeline.generate import families, presets
from pipeline.generate.diffusion import Generator, Sample
from pipeline.generate.models import model_family, native_resolution
from pipeline.generate.resolve import resolve_job

PROMPTS = ["a photo of a doctor", "a photo of a nurse", "a red square on a blue field"]
TINY_FAMILIES = {
    "tiny-flux": "flux-dev",
    "tiny-sd3": "sd3",
    "tiny-pixart": "pixart-sigma",
    "tiny-sana": "sana",
}


def plain_call(pipe, row) -> np.ndarray:
    """What a user gets from plain diffusers with the row's seed and settings (the seed contract)."""
    out = pipe(
        row.prompt,
        generator=torch.Generator("cpu").manual_seed(int(row.seed)),
        height=int(row.height),
        width=int(row.width),
        num_inference_steps=int(row.steps),
        guidance_scale=float(row.guidance_scale),
        output_type="pt",
    ).images[0]
    return (out.float() * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def run_family(tmp_path, model: str, **gen):
    src = write_prompts(tmp_path / "p.parquet", PROMPTS)
    cfg = tiny_config(src, tmp_path / "out", generation={"steps": 2, **gen}, shards={"rows_per_shard": 2})
    summary = pipeline.run({**cfg, "model": model}, progress=False)
    assert summary["complete"] and summary["status_counts"]["ok"] == 6 == len(PROMPTS) * 2
    return read_output(tmp_path / "out")


@pytest.mark.parametrize("model", list(TINY_FAMILIES))
def test_tiny_family_runs_reproduces_with_plain_diffusers_and_verifies(tmp_path, model, capsys):
    df = run_family(tmp_path, model)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    g = run["config"]["generation"]
    fam = families.get(TINY_FAMILIES[model])
    assert g["family"] == fam.name and g["max_sequence_length"] == fam.max_sequence_length
    assert (df.guidance_scale == presets.get(model).guidance).all() and (df.width == 64).all()
    pipe = presets.get(model).build("cpu", None)
    pipe.set_progress_bar_config(disable=True)
    for row in df.iloc[[0, 3]].itertuples():  # two prompts, two shards
        diff = np.abs(decode(row.image["bytes"]).astype(int) - plain_call(pipe, row).astype(int)).max()
        assert diff <= 2, (row.prompt_id, row.sample_idx, diff)
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "out"), "--n", "2"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert int(last.split("max pixel difference ")[1].split("/")[0]) <= 2, last


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3", "tiny-pixart", "tiny-sana", "tiny-sdxl"])
def test_unique_prompt_encoding_equals_the_text_path(model):
    """Embeddings once per unique pair (encode.py) give what the pipeline's own text path gives."""
    pipe = presets.get(model).build("cpu", None)
    pipe.set_progress_bar_config(disable=True)
    g = presets.get(model).guidance
    batch = [Sample(i, f"p{i % 2}", i, PROMPTS[i % 2], "", 100 + i, 64, 64, 2, g) for i in range(3)]
    text = Generator(pipe, torch.device("cpu"), torch.float32, False).generate(batch)
    embeds = Generator(pipe, torch.device("cpu"), torch.float32, True).generate(batch)
    assert text.errors == embeds.errors == [None] * 3
    assert (text.images.int() - embeds.images.int()).abs().max() <= 2


def test_flux_true_cfg_applies_to_rows_with_a_negative_prompt_only():
    pipe = presets.get("tiny-flux").build("cpu", None)
    pipe.set_progress_bar_config(disable=True)
    batch = [
        Sample(0, "a", 0, PROMPTS[0], "", 7, 64, 64, 2, 3.5),
        Sample(1, "b", 0, PROMPTS[1], "blurry", 8, 64, 64, 2, 3.5),
    ]
    gen = Generator(pipe, torch.device("cpu"), torch.float32, True, true_cfg_scale=2.0)
    from pipeline.generate.diffusion import make_batches

    batches = make_batches(batch, 4, gen.by_negative)
    assert [len(b) for b in batches] == [1, 1]  # true CFG is per call: rows with and without apart
    got = [gen.generate(b).images[0] for b in batches]

    def plain(s, **kw):
        out = pipe(
            s.prompt,
            generator=torch.Generator("cpu").manual_seed(s.seed),
            height=64,
            width=64,
            num_inference_steps=2,
            guidance_scale=3.5,
            output_type="pt",
            **kw,
        ).images[0]
        return (out * 255).round().clamp(0, 255).to(torch.uint8)

    assert (got[0].int() - plain(batch[0]).int()).abs().max() <= 2
    with_cfg = plain(batch[1], negative_prompt="blurry", true_cfg_scale=2.0)
    assert (got[1].int() - with_cfg.int()).abs().max() <= 2
    assert (got[1].int() - plain(batch[1]).int()).abs().max() > 2  # the negative prompt did something


def test_family_resolution_defaults_and_fingerprints(tmp_path):
    def resolved(model, **gen):
        cfg = from_dict(
            {"input": "x.parquet", "output": str(tmp_path / "o"), "model": model, "generation": gen}
        )
        return resolve_job(cfg).config

    flux = resolved("tiny-flux").generation
    assert (flux.family, flux.steps, flux.guidance_scale, flux.max_sequence_length) == (
        "flux-dev",
        28,
        3.5,
        512,
    )
    sd = resolved("tiny")
    assert (sd.generation.family, sd.generation.steps, sd.generation.guidance_scale) == ("sd", 25, 7.5)
    # SD outputs keep their fingerprint: the family keys are hashed only where they mean something new
    assert not {"family", "max_sequence_length", "true_cfg_scale"} & set(
        sd.fingerprint_fields()["generation"]
    )
    assert "family" in resolved("tiny-flux").fingerprint_fields()["generation"]
    turbo = resolved("tiny-sdxl", family="sdxl-turbo").generation
    assert (turbo.steps, turbo.guidance_scale) == (1, 0.0)
    with pytest.raises(ValueError, match="unknown family 'flux'"):
        resolved("tiny", family="flux")


def test_few_step_family_samples_trailing_timesteps():
    from pipeline.generate.models import load_pipeline

    pipe = load_pipeline("tiny-sdxl", None, torch.device("cpu"), family="sdxl-lightning")
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    with pytest.raises(ValueError, match="loaded as StableDiffusionXLPipeline"):
        load_pipeline("tiny-sdxl", None, torch.device("cpu"), family="flux-dev")


def _save(model: str, path) -> str:
    pipe = presets.get(model).build("cpu", None)
    pipe.save_pretrained(str(path), safe_serialization=True)
    return str(path)


@pytest.mark.parametrize("model,family,native", [("tiny-flux", "flux-dev", 1024), ("tiny-sd3", "sd3", 64)])
def test_saved_flux_and_sd3_directories_run_and_reproduce(tmp_path, model, family, native):
    """A pipeline saved by plain diffusers (save_pretrained, safetensors, its own tokenizer files)."""
    from diffusers import DiffusionPipeline

    d = _save(model, tmp_path / "model")
    # from its configs alone: SD3's sample size x 8; FLUX's configs have none (its pipeline's 128 x 8)
    assert model_family(d) == family and native_resolution(d) == native
    df = run_family(tmp_path, d, width=64, height=64)
    pipe = DiffusionPipeline.from_pretrained(d)
    pipe.set_progress_bar_config(disable=True)
    row = next(df.itertuples())
    assert np.abs(decode(row.image["bytes"]).astype(int) - plain_call(pipe, row).astype(int)).max() <= 2


def test_flux_schnell_is_told_from_its_missing_guidance_embedding(tmp_path):
    d = tmp_path / "schnell"
    _save("tiny-flux", d)
    cfg = json.loads((d / "transformer" / "config.json").read_text())
    (d / "transformer" / "config.json").write_text(json.dumps({**cfg, "guidance_embeds": False}))
    assert model_family(str(d)) == "flux-schnell"
    assert families.get("flux-schnell").steps == 4 and families.get("flux-schnell").guidance == 0.0


def test_unsupported_pipeline_class_is_exit_2_naming_the_supported_ones(tmp_path, capsys):
    d = tmp_path / "kandinsky"
    d.mkdir()
    (d / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    src = write_prompts(tmp_path / "p.parquet", PROMPTS)
    job = write_job(tmp_path / "job.yaml", {**tiny_config(src, tmp_path / "out"), "model": str(d)})
    assert main(["run", job, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'KandinskyV22Pipeline' is not supported" in err and "FluxPipeline" in err
    assert len(err.splitlines()) == 1 and not os.path.exists(tmp_path / "out" / "data")


@pytest.mark.slow
def test_flux_two_ray_workers_killed_and_resumed_equal_an_uninterrupted_inline_run(ray_cluster, tmp_path):
    """The driver of a two-worker Ray run of FLUX is SIGKILLed after two shards commit; the rerun (Ray,
    two workers) commits the rest, and every PNG equals an uninterrupted inline run's, byte for byte."""
    src = write_prompts(tmp_path / "p.parquet", PROMPTS * 2)
    base = tiny_config(src, tmp_path / "inline", generation={"steps": 2}, shards={"rows_per_shard": 1})
    base["model"] = "tiny-flux"
    address = ray_cluster.get_runtime_context().gcs_address
    killed = {
        **base,
        "output": str(tmp_path / "killed"),
        "ray": {"executor": "ray", "num_workers": 2, "address": address},
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "run",
            write_job(tmp_path / "job.yaml", killed),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done_before = kill_after_markers(proc, tmp_path / "killed", 2)
    assert 2 <= done_before < 6, "the kill did not land mid-run"
    resumed = pipeline.run(killed, progress=False)
    assert resumed["complete"] and resumed["committed_shards"] == done_before
    assert pipeline.run(base, progress=False)["complete"]
    a, b = read_output(tmp_path / "inline"), read_output(tmp_path / "killed")
    ka = {(r.prompt_id, r.sample_idx): (r.seed, r.image["bytes"]) for r in a.itertuples()}
    kb = {(r.prompt_id, r.sample_idx): (r.seed, r.image["bytes"]) for r in b.itertuples()}
    assert len(ka) == 12 and ka == kb  # same keys, seeds and PNG bytes: nothing missing, nothing twice


def test_report_compares_a_tiny_sdxl_run_with_a_tiny_flux_run_of_the_same_prompts(tmp_path, capsys):
    """HEIM-style: the same prompts through two families, paired by prompt id and sample index."""
    shapes = ["a red circle", "a blue square", "a green triangle"] * 2
    src = write_prompts(tmp_path / "p.parquet", shapes, group=list("xyzxyz"))
    outs = []
    for model in ("tiny-sdxl", "tiny-flux"):
        cfg = tiny_config(
            src,
            tmp_path / model,
            generation={"steps": 2},
            scoring={"clip_model": "toy"},
            probes={"attributes": ["toyworld"]},
        )
        assert pipeline.run({**cfg, "model": model}, progress=False)["complete"]
        outs.append(str(tmp_path / model))
    page = tmp_path / "c.html"
    argv = ["report", "--compare", *outs, "--attribute", "colour", "--group-by", "group", "-o", str(page)]
    assert main(argv) == 0, capsys.readouterr().err
    html = page.read_text()
    assert "paired (the same prompt ids in both runs" in html and "B − A" in html


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_lora_on_a_transformer_family_changes_the_images_and_verifies(tmp_path, model, capsys):
    """A LoRA saved by diffusers' own FluxPipeline/SD3 save_lora_weights, fused through lora.path."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = presets.get(model).build("cpu", None)
    adapter = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False)
    pipe.transformer.add_adapter(adapter)  # random A and B: a LoRA that visibly changes the images
    lora_dir = tmp_path / "lora"
    type(pipe).save_lora_weights(
        str(lora_dir), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer)
    )
    src = write_prompts(tmp_path / "p.parquet", PROMPTS[:2])
    cfg = {**tiny_config(src, tmp_path / "plain", generation={"steps": 2}), "model": model}
    with_lora = {**cfg, "output": str(tmp_path / "lora-out"), "lora": {"path": str(lora_dir), "scale": 1.0}}
    assert (
        pipeline.run(cfg, progress=False)["complete"] and pipeline.run(with_lora, progress=False)["complete"]
    )
    a, b = read_output(tmp_path / "plain"), read_output(tmp_path / "lora-out")
    diff = max(
        np.abs(decode(x).astype(int) - decode(y).astype(int)).max()
        for x, y in zip(a.image.map(lambda i: i["bytes"]), b.image.map(lambda i: i["bytes"]))
    )
    assert diff > 2  # the LoRA was applied
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "lora-out"), "--n", "2"]) == 0  # batch 1 here, 3 in the run
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert int(last.split("max pixel difference ")[1].split("/")[0]) <= 2, last


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3", "tiny-pixart", "tiny-sana"])
def test_regional_compile_wraps_every_transformer_block(model):
    """accel.compile_scope: regional on a transformer family: its repeated blocks (FLUX names them;
    SD3, PixArt-Σ and Sana do not, so each block compiles in place). Compilation itself is lazy."""
    from pipeline.generate.accel import compile_denoiser

    pipe = presets.get(model).build("cpu", None)
    compile_denoiser(pipe, "regional", "default", 2)
    blocks = [
        b
        for n in ("transformer_blocks", "single_transformer_blocks")
        for b in getattr(pipe.transformer, n, ())
    ]
    assert blocks and all(b._compiled_call_impl is not None for b in blocks)
