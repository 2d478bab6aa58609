"""Class 1 end to end: colliding ids (numbered repeats vs explicit `x~1`, invalid rows marked beside
valid ones, null and empty prompts) still give an output whose (prompt_id, sample_idx) is unique."""

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import read_output, tiny_config

import pipeline


def test_colliding_ids_give_unique_keys(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt": ["a red circle", "a blue square", "a green dot", "", None, "a cat"],
                "prompt_id": ["x", "x", "x~1", "y", "y", "y"],
            }
        ),
        path,
        row_group_size=2,
    )
    cfg = tiny_config(
        path,
        tmp_path / "out",
        generation={"images_per_prompt": 1},
        shards={"rows_per_shard": 2, "on_invalid_row": "mark"},
    )
    pipeline.run(cfg, progress=False)
    df = read_output(tmp_path / "out")  # asserts unique, non-null keys
    got = dict(zip(df.prompt_id, df.status))
    assert got == {"x": "ok", "x~2": "ok", "x~1": "ok", "y": "invalid", "y~1": "invalid", "y~2": "ok"}
    assert len(set(df.seed.dropna())) == 4  # four generated rows, four seeds
