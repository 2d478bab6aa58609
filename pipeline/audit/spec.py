"""What an audit asks: `AuditSpec`, the one place the audit's defaults live (docs/AUDIT.md).

`run_audit(src, spec)`, `run_compare(a, b, spec)`, the report pages and the CLI take a spec instead of
long parameter lists; the statistics below them default to the same constants. Torch-free, no imports
of sdgen: the statistics import it too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BOOTSTRAP = 2000  # bootstrap replicates of every interval and null floor (docs/AUDIT.md "Uncertainty")
MIN_N = 30  # below this many non-abstained images a group shows its null floor, not a disparity
LEVEL = 0.95  # confidence level of every interval, and 1 − level the BH flag threshold
CALIBRATION_BOOTSTRAP = 400  # replicates of error-corrected shares at most (an EM fit each)
# The audit method's number, stored with each audited attribute in metrics.json. Bump it whenever the
# same rows and settings would now get other numbers, so `sdgen report` re-audits a stored audit rather
# than showing intervals this sdgen no longer computes. 1 (or none stored): before wave 3's issue 22;
# 2: calibrated beta-binomial share intervals with the model check, MOVER D² differences.
AUDIT_METHOD = 2


def older_method(old: int) -> str:
    """How the report, the card and `sdgen audit` name an older audit method: one wording."""
    return f"an older audit method ({old}; this sdgen's is {AUDIT_METHOD})"


def stale_entries(metrics) -> list[tuple[str, int]]:
    """(attribute, its method) for each attribute in metrics.json that an older audit method wrote."""
    entries = sorted(((metrics or {}).get("attributes") or {}).items())
    return [(a, e.get("audit_method", 1)) for a, e in entries if e.get("audit_method", 1) < AUDIT_METHOD]


@dataclass(frozen=True)
class ProbeSpec:
    """Post-hoc probing of stored images: used only for attributes the run did not probe."""

    attribute_set: str | None = None  # set name or YAML path (given, it replaces in-run labels)
    clip_model: str | None = None  # CLIP for post-hoc probes; None: run.json scoring.clip_model
    clip_weights: str | None = None  # local weights file for clip_model
    device: str = "auto"  # device for post-hoc probes (auto = cuda when present)

    def kwargs(self) -> dict:
        """As keyword arguments of `audit.data.attribute_labels` and `diversity_metrics`."""
        return asdict(self)


def _strings(v) -> tuple[str, ...]:
    """A column, attribute or COL=VALUE item given alone, or several: always a tuple."""
    return (v,) if isinstance(v, str) else tuple(v or ())


@dataclass(frozen=True)
class AuditSpec:
    """One audit's question and its settings; frozen (use dataclasses.replace for a variant)."""

    attributes: tuple[str, ...] = ()  # attributes to audit or compare (a page: empty = every labelled one)
    group_by: tuple[str, ...] = ()  # input columns, groups = value combinations (empty: a default applies)
    target: object = (
        "uniform"  # "uniform", {class: weight}, {"groups": ...} or a YAML path (runner.load_target)
    )
    level: float = LEVEL  # interval level
    bootstrap: int = BOOTSTRAP  # bootstrap replicates (B)
    min_n: int = MIN_N  # a group below this many images shows its floor only
    seed: int = 0  # RNG seed of bootstrap and null draws
    where: tuple[str, ...] = ()  # COL=VALUE items, all must hold (data.apply_where); empty = every row
    calibration: str | None = None  # LABELS file (prompt_id, sample_idx, label): error-corrected shares
    k: int | None = None  # P(≥1 unsafe in k images); None: the run's images_per_prompt
    # share intervals pool the between-prompt correlation over the attribute's groups where the groups
    # agree (pipeline/audit/betabinomial.py); False: every group's interval from its own prompts only
    pool_icc: bool = True
    diversity: bool = True  # Vendi / mean cosine per group (CLIP-encodes stored PNGs without embeddings)
    probe: ProbeSpec = field(default_factory=ProbeSpec)  # post-hoc probing options

    def __post_init__(self):
        for name in ("attributes", "group_by", "where"):
            object.__setattr__(self, name, _strings(getattr(self, name)))
