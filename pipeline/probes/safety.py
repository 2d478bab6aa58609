"""Safety configuration, pure Python: prompt screening rules and CLIP concept lists (YAML).

The detectors produce raw numbers (docs/AUDIT.md, "Per-image columns": safety scores are kept as
numbers; the flag / blur / drop policy is a separate step). This module holds what needs no model:
``PromptScreen`` (term lists and regular expressions, checked before any GPU work) and
``load_concepts`` (concept prompts with per-concept thresholds for ``probes.concept_flags``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # pipeline/data: shipped YAML


def read_yaml_data(kind: str, name_or_path) -> tuple[Path, dict]:
    """(path, parsed YAML) for a shipped name (pipeline/data/<kind>/<name>.yaml) or a file path."""
    import yaml

    p = Path(str(name_or_path))
    if not p.is_file():
        shipped = DATA_DIR / kind / f"{name_or_path}.yaml"
        if not shipped.is_file():
            names = sorted(f.stem for f in (DATA_DIR / kind).glob("*.yaml"))
            raise ValueError(f"{kind} set {str(name_or_path)!r} is neither a file nor one of {names}")
        p = shipped
    raw = yaml.safe_load(p.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: expected a YAML mapping at the top level, got {type(raw).__name__}")
    return p, raw


def _normal(text: str) -> str:
    """NFKC (full-width and compatibility letters become plain ones) and whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _term_regex(term: str) -> str:
    """Whole-word pattern for a term: not inside a longer word, any whitespace between its words.

    Look-arounds rather than \\b, so terms that start or end with punctuation ("18+") work too.
    """
    words = [re.escape(w) for w in _normal(term).split()]
    if not words:
        raise ValueError(f"empty screening term {term!r}")
    return r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)"


class PromptScreen:
    """Prompt screening from a config ``{"terms": {rule: [term, ...]}, "patterns": {rule: regex}}``.

    Matching is case-insensitive; terms match whole words only ("gun" blocks "a gun", not "begun");
    patterns are Python regular expressions used as written. Rules are tried in config order (terms
    first, then patterns) and the first match is reported: ``check`` → (blocked, reason) with reason
    "<rule>: <matched text>".
    """

    def __init__(self, config: dict | None):
        config = config or {}
        unknown = set(config) - {"terms", "patterns", "description"}
        if unknown:
            raise ValueError(f"screening config has unknown keys {sorted(unknown)}")
        self.rules: list[tuple[str, re.Pattern]] = []
        for rule, terms in (config.get("terms") or {}).items():
            if isinstance(terms, str) or not isinstance(terms, list):
                raise ValueError(f"screening rule {rule!r}: terms must be a list, got {terms!r}")
            if terms:
                self.rules.append(
                    (str(rule), re.compile("|".join(_term_regex(str(t)) for t in terms), re.IGNORECASE))
                )
        for rule, pattern in (config.get("patterns") or {}).items():
            try:
                self.rules.append((str(rule), re.compile(str(pattern), re.IGNORECASE)))
            except re.error as e:
                raise ValueError(
                    f"screening rule {rule!r}: bad regular expression {pattern!r}: {e}"
                ) from None

    @classmethod
    def load(cls, name_or_path="default") -> PromptScreen:
        """From a shipped screening set (pipeline/data/screening/<name>.yaml) or a YAML path."""
        return cls(read_yaml_data("screening", name_or_path)[1])

    def check(self, prompt: str) -> tuple[bool, str | None]:
        """(True, "<rule>: <matched text>") for the first matching rule, else (False, None)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {prompt!r}")
        text = _normal(prompt)
        for rule, rx in self.rules:
            m = rx.search(text)
            if m:
                return True, f"{rule}: {m.group(0)!r}"
        return False, None

    def check_many(self, prompts) -> list[tuple[bool, str | None]]:
        return [self.check(p) for p in prompts]


@dataclass(frozen=True)
class Concept:
    name: str
    prompts: tuple[str, ...]
    threshold: float
    special_care: bool = False


@dataclass(frozen=True)
class ConceptSet:
    """Concepts for ``probes.concept_flags``; ``calibrated`` False means thresholds are placeholders."""

    name: str
    concepts: tuple[Concept, ...]
    calibrated: bool
    clip_model: str | None = None
    adjustment: float = 0.01
    source: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    @property
    def thresholds(self) -> list[float]:
        return [c.threshold for c in self.concepts]

    @property
    def special_care(self) -> list[bool]:
        return [c.special_care for c in self.concepts]


def load_concepts(name_or_path) -> ConceptSet:
    """Read a concept list: {name, calibrated, clip_model, adjustment, concepts: {concept: {prompts,
    threshold, special_care}}} from pipeline/data/safety/<name>.yaml or a path."""
    path, raw = read_yaml_data("safety", name_or_path)
    items = raw.get("concepts")
    if not isinstance(items, dict) or not items:
        raise ValueError(f"{path}: needs a non-empty 'concepts' mapping, got {items!r}")
    concepts = []
    for name, c in items.items():
        prompts = c.get("prompts") if isinstance(c, dict) else None
        if (
            not prompts
            or isinstance(prompts, str)
            or not all(isinstance(p, str) and p.strip() for p in prompts)
        ):
            raise ValueError(f"{path}: concept {name!r} needs a list of prompts, got {prompts!r}")
        thr = c.get("threshold")
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not -1 <= thr <= 1:
            raise ValueError(f"{path}: concept {name!r} threshold must be a cosine in [-1, 1], got {thr!r}")
        concepts.append(Concept(str(name), tuple(prompts), float(thr), bool(c.get("special_care", False))))
    if all(c.special_care for c in concepts):
        raise ValueError(f"{path}: every concept is special_care, so nothing could ever be flagged")
    return ConceptSet(
        str(raw.get("name", path.stem)),
        tuple(concepts),
        bool(raw.get("calibrated", False)),
        raw.get("clip_model"),
        float(raw.get("adjustment", 0.01)),
        str(path),
    )
