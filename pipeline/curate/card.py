"""The dataset card sdgen export writes (DEST/README.md): a Hugging Face YAML header (license to fill,
features, size, configs) and what a user of the data must know: model and settings, seeds, prompt
sources, the policy and dedup applied, the audit with its intervals when one exists, known limits.
"""

from __future__ import annotations

import json
import os

import yaml

from pipeline.audit.spec import older_method, stale_entries
from pipeline.core import layout
from pipeline.core.fmt import ci, num
from pipeline.core.storage import Output, read_frame, read_schema

SIZES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
]


def _feature(f: dict):
    """schema.hf_features' entry -> the card's YAML form (dtype / list)."""
    t = f.get("_type")
    if t == "Image":
        return "image"
    if t == "List":
        inner = _feature(f["feature"])
        return {"list": inner} if isinstance(inner, str) else {"list": inner}
    if t == "Value":
        return f["dtype"]
    return {"struct": [{"name": k, **_yaml_type(v)} for k, v in f.items()]}


def _yaml_type(f: dict) -> dict:
    v = _feature(f)
    return {"dtype": v} if isinstance(v, str) else v


def features(out: Output, fmt: str, extra: list[str]) -> list[dict]:
    shard = next(iter(out.valid_commits("size")))
    meta = read_schema(out.fs, out.part_path(shard)).metadata or {}
    feats = json.loads(meta.get(b"huggingface", b"{}")).get("info", {}).get("features", {})
    cols = [{"name": k, **_yaml_type(v)} for k, v in feats.items() if k != "image"]
    cols += [{"name": c, "dtype": "string"} for c in extra]
    if fmt == "imagefolder":
        return [{"name": "image", "dtype": "image"}, *cols]
    return [
        {"name": "__key__", "dtype": "string"},
        {"name": "png", "dtype": "image"},
        {"name": "json", "struct": cols},
    ]


def _audit_lines(out: Output) -> list[str]:
    metrics = out.read_json(out.path(layout.audit_file("metrics.json")))
    if not metrics:
        return ["No audit was run on this output (`sdgen audit` adds per-group attribute shares with CIs)."]
    lines = [
        f"**The audit of {a} was written by {older_method(old)}: its intervals are not this sdgen's. "
        "Run `sdgen audit` (or `sdgen report`) on "
        "the output again, then export, before publishing them.**"
        for a, old in stale_entries(metrics)
    ]
    lines += [""] if lines else []
    spath = out.path(layout.audit_file("summary.parquet"))
    if out.exists(spath):
        s = read_frame(out.fs, spath)
        lines += ["| group | attribute | class | n | share | 95% CI |", "|---|---|---|---|---|---|"]
        lines += [
            f"| {r.group} | {r.attribute} | {r['class']} | {r.n} | {num(r.proportion)} | "
            f"{ci([r.ci_low, r.ci_high])} |"
            for _, r in s.iterrows()
        ]
    div = metrics.get("diversity") or {}
    if div.get("per_group"):
        lines += [
            "",
            "Diversity of CLIP image embeddings per group (Vendi score; mean pairwise cosine), 95% "
            "bootstrap CIs over prompts then seeds:",
            "",
            "| group | images | Vendi | 95% CI | mean cos | 95% CI |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {g.get('group')} | {g.get('n')} | {num(g.get('vendi'), '.2f')} | "
            f"{ci(g.get('vendi_ci'), '.2f')} | "
            f"{num(g.get('mean_cos'))} | {ci(g.get('mean_cos_ci'))} |"
            for g in div["per_group"]
        ]
    return lines + [
        "",
        f"Audit created {metrics.get('created', '?')} over {metrics.get('source', {}).get('rows', '?')} "
        f"rows (all generated rows, before this export's selection).",
    ]


