"""Class 4/8: S3 behind a proxy injecting 503 SlowDown, 500 and dropped connections: the run completes
byte-identical to a clean run, or ends with a storage error and then resumes byte-identical."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from conftest import PROMPTS, tiny_config
from s3proxy import FaultProxy

import pipeline
from pipeline.core.retry import StorageError


def _parts(fs, prefix):
    fs.invalidate_cache()
    return {f.rsplit("/", 1)[-1]: fs.cat(f) for f in fs.glob(f"{prefix}/data/*.parquet")}


@pytest.mark.slow
@pytest.mark.parametrize(
    "rates",
    [{"slowdown": 0.1, "internal": 0.05, "drop": 0.05}, {"slowdown": 0.3, "internal": 0.1, "drop": 0.1}],
)
def test_faulty_s3_completes_or_resumes_byte_identical(s3_server, rates):
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, key="testing", secret="testing", skip_instance_cache=True)
    bucket = f"sdgen-faults-{len(fs.ls('/'))}"
    fs.mkdir(bucket)
    buf = io.BytesIO()
    pq.write_table(pa.table({"prompt": PROMPTS}), buf, row_group_size=3)
    fs.pipe(f"{bucket}/in/p.parquet", buf.getvalue())
    common = dict(
        write={"timing_columns": False, "contact_sheet": False},
        generation={"images_per_prompt": 1},
        retry={"attempts": 12, "base_s": 0.01, "max_s": 0.1},
    )  # every try counts (issue 26)
    clean = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    pipeline.run(
        tiny_config(f"s3://{bucket}/in/", f"s3://{bucket}/ref", storage=clean, **common), progress=False
    )
    with FaultProxy(s3_server, seed=7, **rates) as proxy:
        storage = {**clean, "endpoint_url": proxy.url}
        cfg = tiny_config(f"s3://{bucket}/in/", f"s3://{bucket}/out", storage=storage, **common)
        try:
            summary = pipeline.run(cfg, progress=False)
            done, why = summary["complete"], summary["failed_shards"]
        except StorageError as e:  # a fault that outlasted the retries, named: a refusal would be a bug here
            done, why = False, str(e)
            assert "failed 12 time(s) with transient errors" in why, why
        assert proxy.counts["requests"] > 20 and sum(proxy.counts.values()) > proxy.counts["requests"], (
            proxy.counts,
            why,
        )
    if not done:  # a storage error or failed shards: the resume on a healthy endpoint completes
        assert pipeline.run({**cfg, "storage": clean}, progress=False)["complete"]
    assert (
        _parts(fs, f"{bucket}/out") == _parts(fs, f"{bucket}/ref") and len(_parts(fs, f"{bucket}/ref")) == 3
    )
