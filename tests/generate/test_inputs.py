import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_prompts

from pipeline.generate.inputs import (
    InputError,
    derive_prompt_id,
    list_input_files,
    prompt_ids,
    read_rows,
    row_problems,
    scan_input,
)
from pipeline.generate.plan import plan_shards, shard_name


def test_listing_file_dir_and_glob(tmp_path):
    write_prompts(tmp_path / "b.parquet", ["x"])
    write_prompts(tmp_path / "a.parquet", ["y"])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "_hidden.parquet").write_text("ignored too")
    fs, files = list_input_files(str(tmp_path))
    assert [f.rsplit("/", 1)[-1] for f in files] == ["a.parquet", "b.parquet"]
    assert len(list_input_files(str(tmp_path / "a.parquet"))[1]) == 1
    assert len(list_input_files(str(tmp_path / "*.parquet"))[1]) == 3  # glob takes what it matches
    with pytest.raises(InputError, match="does not exist"):
        list_input_files(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .parquet files"):
        list_input_files(str(tmp_path / "empty"))


def test_derived_ids_depend_on_content_not_position(tmp_path):
    t1 = pa.table({"prompt": ["a", "b", "c"], "steps": [None, 5, None]})
    t2 = pa.table({"prompt": ["c", "b", "a"], "steps": [None, 5, None]})
    ids1, ids2 = prompt_ids(t1), prompt_ids(t2)
    assert ids1 == ids2[::-1]
    assert ids1[1] == derive_prompt_id("b", {"steps": 5}) != derive_prompt_id("b", {})
    # images_per_prompt does not change the id: asking for more samples keeps the first ones
    assert derive_prompt_id("b", {"images_per_prompt": 9}) == derive_prompt_id("b", {})
    assert prompt_ids(pa.table({"prompt": ["a"], "prompt_id": [17]})) == ["17"]


def test_row_problems_name_row_column_value():
    t = pa.table(
        {
            "prompt": ["ok", None, "ok", "ok", "  "],
            "width": [64, 64, 60, 64, 64],
            "guidance_scale": [1.0, 1.0, 1.0, float("nan"), 1.0],
        }
    )
    probs = row_problems(t, "f.parquet", 100)
    assert sorted(probs) == [101, 102, 103, 104]
    assert "row 102 column 'width': must be a positive multiple of 8 (value 60)" in str(probs[102])
    assert probs[103].column == "guidance_scale"


def test_read_rows_spans_row_groups(tmp_path):
    path = write_prompts(tmp_path / "p.parquet", [f"p{i}" for i in range(10)])  # row groups of 3
    fs, _ = list_input_files(path)
    assert read_rows(fs, path, 2, 8).column("prompt").to_pylist() == [f"p{i}" for i in range(2, 8)]
    assert read_rows(fs, path, 9, 10).column("prompt").to_pylist() == ["p9"]


def test_plan_is_deterministic_and_covers_every_row(tmp_path):
    path = write_prompts(tmp_path / "p.parquet", [f"p{i}" for i in range(10)])
    fs, files = list_input_files(path)
    shards, rows = plan_shards(fs, files, str(tmp_path), 4, "f" * 64)
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 8), (8, 10)]
    again, _ = plan_shards(fs, files, str(tmp_path), 4, "f" * 64)
    assert [s.name for s in shards] == [s.name for s in again]
    assert shards[0].name == shard_name("p.parquet", 0, 4, "f" * 64)
    assert plan_shards(fs, files, str(tmp_path), 4, "e" * 64)[0][0].name != shards[0].name


def test_duplicates_counted_and_numbered_in_file_order(tmp_path):
    write_prompts(tmp_path / "a.parquet", ["x", "y", "x"])
    write_prompts(tmp_path / "b.parquet", ["x", "z"])
    fs, files = list_input_files(str(tmp_path))
    scan = scan_input(fs, files, default_ipp=2)
    assert scan.rows == 5 and scan.images == 10 and scan.duplicates == 2
    assert scan.occurrence == {(files[0], 2): 1, (files[1], 0): 2}
    shards, _ = plan_shards(fs, files, str(tmp_path), 10, "f" * 64, scan, "number")
    assert shards[0].renames == {2: 1} and shards[1].renames == {0: 2}
    shards, _ = plan_shards(fs, files, str(tmp_path), 10, "f" * 64, scan, "first")
    assert shards[0].skip == (2,) and shards[1].skip == (0,)


def test_scan_counts_row_overrides(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b", "c"], "images_per_prompt": [3, None, 1]}), path)
    fs, files = list_input_files(str(path))
    assert scan_input(fs, files, default_ipp=2).images == 6
