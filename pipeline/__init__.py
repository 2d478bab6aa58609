"""sdgen: prompt sets -> synthetic image datasets with Stable Diffusion, at cluster scale, audited.

Python API (the same as `sdgen run`):

    import pipeline
    summary = pipeline.run({"input": "prompts.parquet", "output": "out/", "model": "toy"})
"""
from __future__ import annotations

__version__ = "0.2.0"  # the one version source: the wheel's metadata, `sdgen --version`, run.json
__all__ = ["__version__", "run", "load_config"]


def load_config(source, overrides=None):
    """A validated JobConfig from a YAML path, a dict, or a JobConfig (overrides: ["k.k=v", ...])."""
    from pipeline.core import config
    if isinstance(source, config.JobConfig):
        return config.from_dict(source.model_dump(), overrides) if overrides else source
    if isinstance(source, dict):
        return config.from_dict(source, overrides)
    return config.load(source, overrides)


def run(source, overrides=None, progress: bool = True) -> dict:
    """Run (or resume) a job from a YAML path, a dict or a JobConfig; returns the run summary."""
    from pipeline.generate.driver import run_job
    from pipeline.tools.quota import run_quota

    cfg = load_config(source, overrides)
    return (run_quota if cfg.quota else run_job)(cfg, progress=progress)
