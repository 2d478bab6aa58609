"""`sdgen filter --materialize DIR`: a filtered, blurred copy of an output, itself an sdgen output (parts,
markers, run.json with `derived_from`), written through the one commit path. The source is only read."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from pipeline.core import layout
from pipeline.core.storage import read_parquet
from pipeline.curate.policy import PolicyError, policy_dir, read_decisions


def blur_png(png: bytes, radius: float) -> bytes:
    """The image blurred with PIL's GaussianBlur, re-encoded as PNG."""
    import io

    from PIL import Image, ImageFilter

    buf = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").filter(ImageFilter.GaussianBlur(radius)).save(
        buf, format="PNG"
    )
    return buf.getvalue()


def materialize(output_url: str, name: str, dest: str, blur_radius: float, storage=None) -> dict:
    """A filtered copy of the output at ``dest`` (an sdgen output itself: parts, markers, run.json):
    rows decided keep/flag/blur only (no blocked, dropped or imageless rows), blurred images where
    decided, plus columns policy_decision and policy_rule. The source is only read."""
    import pyarrow.parquet as pq

    from pipeline.core.dataset import Dataset
    from pipeline.core.storage import Output

    ds, dst = Dataset(output_url, storage), Output(dest, storage)
    src = ds.output
    if dst.committed_markers():
        raise PolicyError(f"--materialize {dest!r} already holds a dataset; choose an empty location")
    dec = read_decisions(output_url, name, storage).set_index(["prompt_id", "sample_idx"])
    rows = 0
    for shard in ds.commits:
        t = read_parquet(src.fs, src.part_path(shard))
        keys = t.select(["prompt_id", "sample_idx"]).to_pandas()
        d = dec.reindex(pd.MultiIndex.from_frame(keys))
        keep = d["decision"].isin(["keep", "flag", "blur"]).to_numpy()
        t, d = t.filter(pa.array(keep)), d[keep]
        blur = (d["decision"] == "blur").to_numpy()
        if blur.any():  # only the image column changes; every other column keeps its bytes and type
            images = [
                {"bytes": blur_png(im["bytes"], blur_radius), "path": im["path"]} if b else im
                for im, b in zip(t.column("image").to_pylist(), blur)
            ]
            i = t.schema.get_field_index("image")
            t = t.set_column(i, t.schema.field(i), pa.array(images, t.schema.field(i).type))
        t = t.append_column(
            "policy_decision", pa.array(d["decision"].tolist(), pa.string(), from_pandas=True)
        )
        t = t.append_column("policy_rule", pa.array(d["rule"].tolist(), pa.string(), from_pandas=True))
        spool = dst.spool_path(shard)
        pq.write_table(t, spool)
        counts = {k: int(v) for k, v in pd.Series(t.column("status").to_pylist()).value_counts().items()}
        dst.commit_part(shard, spool, {"rows": t.num_rows, "status_counts": counts})
        rows += t.num_rows
    run = src.read_json(src.path(layout.RUN)) or {}
    policy_rec = src.read_json(f"{policy_dir(src, name)}/policy.json")
    dst.write_json(
        dst.path(layout.RUN), {**run, "derived_from": {"output": output_url, "policy": policy_rec}}
    )
    return {"dest": dest, "rows": rows}
