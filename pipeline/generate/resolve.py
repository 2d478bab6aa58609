"""Resolution and the up-front checks of a job, on the driver, before any model loads: every "auto"/null
decided once (core/job.py: ResolvedJob), the model, scorer, probe sets, limits and output checked, and
what run.json records. Everything here fails as bad config or input (exit 2)."""

from __future__ import annotations

import datetime as dt

from pipeline.core.config import ConfigError, JobConfig
from pipeline.core.job import ResolvedJob
from pipeline.core.storage import Output, OutputError, library_versions
from pipeline.generate import families
from pipeline.generate.inputs import MAX_LISTED_PROBLEMS, InputError, duplicate_report, row_limits
from pipeline.generate.models import (
    check_model_spec,
    model_family,
    native_resolution,
    recommended_guidance,
    train_timesteps,
)
from pipeline.generate.presets import default_attribute_sets, default_clip_model, default_concept_list


def resolve_defaults(cfg: JobConfig) -> JobConfig:
    """Fill values that depend on the model, before anything is fingerprinted or stored in run.json:
    family auto = the model's (families.py), width/height null = its native size, steps and guidance
    null = its family's (a preset's own guidance), max_sequence_length null = its pipeline class's,
    clip_model auto = the CLIP that goes with it (toy for toy)."""
    g, sc = cfg.generation, cfg.scoring
    fam = families.get(model_family(cfg.model, g.family, cfg.storage, cfg.single_file_config))
    update = {"family": fam.name}
    if g.width is None or g.height is None:
        size = native_resolution(cfg.model, cfg.storage, cfg.single_file_config)
        update.update(width=g.width or size, height=g.height or size)
    if g.steps is None:
        update["steps"] = fam.steps
    if g.guidance_scale is None:
        update["guidance_scale"] = recommended_guidance(cfg.model, fam.name)
    if g.max_sequence_length is None:
        update["max_sequence_length"] = fam.max_sequence_length
    if sc.clip_model == "auto":
        sc = sc.model_copy(update={"clip_model": default_clip_model(cfg.model)})
    return cfg.model_copy(update={"generation": g.model_copy(update=update), "scoring": sc})


def _auto_probes(cfg: JobConfig) -> tuple[tuple[str, ...], str | None]:
    """probes.attributes / safety.concepts "auto": the preset's own sets (the toy world's for `toy`,
    whose CLIP is calibrated for them), none for other models, and none when scoring is off (they
    reuse its forward)."""
    on = cfg.scoring.enabled
    a, c = cfg.probes.attributes, cfg.safety.concepts
    attribute_sets = (default_attribute_sets(cfg.model) if on else ()) if a == "auto" else tuple(a)
    concept_list = (default_concept_list(cfg.model) if on else None) if c == "auto" else c
    return attribute_sets, concept_list


def resolve_job(cfg: JobConfig) -> ResolvedJob:
    """Decide every "auto"/null value once (core/job.py lists them); checks the model spec first."""
    kind = check_model_spec(cfg.model, cfg.storage)
    cfg = resolve_defaults(cfg)
    attribute_sets, concept_list = _auto_probes(cfg)
    check_audit_attributes(cfg, attribute_sets)
    return ResolvedJob(cfg, attribute_sets, concept_list, kind, train_timesteps(cfg.model, cfg.storage))


def check_audit_attributes(cfg: JobConfig, attribute_sets) -> None:
    """audit.attributes must name attributes of the sets this run probes: said before any work, not
    when the first audit finds nothing to read."""
    if not cfg.audit.attributes:
        return
    from pipeline.probes.attributes import load_attribute_set

    try:
        probed = [a for s in attribute_sets for a in load_attribute_set(s).attributes]
    except (ValueError, OSError):
        return  # a set that does not load is reported by the probes' own setup, with its path
    for a in cfg.audit.attributes:
        if a not in probed:
            raise ConfigError(
                f"audit.attributes: {a!r} is not an attribute this run probes (probes.attributes "
                f"{list(attribute_sets)} hold {probed})"
            )


