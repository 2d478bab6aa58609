"""sdgen: prompt sets -> synthetic image datasets with Stable Diffusion, at cluster scale, audited.

Python API (the same as `sdgen run`):

    import pipeline
    summary = pipeline.run({"input": "prompts.parquet", "output": "out/", "model": "toy"})
"""

from __future__ import annotations

from pipeline.core.version import __version__  # the one version source (core/version.py)

__all__ = ["__version__", "run", "load_config"]


def load_config(source, overrides=None):
    """A validated JobConfig from a YAML path, a dict, or a JobConfig (overrides: ["k.k=v", ...])."""
    from pipeline.core import config

    if isinstance(source, config.JobConfig):
        return config.from_dict(source.model_dump(), overrides) if overrides else source
    if isinstance(source, dict):
        return config.from_dict(source, overrides)
    return config.load(source, overrides)


def run(source, overrides=None, progress: bool = True, events=None) -> dict:
    """Run (or resume) a job from a YAML path, a dict or a JobConfig; returns the run summary. ``events``:
    an EventSink (pipeline/generate/events.py) for run, worker and shard events; None drops them."""
    from pipeline.launch import run as launch

    return launch(load_config(source, overrides), progress=progress, events=events)
