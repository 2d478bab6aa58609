"""docs/CONFIG.md is generated from the config model (pipeline/core/config_doc.py) and must match it."""

from pathlib import Path

from pipeline.core import config_doc

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
REGENERATE = (
    "docs/CONFIG.md differs from the config model: regenerate it with `make docs` "
    "(python -m pipeline.core.config_doc > docs/CONFIG.md) and commit it"
)


def test_config_md_is_what_render_gives():
    assert DOC.is_file(), REGENERATE
    assert DOC.read_text(encoding="utf-8") == config_doc.render(), REGENERATE


def test_known_rows_with_default_and_the_fields_comment():
    rows = {line.split("`")[1]: line for line in config_doc.render().splitlines() if line.startswith("| `")}
    known = {  # key: its default cell and the start of the comment on its line in core/config.py, sections.py
        "generation.steps": ("`null`", "denoising steps"),
        "retry.attempts": ("`5`", "tries per storage call"),
        "audit.group_by": ("`[]`", "input columns (a × b)"),
        "audit.where": ("`[]`", "COL=VALUE filters"),
        "generation.height": ("`null`", "as `width`"),  # shares the comment block above width
        "input": ("required", "Parquet prompts"),
        "quota.accepted": ("required", "images per key"),
    }
    for key, (default, meaning) in known.items():
        assert key in rows, f"no row for {key}"
        assert rows[key].startswith(f"| `{key}` | {default} | {meaning}"), rows[key]


def test_every_config_key_has_a_row_and_a_meaning():
    rows = [line for line in config_doc.render().splitlines() if line.startswith("| `")]
    keys = [r.split("`")[1] for r in rows]
    assert len(keys) == len(set(keys))
    for section in (
        "storage",
        "generation",
        "scoring",
        "shards",
        "write",
        "ray",
        "probes",
        "safety",
        "mitigation",
        "lora",
        "accel",
        "limits",
        "retry",
        "audit",
        "quota",
    ):
        assert any(k.startswith(f"{section}.") for k in keys), section
    assert "mitigation.variants[].template" in keys
    empty = [r.split("`")[1] for r in rows if r.rstrip().endswith("|  |")]
    assert not empty, f"keys without a comment in the config model: {empty}"