def check_concept_clip(cfg: JobConfig, probe_info: dict) -> None:
    """A concept list's thresholds are cosines of the CLIP it was calibrated on; under another CLIP its
    flags mean nothing. Warn, and say so in run.json (plumbing tests pair them on purpose)."""
    import warnings

    cs = probe_info.get("concepts") or {}
    want = cs.get("clip_model")
    if want and cfg.scoring.enabled and want != cfg.scoring.clip_model:
        cs["warning"] = (
            f"concept list {cs['name']!r} is calibrated on clip_model {want!r} but scored with "
            f"{cfg.scoring.clip_model!r}: its thresholds (safety_flagged) do not apply"
        )
        warnings.warn(cs["warning"], stacklevel=3)


def check_output_writable(output: Output) -> None:
    """A local output must be (or be creatable as) a writable directory: say so before any model loads
    instead of failing at the first commit. Object stores are checked by their first write."""
    import os

    if not output.local:
        return
    path = output.root
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output {output.url!r} is a file, not a directory; choose a directory path")
    probe = path
    while not os.path.exists(probe):  # the nearest existing folder is where it will be created
        probe = os.path.dirname(probe) or "."
    if not os.access(probe, os.W_OK | os.X_OK):
        ro = os.statvfs(probe).f_flag & os.ST_RDONLY
        raise OutputError(
            f"output {output.url!r} is not writable: {probe!r} is "
            + ("on a read-only filesystem" if ro else "not writable by this user")
            + "; choose another output or fix its permissions"
        )


def check_limits(job: ResolvedJob):
    """The resolved config against `limits` and the scheduler's training timesteps (resolved from its
    config, no model load); returns the RowLimits every row is checked against."""
    cfg = job.config
    g, lim = cfg.generation, cfg.limits
    limits = row_limits(cfg, job.train_timesteps)
    if g.steps > limits.max_steps:
        raise ConfigError(f"generation.steps {g.steps} exceeds {limits.steps_why} ({limits.max_steps})")
    if g.width * g.height > lim.max_pixels:
        raise ConfigError(
            f"generation.width x height = {g.width} x {g.height} = {g.width * g.height} pixels "
            f"exceeds limits.max_pixels ({lim.max_pixels})"
        )
    return limits


def describe_probes(job: ResolvedJob) -> dict:
    """Attribute sets, concept list and screening rules, validated from their YAML (no CLIP)."""
    import os

    from pipeline.probes.image import describe

    cfg = job.config
    if cfg.safety.sd_checker and not os.path.isdir(cfg.safety.sd_checker):
        raise ConfigError(f"safety.sd_checker {cfg.safety.sd_checker!r}: no such directory")
    try:
        return describe(job.attribute_sets, job.concept_list, cfg.safety.screening)
    except (ValueError, OSError) as e:
        raise ConfigError(f"probes/safety configuration: {e}") from None


def raise_on_bad_rows(cfg: JobConfig, scan, in_fs) -> None:
    if scan.rows == 0:
        raise InputError(f"input {cfg.input!r} has no rows")
    if scan.problems and cfg.shards.on_invalid_row == "error":
        listed = "\n".join(f"  {p}" for p in scan.problems[:MAX_LISTED_PROBLEMS])
        more = len(scan.problems) - MAX_LISTED_PROBLEMS
        raise InputError(
            f"{len(scan.problems)} input row(s) are invalid:\n{listed}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\n(fix them, or set shards.on_invalid_row: mark to emit them as status 'invalid')"
        )
    if scan.images > cfg.limits.max_images:
        raise InputError(
            f"the input asks for {scan.images} images, more than limits.max_images "
            f"({cfg.limits.max_images}); raise the limit or split the input"
        )
    if scan.duplicates and cfg.shards.duplicates == "error":
        raise InputError(
            f"{scan.duplicates} input row(s) repeat an earlier prompt_id "
            f"(shards.duplicates: error):\n{duplicate_report(in_fs, scan)}"
        )


def run_info(job: ResolvedJob, probes: dict) -> dict:
    return {
        "config": job.redacted(),
        "resolved": job.resolved_probes(),
        "fingerprint": job.fingerprint(),
        "probes": probes,
        "fingerprint_fields": job.fingerprint_fields(),
        "versions": library_versions(),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
