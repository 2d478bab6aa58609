"""The read side (core/dataset.py): committed rows only, images by key, and storage settings that
reach every read-side command (status, verify, contact sheet, audit, filter, report) on s3://."""

import io
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import PROMPTS, decode, tiny_config, write_job, write_prompts

import pipeline
from pipeline.cli import main
from pipeline.core.dataset import Dataset


@pytest.fixture(scope="module")
def local_output(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ds")
    cfg = tiny_config(write_prompts(tmp / "p.parquet", group=list("abcabca")), tmp / "out")
    pipeline.run(cfg, progress=False)
    return tmp / "out"


def test_only_committed_rows_and_images_by_key(local_output, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(local_output, out)
    ds = Dataset(str(out))
    assert ds.rows == 14 and len(ds.files) == 3 and ds.run["fingerprint"]
    meta = ds.table()
    assert meta.num_rows == 14 and "image" not in meta.column_names
    keys = [(meta.column("prompt_id")[i].as_py(), meta.column("sample_idx")[i].as_py()) for i in (0, 5, 13)]
    pngs = ds.images(keys)
    assert set(pngs) == set(keys) and all(decode(p).shape == (64, 64, 3) for p in pngs.values())
    full = ds.table(images=True).to_pylist()
    by_key = {(r["prompt_id"], r["sample_idx"]): r["image"]["bytes"] for r in full}
    assert all(by_key[k] == pngs[k] for k in keys)
    victim = sorted(os.listdir(out / "_commits"))[0]
    os.remove(out / "_commits" / victim)  # a part without its marker is not part of the dataset
    again = Dataset(str(out))
    assert len(again.files) == 2 and again.table().num_rows == again.rows < 14


def test_read_side_commands_reach_s3_with_the_job_configs_storage(s3_server, tmp_path, monkeypatch):
    """The endpoint lives only in the job config (no AWS_ENDPOINT_URL): every read-side command
    given --config reaches the output."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    bucket = f"sdgen-read-{len(fs.ls('/'))}"
    fs.mkdir(bucket)
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": PROMPTS, "group": list("abcabca")}), buf)
    fs.pipe(f"{bucket}/p.parquet", buf.getvalue())
    storage = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    cfg = tiny_config(f"s3://{bucket}/p.parquet", f"s3://{bucket}/out", storage=storage)
    job = write_job(tmp_path / "job.yaml", cfg)
    assert main(["run", str(job), "--no-progress"]) == 0
    out, c = f"s3://{bucket}/out", ["--config", str(job)]
    assert main(["status", out, *c]) == 0
    assert main(["verify", out, "--n", "2", *c]) == 0
    assert main(["contact-sheet", out, "-o", str(tmp_path / "sheet.png"), *c]) == 0
    assert decode((tmp_path / "sheet.png").read_bytes()).shape[0] > 64
    policy = tmp_path / "pol.yaml"
    policy.write_text("name: low\nrules:\n  - {name: low, when: 'clip_score < 100', action: flag}\n")
    assert main(["filter", out, "--policy", str(policy), *c]) == 0
    assert fs.exists(f"{bucket}/out/policy/low/decisions.parquet")
    assert (
        main(
            [
                "audit",
                out,
                "--attribute",
                "colour",
                "--attribute-set",
                "toyworld",
                "--clip-model",
                "tiny",
                "--group-by",
                "group",
                "--bootstrap",
                "200",
                "--device",
                "cpu",
                *c,
            ]
        )
        == 0
    )
    assert fs.exists(f"{bucket}/out/audit/metrics.json")
    assert main(["report", out, "-o", str(tmp_path / "r.html"), "--bootstrap", "200", *c]) == 0
    assert "colour" in (tmp_path / "r.html").read_text()


def test_foreign_parquet_and_images_by_position(tmp_path):
    """The one reader also opens Parquet sdgen did not make (post-hoc audits): a file or a folder's
    top-level parts, never audit/ below it; images by row position read only the row groups that hold them."""
    import pyarrow as pa
    from synth_output import png

    rows = [{"prompt": f"p{i}", "image": {"bytes": png((i * 20, 0, 0)), "path": None}} for i in range(7)]
    os.makedirs(tmp_path / "set" / "audit")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "set" / "a.parquet", row_group_size=3)
    pq.write_table(pa.Table.from_pylist(rows[:1]), tmp_path / "set" / "audit" / "ignored.parquet")
    ds = Dataset(str(tmp_path / "set"), foreign=True)
    assert ds.foreign and ds.run is None and len(ds.files) == 1 and ds.audit_dir.endswith("/set/audit")
    got = ds.images_at([0, 4, 6])
    assert got == {0: rows[0]["image"]["bytes"], 4: rows[4]["image"]["bytes"], 6: rows[6]["image"]["bytes"]}
    one = Dataset(str(tmp_path / "set" / "a.parquet"), foreign=True)
    assert one.files == [str(tmp_path / "set" / "a.parquet")] and one.audit_dir.endswith("/set/a.audit")
    assert Dataset(str(tmp_path / "set")).files == []  # without foreign=True: only sdgen outputs
