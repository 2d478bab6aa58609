"""Quotas counted after filtering (pipeline/curate/quota.py): rounds with new sample indices until each
key has N kept images, bounded overshoot, max_oversample stop, delivered set vs all rows, resume."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny_config

import pipeline
from pipeline.core.config import ConfigError
from pipeline.core.dataset import Dataset
from pipeline.generate.seeds import sample_seed

HALF = 2**61  # seeds are uniform in [0, 2**62): a rule on the seed drops a known, image-independent half


def _policy(tmp_path, when="seed < 2305843009213693952", action="drop"):
    p = tmp_path / "pol.yaml"
    p.write_text(f"name: half\ndefault: keep\nrules:\n  - name: r\n    when: {when}\n    action: {action}\n")
    return str(p)


def _job(tmp_path, out="out", **quota):
    pq.write_table(
        pa.table({"prompt": ["a cat", "a dog", "a cow"], "kind": ["pet", "pet", "farm"]}),
        tmp_path / "p.parquet",
    )
    q = {"accepted": 4, "policy": _policy(tmp_path), **quota}
    return tiny_config(
        tmp_path / "p.parquet",
        tmp_path / out,
        quota=q,
        write={"contact_sheet": False, "timing_columns": False},
    )


def _rows(out):
    return Dataset(str(out)).table(columns=["prompt_id", "sample_idx", "seed", "status", "kind"]).to_pandas()


def _decisions(out):
    return pd.read_parquet(os.path.join(out, "policy", "quota", "decisions.parquet"))


def test_per_prompt_reaches_n_kept_with_new_seeds(tmp_path):
    cfg = _job(tmp_path)
    s = pipeline.run(cfg, progress=False)
    rows, dec = _rows(tmp_path / "out"), _decisions(tmp_path / "out")
    assert s["quota"]["complete"] and s["quota"]["keys_short"] == 0 and s["quota"]["rounds"] >= 1
    for pid, g in rows.groupby("prompt_id"):
        assert sorted(g["sample_idx"]) == list(range(len(g)))  # rounds continue the indices, no gaps
        assert list(g.sort_values("sample_idx")["seed"]) == [sample_seed(0, pid, k) for k in range(len(g))]
        kept = int((g["seed"] >= HALF).sum())  # hand count of what the policy keeps
        assert 4 <= kept <= 4 + cfg["generation"]["batch_size"]  # overshoot at most one batch
    assert len(dec) == len(rows)  # every generated row has a decision; the audit reads them all
    assert (dec.groupby("prompt_id")["decision"].apply(lambda d: (d == "keep").sum()) == 4).all()
    surplus = dec[dec["rule"] == "quota:surplus"]
    assert len(surplus) == int((rows["seed"] >= HALF).sum()) - 12
    assert os.path.exists(tmp_path / "out" / "_SUCCESS")
    from pipeline.curate.export import export  # the delivered set leaves, exactly N per key

    export(str(tmp_path / "out"), "imagefolder", str(tmp_path / "set"), keep_only="quota")
    meta = pd.concat(
        pd.read_json(f, lines=True)
        for f in glob.glob(str(tmp_path / "set" / "train" / "*" / "metadata.jsonl"))
    )
    assert len(meta) == 12 and (meta.groupby("prompt_id").size() == 4).all()
    assert (meta["seed"] >= HALF).all()  # nothing the policy dropped


def test_per_column_counts_the_key_across_its_prompts(tmp_path):
    s = pipeline.run(_job(tmp_path, accepted=5, per="kind"), progress=False)
    rows, dec = _rows(tmp_path / "out"), _decisions(tmp_path / "out")
    kept = rows.assign(k=rows["seed"] >= HALF).groupby("kind")["k"].sum()
    assert (kept >= 5).all() and s["quota"]["keys"] == 2
    merged = dec.merge(rows, on=["prompt_id", "sample_idx"])
    assert (merged[merged["decision"] == "keep"].groupby("kind").size() == 5).all()
    pets = rows[rows["kind"] == "pet"].groupby("prompt_id").size()
    assert abs(pets.iloc[0] - pets.iloc[1]) <= 1  # a key's new samples are spread over its prompts


def test_max_oversample_stops_a_key_and_reports_its_shortfall(tmp_path):
    cfg = _job(tmp_path, accepted=3, max_oversample=2.0)
    cfg["quota"]["policy"] = _policy(tmp_path, when="seed >= 0")  # drops everything
    s = pipeline.run(cfg, progress=False)
    rows = _rows(tmp_path / "out")
    assert (rows.groupby("prompt_id").size() == 6).all()  # stopped at 2.0 x 3
    assert s["quota"]["keys_short"] == 3 and set(s["quota"]["shortfall"].values()) == {3}
    assert os.path.exists(tmp_path / "out" / "_SUCCESS")


def _part_hashes(out):
    return {
        os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
        for p in glob.glob(os.path.join(out, "data", "*.parquet"))
    }


def _forget(out, stem, keep_round_file):
    """Undo a round as a kill would leave it: its commits gone (all, or the round file too)."""
    for p in glob.glob(os.path.join(out, "_commits", f"{stem}*")) + glob.glob(
        os.path.join(out, "data", f"part-{stem}*")
    ):
        os.remove(p)
    if not keep_round_file:
        os.remove(os.path.join(out, "_quota", f"{stem}.parquet"))
    for p in ("_SUCCESS", "summary.json"):
        if os.path.exists(os.path.join(out, p)):
            os.remove(os.path.join(out, p))
    shutil.rmtree(os.path.join(out, "policy"))


@pytest.mark.parametrize("keep_round_file", [True, False], ids=["mid-round", "between-rounds"])
def test_resume_gives_the_rows_of_an_uninterrupted_run(tmp_path, keep_round_file):
    cfg = _job(tmp_path, accepted=6)
    pipeline.run(cfg, progress=False)
    ref, ref_dec = _part_hashes(tmp_path / "out"), _decisions(tmp_path / "out")
    rounds = sorted(os.listdir(tmp_path / "out" / "_quota"))
    assert len(rounds) >= 1, rounds
    _forget(str(tmp_path / "out"), rounds[-1].removesuffix(".parquet"), keep_round_file)
    assert _part_hashes(tmp_path / "out") != ref
    pipeline.run(cfg, progress=False)
    assert _part_hashes(tmp_path / "out") == ref  # same shards, byte-identical parts, nothing twice
    pd.testing.assert_frame_equal(_decisions(tmp_path / "out"), ref_dec)


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="quota.per 'region' is not a column"):
        pipeline.run(_job(tmp_path, per="region"), progress=False)
    with pytest.raises(ConfigError, match="quota.policy"):
        pipeline.run(_job(tmp_path, policy=str(tmp_path / "missing.yaml")), progress=False)
    with pytest.raises(ConfigError, match="accepted"):
        pipeline.run(_job(tmp_path, accepted=0), progress=False)
    assert not os.path.exists(tmp_path / "out" / "data")  # refused before anything ran
    from conftest import write_job

    job = write_job(tmp_path / "job.yaml", _job(tmp_path, per="region"))
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", job], capture_output=True, text=True)
    assert r.returncode == 2 and "quota.per 'region'" in r.stderr and "Traceback" not in r.stderr


def test_progress_total_of_a_round_counts_what_the_round_makes(tmp_path):
    """The bar's total for a round is the round file's own images (it once was the input's even split
    over all shards: 32 shown where a demo round made 39)."""
    from pipeline.core.storage import Output
    from pipeline.curate.quota import write_round
    from pipeline.generate.driver import pending_images, prepare
    from pipeline.generate.inputs import prompt_ids

    cfg = pipeline.load_config(_job(tmp_path))
    pids = prompt_ids(pq.read_table(tmp_path / "p.parquet"))
    plan = {pids[0]: (2, 5), pids[2]: (2, 9)}  # (first new sample index, images)
    path = write_round(cfg, Output(cfg.output, cfg.storage), 1, plan)
    prep = prepare(cfg, extra=(path,))
    assert len(prep.pending) == len(prep.shards) == 2  # the input's one shard and the round's one
    assert pending_images(prep) == 3 * 2 + 5 + 9
    prep.pending = [s for s in prep.shards if s.in_output]  # as in a round after the first run
    assert pending_images(prep) == 14
