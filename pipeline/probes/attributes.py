"""Attribute sets for the probes (docs/AUDIT.md "Per-image columns"): YAML with class prompts, abstain
margins, an optional subject detector and caveats. Pure YAML (no torch), so the driver can
validate and describe them before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.probes.safety import read_yaml_data


@dataclass
class AttributeSpec:
    """One probed attribute: class name → its CLIP prompts, the abstain margin, an optional subject
    detector ({"present": [...], "absent": [...]}) and the text a report must show beside results."""

    name: str
    classes: dict[str, list[str]]
    abstain_margin: float = 0.0
    subject: dict[str, list[str]] | None = None
    description: str = ""
    caveats: str = ""

    @property
    def class_names(self) -> list[str]:
        return list(self.classes)

    def __post_init__(self):
        where = f"attribute {self.name!r}"
        if not isinstance(self.classes, dict) or len(self.classes) < 2:
            raise ValueError(f"{where}: needs at least 2 classes, got {self.classes!r}")
        for c, prompts in self.classes.items():
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"{where}: class {c!r} needs a non-empty list of prompts, got {prompts!r}")
        if not 0 <= float(self.abstain_margin) < 1:
            raise ValueError(f"{where}: abstain_margin must be in [0, 1), got {self.abstain_margin!r}")
        if self.subject is not None and (
            set(self.subject) != {"present", "absent"} or not all(self.subject.values())
        ):
            raise ValueError(
                f"{where}: subject needs non-empty 'present' and 'absent' lists, got {self.subject!r}"
            )


@dataclass
class AttributeSet:
    name: str
    attributes: dict[str, AttributeSpec] = field(default_factory=dict)
    description: str = ""
    source: str = ""


def load_attribute_set(name_or_path) -> AttributeSet:
    """Read an attribute set: a shipped name (``people``, ``toyworld`` in pipeline/data/attributes/)
    or a YAML path. A set-level ``subject`` (and ``caveats``) is inherited by attributes without one."""
    path, raw = read_yaml_data("attributes", name_or_path)
    attrs = raw.get("attributes") if isinstance(raw, dict) else None
    if not isinstance(attrs, dict) or not attrs:
        raise ValueError(f"{path}: needs a non-empty 'attributes' mapping, got {attrs!r}")
    out = AttributeSet(
        str(raw.get("name", path.stem)), {}, str(raw.get("description", "")).strip(), str(path)
    )
    for name, a in attrs.items():
        if not isinstance(a, dict):
            raise ValueError(f"{path}: attribute {name!r} must be a mapping, got {a!r}")
        unknown = set(a) - {"classes", "abstain_margin", "subject", "description", "caveats"}
        if unknown:
            raise ValueError(f"{path}: attribute {name!r} has unknown keys {sorted(unknown)}")
        out.attributes[name] = AttributeSpec(
            name=name,
            classes=a.get("classes"),
            abstain_margin=float(a.get("abstain_margin", 0.0)),
            subject=a.get("subject", raw.get("subject")),
            description=str(a.get("description", "")).strip(),
            caveats=str(a.get("caveats", raw.get("caveats", ""))).strip(),
        )
    return out
