import pytest

from pipeline.core import config as C

BASE = {"input": "p.parquet", "output": "out", "model": "tiny"}


def test_required_keys_and_defaults():
    cfg = C.from_dict(BASE)
    for key in (
        "images_per_prompt",
        "steps",
        "guidance_scale",
        "width",
        "height",
        "batch_size",
        "seed",
        "scheduler",
        "dtype",
    ):
        assert hasattr(cfg.generation, key)
    assert cfg.scoring.clip_model == "auto" and cfg.generation.guidance_scale is None  # resolved per model
    assert cfg.ray.num_workers == 1 and cfg.ray.address is None and cfg.ray.num_gpus_per_worker is None
    with pytest.raises(C.ConfigError, match="output: required key is missing"):
        C.from_dict({"input": "p", "model": "tiny"})


def test_unknown_key_named():
    with pytest.raises(C.ConfigError, match=r"generation\.stepz: unknown key"):
        C.from_dict({**BASE, "generation": {"stepz": 3}})
    with pytest.raises(C.ConfigError, match=r"colour: unknown key"):
        C.from_dict({**BASE, "colour": "red"})


def test_overrides_parse_yaml_values_and_nest():
    cfg = C.from_dict(
        BASE, ["generation.steps=7", "ray.num_gpus_per_worker=0.5", "generation.negative_prompt=blurry, low"]
    )
    assert cfg.generation.steps == 7 and cfg.ray.num_gpus_per_worker == 0.5
    assert cfg.generation.negative_prompt == "blurry, low"
    with pytest.raises(C.ConfigError, match="dotted.key=value"):
        C.from_dict(BASE, ["generation.steps"])
    with pytest.raises(C.ConfigError, match=r"generation\.bogus: unknown key"):
        C.from_dict(BASE, ["generation.bogus=1"])


@pytest.mark.parametrize(
    "override,needle",
    [
        ("generation.width=100", "multiple of 8"),
        ("generation.images_per_prompt=-1", "images_per_prompt must be >= 1"),
        ("generation.guidance_scale=.nan", "guidance_scale must be a finite"),
        ("generation.scheduler=heun", "unknown scheduler 'heun'"),
        ("generation.dtype=int8", "unknown dtype 'int8'"),
        ("ray.num_gpus_per_worker=-1", "num_gpus_per_worker must be >= 0"),
        ("shards.rows_per_shard=0", "rows_per_shard must be >= 1"),
        ("shards.duplicates=merge", "shards.duplicates"),
    ],
)
def test_bad_values_echo_key_and_value(override, needle):
    with pytest.raises(C.ConfigError) as e:
        C.from_dict(BASE, [override])
    assert needle in str(e.value)
    assert override.split("=")[1].strip(".") in str(e.value) or "nan" in str(e.value)


def test_fingerprint_ignores_execution_knobs_only():
    a = C.from_dict(BASE)
    assert (
        a.fingerprint() == C.from_dict(BASE, ["generation.batch_size=1", "ray.num_workers=4"]).fingerprint()
    )
    assert a.fingerprint() != C.from_dict(BASE, ["generation.steps=9"]).fingerprint()
    assert a.fingerprint() != C.from_dict(BASE, ["shards.rows_per_shard=7"]).fingerprint()


def test_secrets_redacted():
    cfg = C.from_dict(
        {**BASE, "storage": {"key": "AKIA123", "secret": "s3cr3t", "options": {"token": "t0k"}}}
    )
    text = str(cfg.redacted())
    assert "s3cr3t" not in text and "AKIA123" not in text and "t0k" not in text


def test_yaml_file_errors(tmp_path):
    with pytest.raises(C.ConfigError, match="not found"):
        C.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(C.ConfigError, match="not valid YAML"):
        C.load(bad)


def test_demo_config_is_valid():
    cfg = C.load("configs/demo.yaml")
    assert cfg.model == "toy"