def _selection_lines(out: Output, sel) -> list[str]:
    lines = []
    if sel.keep_only:
        rec = out.read_json(out.path(layout.policy_file(sel.keep_only, "policy.json"))) or {}
        pol = yaml.safe_load(out.fs.cat_file(out.path(layout.policy_file(sel.keep_only, "policy.yaml"))))
        rules = "; ".join(f"`{r['when']}` -> {r['action']}" for r in pol.get("rules", []))
        lines.append(
            f"- Policy `{sel.keep_only}` (fingerprint {str(rec.get('fingerprint'))[:12]}): rows decided "
            f"keep, flag or blur (blur applied, radius {pol.get('blur_radius')}); rules: {rules}; "
            f"decisions over all rows: {rec.get('counts')}"
        )
    if sel.dedup:
        rec = out.read_json(out.path(layout.dedup_file(sel.dedup, "dedup.json"))) or {}
        lines.append(
            f"- Near-duplicates left out: `{sel.dedup}` ({rec.get('method')}, threshold "
            f"{rec.get('threshold')}; {rec.get('duplicates')} of {rec.get('rows')} images)"
        )
    if sel.where:
        lines.append(f"- Only rows where {', '.join(f'`{w}`' for w in sel.where)}")
    return lines or ["- None: every ok image of the output."]


def _card_header(out: Output, dst: Output, fmt: str, sel, rows: int) -> dict:
    """The card's YAML front matter: what the Hub reads (license, size, files, features, split)."""
    path = "*.tar" if fmt == "webdataset" else "train/**"
    return {
        "license": "other",
        "pretty_name": f"sdgen synthetic images ({os.path.basename(dst.root.rstrip('/'))})",
        "task_categories": ["text-to-image"],
        "tags": ["synthetic", "sdgen"],
        "size_categories": [next((s for n, s in SIZES if rows < n), "n>10M")],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": path}]}],
        "dataset_info": {
            "features": features(out, fmt, ["policy_decision"] if sel.keep_only else []),
            "splits": [{"name": "train", "num_examples": rows}],
        },
    }


def write_card(out: Output, run: dict, dst: Output, fmt: str, sel, rows: int, shard_size: int) -> str:
    cfg = run.get("config") or {}
    gen = cfg.get("generation") or {}
    layout_line = (
        f"tar shards of at most {shard_size} samples, `<key>.png` + `<key>.json`"
        if fmt == "webdataset"
        else "`train/<part>/<key>.png` + `metadata.jsonl`"
    )
    header = _card_header(out, dst, fmt, sel, rows)
    body = [
        "# Synthetic images made with sdgen",
        "",
        "**License: fill in** (`license:` above says `other` until you do; the model's license governs "
        "generated images).",
        "",
        f"{rows} images as {fmt} ({layout_line}), "
        f"exported from `{out.url}` (run fingerprint `{str(run.get('fingerprint'))[:12]}`).",
        "",
        "## Generation",
        "",
        f"- Model: `{cfg.get('model')}`; scheduler {gen.get('scheduler')}; "
        f"{gen.get('steps')} steps; guidance "
        f"{gen.get('guidance_scale')}; {gen.get('width')}x{gen.get('height')}; "
        f"{gen.get('images_per_prompt')} images "
        f"per prompt (rows may override)",
        f"- CLIP scorer: `{(cfg.get('scoring') or {}).get('clip_model')}`",
        f"- Seeds: job seed {gen.get('seed')}; each image's `seed` = first 8 bytes of "
        'sha256(f"{job_seed}:{prompt_id}:{sample_idx}") (or the row\'s own seed + k), stored per sample, '
        "so every image can be regenerated (`sdgen verify`)",
        f"- Prompt source: `{cfg.get('input')}`",
        "",
        "## Selection",
        "",
        *_selection_lines(out, sel),
        "",
        "## Audit",
        "",
        *_audit_lines(out),
        "",
        "## Known limits",
        "",
        "- Attribute labels and safety scores are CLIP zero-shot judgements of perceived attributes, not "
        "ground truth; read each attribute set's caveats (docs/AUDIT_GUIDE.md).",
        "- The audit describes every generated row; this export is a selection of them, "
        "so its shares can differ.",
        "- Synthetic images inherit the generating model's biases and failure modes.",
        "",
        "Upload (not done by sdgen): "
        "`huggingface-cli upload <user>/<name> . --repo-type dataset` from this folder.",
    ]
    text = "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"
    dst.write_bytes_atomic(dst.path("README.md"), text.encode())
    return dst.url.rstrip("/") + "/README.md"
