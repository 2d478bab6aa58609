"""The resolved job: a JobConfig with every "auto"/null value decided, once, on the driver.

``JobConfig`` is what the user wrote; ``ResolvedJob`` is what runs. The driver builds it
(``pipeline.generate.resolve.resolve_job``: it needs facts about the model, such as its native size)
and everything downstream uses only it: the workers (it travels to Ray actors as a plain dict),
run.json and the fingerprint. Nothing after resolution asks "is this auto?".

What is resolved, and from what:
- ``generation.width/height`` null -> the model's native size (read from its configs);
- ``generation.family`` auto -> the model's family (its pipeline class: generate/families.py);
- ``generation.steps`` null -> the family's steps (25 for SD/SDXL, 28 FLUX-dev/SD3, 4 schnell, ...);
- ``generation.guidance_scale`` null -> the model's recommended scale (toy 1.0, SD/SDXL 7.5, else
  the family's pipeline default);
- ``generation.max_sequence_length`` null -> the family's pipeline default (None for CLIP-only);
- ``scoring.clip_model`` auto -> the CLIP that goes with the model (toy for toy, else tiny);
- ``probes.attributes`` auto -> ``attribute_sets`` (toyworld for the toy model, else none);
- ``safety.concepts`` auto -> ``concept_list`` (toyworld for the toy model, else none);
- the model spec -> ``model_kind`` (preset, file, dir, url, hub: generate/models.py model_kind);
- the limits a row is checked against -> ``train_timesteps`` (the scheduler's, read from its config
  without loading; None only for a hub id, whose workers read it from the loaded scheduler once).

Decided where they run, on purpose: ``ray.num_workers: auto`` (re-counted as GPUs join an autoscaling
cluster: ray_pool.py), GPUs per worker (what the cluster has when the pool starts) and
``accel.encode_unique_prompts: null`` (on where the worker's device is CUDA: the driver may have no
GPU); each in one place (ray_pool.ActorPool.start, worker.build_generator).

The fingerprint hashes the resolved generation and scoring values and the *declared* probes and
safety values: "auto" there is a pure function of the model, which is hashed too, so both spell the
same job, and outputs written before this type existed keep their fingerprint and resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pipeline.core.config import ConfigError, JobConfig


@dataclass(frozen=True)
class ResolvedJob:
    config: JobConfig  # generation size/guidance and scoring.clip_model filled in
    attribute_sets: tuple[str, ...] = ()  # attribute sets probed on every image
    concept_list: Optional[str] = None  # safety concept list scored on every image
    model_kind: str = ""  # what `model` names: preset | file | dir | url | hub ("" = not resolved here)
    train_timesteps: Optional[int] = None  # the scheduler's training timesteps (caps steps); None = hub

    def __post_init__(self):
        unresolved = [
            k
            for k, v in (
                ("generation.width", self.config.generation.width),
                ("generation.height", self.config.generation.height),
                ("generation.guidance_scale", self.config.generation.guidance_scale),
                ("generation.steps", self.config.generation.steps),
            )
            if v is None
        ] + (["scoring.clip_model"] if self.config.scoring.clip_model == "auto" else [])
        unresolved += ["generation.family"] if self.config.generation.family == "auto" else []
        if unresolved:
            raise ValueError(f"ResolvedJob needs resolved values, got null/auto for {unresolved}")
        if not self.config.scoring.enabled and (
            self.attribute_sets or self.concept_list or self.config.safety.sd_checker
        ):
            raise ConfigError(
                "probes and safety concepts need scoring.enabled: true (they reuse its CLIP "
                f"forward); resolved attribute sets {list(self.attribute_sets)}, concepts "
                f"{self.concept_list!r}: set probes.attributes: [] and safety.concepts: null"
            )

    @property
    def probed(self) -> bool:
        """Whether images get probe or safety columns beyond the CLIP score."""
        return bool(self.attribute_sets or self.concept_list or self.config.safety.sd_checker)

    def fingerprint_fields(self) -> dict:
        return self.config.fingerprint_fields()

    def fingerprint(self) -> str:
        return self.config.fingerprint()

    def redacted(self) -> dict:
        """The config as run.json stores it (secrets replaced)."""
        return self.config.redacted()

    def resolved_probes(self) -> dict:
        """What "auto" resolved to, stored in run.json beside the config."""
        return {"attribute_sets": list(self.attribute_sets), "concept_list": self.concept_list}

    # ---- transport to workers (Ray actors get a plain dict, never a pickled model object) ----
    def to_dict(self) -> dict:
        return {
            "config": self.config.model_dump(),
            "attribute_sets": list(self.attribute_sets),
            "concept_list": self.concept_list,
            "model_kind": self.model_kind,
            "train_timesteps": self.train_timesteps,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ResolvedJob":
        return cls(
            JobConfig.model_validate(d["config"]),
            tuple(d["attribute_sets"]),
            d["concept_list"],
            d.get("model_kind", ""),
            d.get("train_timesteps"),
        )
