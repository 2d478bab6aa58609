"""Rows -> samples (pipeline/generate/samples.py) on plain pyarrow tables, no model; and the id rule:
every (prompt_id, sample_idx) is unique, duplicates, invalid rows and explicit `x~1` ids included."""

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.config import from_dict
from pipeline.generate.inputs import Shard, scan_input
from pipeline.generate.plan import plan_shards
from pipeline.generate.samples import expand, variant
from pipeline.generate.seeds import seeds_for_row
from pipeline.probes.safety import PromptScreen


def _cfg(**sections):
    raw = {
        "input": "in.parquet",
        "output": "out",
        "model": "tiny",
        "generation": {"width": 64, "height": 64, "steps": 3, "images_per_prompt": 2, "guidance_scale": 7.5},
    }
    raw.update(sections)
    return from_dict(raw)


def _keys(tmp_path, table, policy="number", **sections):
    """All (prompt_id, sample_idx) the rows give, across shards of 2 rows, as the worker would."""
    path = str(tmp_path / "in.parquet")
    pq.write_table(table, path, row_group_size=2)
    import fsspec

    fs = fsspec.filesystem("file")
    scan = scan_input(fs, [path], 2)
    shards, _ = plan_shards(fs, [path], str(tmp_path), 2, "f" * 16, scan, policy)
    cfg, keys = _cfg(**sections), []
    for sh in shards:
        out = expand(table.slice(sh.start, sh.stop - sh.start), sh, cfg)
        keys += [(s.prompt_id, s.sample_idx) for s in out.samples]
        keys += [(b.prompt_id, 0) for b in out.invalid]
    return keys


def test_expand_images_seeds_and_overrides():
    t = pa.table({"prompt": ["a cat", "a dog"], "images_per_prompt": [None, 3], "steps": [7, None]})
    out = expand(t, Shard("s", "f", 0, 2), _cfg())
    assert [(s.row, s.sample_idx) for s in out.samples] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert [s.steps for s in out.samples] == [7, 7, 3, 3, 3]
    pid = out.samples[0].prompt_id
    assert [s.seed for s in out.samples[:2]] == list(seeds_for_row(_cfg().generation.seed, pid, 2, None))
    assert not out.blocked and not out.invalid


def test_expand_invalid_skip_rename_and_screening(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("terms:\n  banned: [forbidden]\n")
    t = pa.table({"prompt": ["ok", "", "forbidden thing", "ok"], "prompt_id": ["a", "b", "c", "a"]})
    out = expand(t, Shard("s", "f", 10, 14, renames={13: 1}), _cfg(), PromptScreen.load(str(rules)))
    assert [b.prompt_id for b in out.invalid] == ["b"] and "null or empty" in out.invalid[0].reason
    assert [(s.prompt_id, s.sample_idx) for s in out.samples] == [("a", 0), ("a", 1), ("a~1", 0), ("a~1", 1)]
    assert [s.prompt_id for s, _ in out.blocked] == ["c", "c"] and "prompt screening" in out.blocked[0][1]
    skipped = expand(t, Shard("s", "f", 10, 14, skip=(13,)), _cfg())
    assert {s.prompt_id for s in skipped.samples} == {"a", "c"}


def test_mitigation_variants_follow_weights():
    m = {
        "enabled": True,
        "variants": [
            {"name": "f", "template": "{prompt}, female", "weight": 1},
            {"name": "m", "template": "{prompt}, male", "weight": 3},
        ],
    }
    out = expand(
        pa.table({"prompt": ["a doctor"]}),
        Shard("s", "f", 0, 1),
        _cfg(
            mitigation=m,
            generation={"images_per_prompt": 4, "width": 64, "height": 64, "guidance_scale": 1.0},
        ),
    )
    assert [s.variant for s in out.samples] == ["f", "m", "m", "m"]
    assert out.samples[0].prompt == "a doctor, female" and out.samples[0].source_prompt == "a doctor"
    vs = _cfg(mitigation=m).mitigation.variants
    assert [variant(vs, k, 8).name for k in range(8)] == ["f", "f", "m", "m", "m", "m", "m", "m"]


def test_numbered_duplicates_skip_explicit_ids(tmp_path):
    keys = _keys(tmp_path, pa.table({"prompt": ["p", "q", "r", "s"], "prompt_id": ["x", "x", "x~1", "x"]}))
    assert sorted(keys) == sorted(
        [("x", 0), ("x", 1), ("x~2", 0), ("x~2", 1), ("x~1", 0), ("x~1", 1), ("x~3", 0), ("x~3", 1)]
    )


def test_invalid_rows_take_part_in_numbering(tmp_path):
    t = pa.table({"prompt": ["", "ok", None, "fine"], "prompt_id": ["x", "x", None, None]})
    keys = _keys(tmp_path, t, shards={"on_invalid_row": "mark"})
    assert len(keys) == len(set(keys)) and ("x", 0) in keys and ("x~1", 0) in keys


def test_null_and_empty_prompts_derive_different_ids(tmp_path):
    keys = _keys(tmp_path, pa.table({"prompt": [None, "", "a", "a"]}))
    assert len(keys) == len(set(keys)) == 2 + 2 * 2  # two invalid rows; "a" twice, the repeat numbered
    assert any(k[0].endswith("~1") for k in keys)


def test_ids_without_collisions_are_unchanged(tmp_path):
    keys = _keys(tmp_path, pa.table({"prompt": ["a", "b", "a"], "prompt_id": ["x", "y", "x"]}))
    assert sorted({k[0] for k in keys}) == ["x", "x~1", "y"]
