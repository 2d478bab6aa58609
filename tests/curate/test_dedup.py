"""sdgen dedup: multi-index hashing finds exactly the brute-force pairs; on the toy world, rows that
share a seed and a prompt are found and distinct shapes/colours are not; policies can drop them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_config, write_prompts

from pipeline.cli import main
from pipeline.core.config import from_dict
from pipeline.curate.dedup import clusters, embedding_pairs, hash_pairs
from pipeline.launch import run as run_job
from pipeline.probes.phash import hamming


def cli(argv) -> int:
    return main([str(a) for a in argv])


def _brute(h, t):
    d = hamming(h[:, None], h[None, :])
    return set(zip(*(a.tolist() for a in np.nonzero(np.triu(d <= t, 1)))))


@pytest.mark.parametrize("t", [0, 2, 4, 6])
def test_hash_pairs_equal_brute_force(t):
    rng = np.random.default_rng(t)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    flips = [
        np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 9), replace=False))) for _ in base
    ]
    h = np.concatenate([base, base ^ np.array(flips, np.uint64), base[:20]])  # near copies and exact copies
    i, j = hash_pairs(h, t)
    found = set(zip(i.tolist(), j.tolist()))
    want = _brute(h, t)
    assert found == want and len(want) >= 20


def test_clusters_and_embedding_pairs_by_hand():
    assert clusters(5, np.array([0, 3]), np.array([1, 4])).tolist() == [0, 0, 1, 2, 2]
    x = np.eye(4, dtype=np.float32)
    x = np.vstack([x, x[1] * 0.99 + x[2] * 0.05])  # row 4 ~ row 1 (cos 0.9987)
    i, j, c = embedding_pairs(x, 0.99)
    assert sorted(set(zip(i.tolist(), j.tolist()))) == [(1, 4)] and c.min() > 0.99


def test_toy_world_same_seed_found_different_colours_not(tmp_path):
    prompts = [
        "a red circle",
        "a red circle",
        "a blue square",
        "a green triangle",
        "a yellow square",
        "a blue circle",
    ]
    path = write_prompts(
        tmp_path / "p.parquet",
        prompts,
        prompt_id=["r1", "r2", "b", "g", "y", "bc"],
        seed=[7, 7, 11, 12, 13, 14],
    )
    cfg = tiny_config(
        path,
        tmp_path / "out",
        model="toy",
        generation={"images_per_prompt": 1, "steps": 10, "width": None, "height": None},
        write={"embeddings": True},
    )
    run_job(from_dict(cfg), progress=False)
    assert cli(["dedup", tmp_path / "out"]) == 0
    d = pd.read_parquet(tmp_path / "out" / "dedup" / "phash" / "decisions.parquet").set_index("prompt_id")
    assert d["duplicate"].tolist().count(True) == 1 and bool(d.loc["r2", "duplicate"])
    assert d.loc["r2", "dup_of"] == "r1#0" and d.loc["r2", "distance"] == 0
    assert (d.drop(index=["r1", "r2"])["cluster_size"] == 1).all()  # different shapes/colours: unique

    pol = tmp_path / "pol.yaml"
    pol.write_text(
        "name: nodup\ndedup: phash\nrules:\n  - {name: near_duplicate, when: duplicate, action: drop}\n"
    )
    assert cli(["filter", tmp_path / "out", "--policy", pol]) == 0
    dec = pd.read_parquet(tmp_path / "out" / "policy" / "nodup" / "decisions.parquet").set_index("prompt_id")
    assert dec.loc["r2", "decision"] == "drop" and (dec.drop(index="r2")["decision"] == "keep").all()
    assert cli(["dedup", tmp_path / "out", "--by-embedding"]) == 0
    e = pd.read_parquet(tmp_path / "out" / "dedup" / "embedding" / "decisions.parquet").set_index("prompt_id")
    assert e["duplicate"].sum() == 1 and e.loc["r2", "dup_of"] == "r1#0" and e.loc["r2", "distance"] < 1e-3


def test_by_embedding_without_the_column_is_a_clear_error(tmp_path, capsys):
    from synth_output import known_rows, make_output

    url = make_output(tmp_path / "out", known_rows())
    assert cli(["dedup", url, "--by-embedding"]) == 2
    assert "write.embeddings: true" in capsys.readouterr().err


def test_dedup_of_an_s3_output_same_decisions_as_local(tmp_path, s3_server, monkeypatch):
    """An output on S3 (moto on 127.0.0.1) is deduplicated through fsspec: its PNGs hashed from the
    bucket, decisions written beside the data there, equal to the local run's."""
    s3fs = pytest.importorskip("s3fs")
    from synth_output import known_rows, make_output

    url = make_output(tmp_path / "out", known_rows())
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    fs.mkdir("outs")
    fs.put(url.rstrip("/") + "/", "outs/out", recursive=True)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    assert cli(["dedup", url, "--threshold", "0"]) == 0
    assert cli(["dedup", "s3://outs/out", "--threshold", "0"]) == 0
    local = pd.read_parquet(tmp_path / "out" / "dedup" / "phash" / "decisions.parquet")
    with fs.open("outs/out/dedup/phash/decisions.parquet", "rb") as f:
        remote = pd.read_parquet(f)
    # 108 ok images; the synthetic tiles are flat colour fields, so their pHashes are all equal:
    # one cluster, every image but the first a duplicate of it (the point here is the S3 path)
    assert len(local) == 108 and local["duplicate"].sum() == 107 and (local["cluster_size"] == 108).all()
    pd.testing.assert_frame_equal(remote, local)
    assert not [p for p in fs.find("outs/out") if ".tmp" in p]  # nothing half-written left behind
