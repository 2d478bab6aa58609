import json

import pytest
import torch

from pipeline.generate.diffusion import Generator, Sample
from pipeline.generate.models import ModelError, build_tiny_pipeline, check_model_spec, load_pipeline
from pipeline.generate.tokenizer import clip_tokenizer


def one_image(pipe):
    s = Sample(0, "p", 0, "a red circle", "", 123, 64, 64, 3, 4.0)
    return Generator(pipe, torch.device("cpu"), torch.float32).generate([s]).images


def test_tiny_is_deterministic_and_sd_shaped():
    a, b = build_tiny_pipeline(), build_tiny_pipeline()
    for (n, p), (_, q) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(p, q), n
    assert a.vae_scale_factor == 8 and a.unet.config.in_channels == 4
    assert type(a).__name__ == "StableDiffusionPipeline"


def test_real_clip_tokenizer():
    tok = clip_tokenizer()
    ids = tok("a photo of a red circle").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 736, 7117, 49407] and len(tok) == 49408
    import open_clip

    assert open_clip.tokenize(["a photo of a red circle"])[0][:8].tolist() == ids


def test_local_directory_roundtrip_safetensors_only(tmp_path):
    tiny = build_tiny_pipeline()
    tiny.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert "diffusion_pytorch_model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert check_model_spec(str(tmp_path / "m")) == "dir"
    loaded = load_pipeline(str(tmp_path / "m"), torch.float32, "cpu")
    assert torch.equal(one_image(tiny), one_image(loaded))
    ddim = load_pipeline(str(tmp_path / "m"), torch.float32, "cpu", scheduler="ddim")
    assert type(ddim.scheduler).__name__ == "DDIMScheduler"
    assert ddim.scheduler.config.beta_schedule == "scaled_linear"  # the model's schedule is kept


def test_pickled_weights_are_never_loaded(tmp_path, monkeypatch):
    """Only safetensors: a directory of .bin (pickle) weights is refused for that reason, and no
    pickle is ever unpickled on the way (torch.load is never called)."""
    tiny = build_tiny_pipeline()
    tiny.save_pretrained(tmp_path / "m", safe_serialization=False)
    calls = []
    monkeypatch.setattr(
        torch, "load", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(AssertionError)
    )
    with pytest.raises(ModelError, match=r"could not load model .*no file named \S+\.safetensors"):
        load_pipeline(str(tmp_path / "m"), torch.float32, "cpu")
    assert calls == []


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("/no/such/dir", "no such local directory"),
        ("org/model-x", "hub is offline"),
        ("bad spec with spaces", "not a preset"),
    ],
)
def test_spec_errors(spec, needle):
    with pytest.raises(ModelError, match=needle):
        check_model_spec(spec)


def test_directory_without_model_index(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps({}))
    with pytest.raises(ModelError, match="without model_index.json"):
        check_model_spec(str(tmp_path / "x"))


def test_native_resolution_from_configs(tmp_path):
    from pipeline.core.config import from_dict
    from pipeline.generate.models import native_resolution
    from pipeline.generate.resolve import resolve_defaults

    build_tiny_pipeline().save_pretrained(tmp_path / "m")
    assert native_resolution(str(tmp_path / "m")) == 64 == native_resolution("tiny")
    assert native_resolution("sd15-random") == 512 and native_resolution("org/unknown") == 512
    cfg = resolve_defaults(from_dict({"input": "x", "output": "y", "model": str(tmp_path / "m")}))
    assert (cfg.generation.width, cfg.generation.height) == (64, 64)
    cfg = resolve_defaults(
        from_dict({"input": "x", "output": "y", "model": "tiny", "generation": {"width": 32}})
    )
    assert (cfg.generation.width, cfg.generation.height) == (32, 64)


def test_model_dependent_defaults_guidance_and_scorer():
    """guidance null = the model's recommendation (toy 1.0: the setting that reproduces its world);
    clip_model auto = the CLIP that goes with the model. Explicit values always win."""
    from pipeline.core.config import from_dict
    from pipeline.generate.resolve import resolve_defaults

    base = {"input": "x", "output": "y"}
    toy = resolve_defaults(from_dict({**base, "model": "toy"}))
    assert (toy.generation.guidance_scale, toy.scoring.clip_model) == (1.0, "toy")
    assert (toy.generation.width, toy.generation.height) == (64, 64)
    tiny = resolve_defaults(from_dict({**base, "model": "tiny"}))
    assert (tiny.generation.guidance_scale, tiny.scoring.clip_model) == (7.5, "tiny")
    mine = resolve_defaults(
        from_dict(
            {**base, "model": "toy", "generation": {"guidance_scale": 4.0}, "scoring": {"clip_model": "tiny"}}
        )
    )
    assert (mine.generation.guidance_scale, mine.scoring.clip_model) == (4.0, "tiny")
    assert toy.fingerprint() != mine.fingerprint()


def test_concept_list_on_another_clip_warns_and_is_recorded(tmp_path):
    from pipeline.core.config import from_dict
    from pipeline.generate.resolve import check_concept_clip, describe_probes, resolve_job

    job = resolve_job(
        from_dict({"input": "x", "output": "y", "model": "tiny", "safety": {"concepts": "toyworld"}})
    )
    info = describe_probes(job)
    with pytest.warns(UserWarning, match="calibrated on clip_model 'toy' but scored with 'tiny'"):
        check_concept_clip(job.config, info)
    assert "do not apply" in info["concepts"]["warning"]
    ok = resolve_job(from_dict({"input": "x", "output": "y", "model": "toy"}))
    info = describe_probes(ok)
    check_concept_clip(ok.config, info)
    assert "warning" not in info["concepts"]


def test_resolved_job_decides_every_auto_once():
    """ResolvedJob holds no auto/null; the fingerprint of a resolved job is the one of its declared
    probes (auto is a function of the model), so outputs made before the type existed still resume."""
    from pipeline.core.config import from_dict
    from pipeline.core.job import ResolvedJob
    from pipeline.generate.resolve import resolve_job

    base = {"input": "x", "output": "y", "model": "toy"}
    toy = resolve_job(from_dict(base))
    assert toy.attribute_sets == ("toyworld",) and toy.concept_list == "toyworld" and toy.probed
    g = toy.config.generation
    assert (g.width, g.height, g.guidance_scale, toy.config.scoring.clip_model) == (64, 64, 1.0, "toy")
    assert toy.config.probes.attributes == "auto"  # declared value kept for the fingerprint
    assert ResolvedJob.from_dict(toy.to_dict()) == toy
    explicit = resolve_job(
        from_dict({**base, "probes": {"attributes": ["people"]}, "safety": {"concepts": None}})
    )
    assert explicit.attribute_sets == ("people",) and explicit.concept_list is None
    assert explicit.fingerprint() != toy.fingerprint()
    tiny = resolve_job(from_dict({**base, "model": "tiny"}))
    assert tiny.attribute_sets == () and tiny.concept_list is None and not tiny.probed
    off = resolve_job(from_dict({**base, "scoring": {"enabled": False}}))  # auto probes need the CLIP
    assert off.attribute_sets == () and off.concept_list is None
    with pytest.raises(ValueError, match="generation.width"):
        ResolvedJob(from_dict(base))
