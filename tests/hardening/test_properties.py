"""Class 8: property tests (hypothesis) over input tables and config dicts. Inputs: either an error
naming file, row and column, or (on_invalid_row: mark) rows whose keys are unique and which match
the input row for row. Configs: either valid, or a ConfigError naming the key."""

import math

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_unique_keys, read_output, tiny_config
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.core.config import ConfigError, from_dict
from pipeline.generate.inputs import InputError, row_limits, scan_input
from pipeline.generate.plan import plan_shards
from pipeline.generate.samples import expand

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
LIMITS = {"max_images_per_prompt": 4, "max_steps": 50, "max_pixels": 128 * 128}

ids = st.sampled_from(["x", "x~1", "x~2", "y", "1", "", " ", "../a", "é~1"])
prompts = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["a cat", "a cat", "", "  "]))


@st.composite
def tables(draw):
    n = draw(st.integers(1, 12))
    cols = {"prompt": pa.array(draw(st.lists(prompts, min_size=n, max_size=n)), pa.string())}
    if draw(st.booleans()):
        cols["prompt_id"] = pa.array(
            draw(st.lists(st.one_of(st.none(), ids), min_size=n, max_size=n)), pa.string()
        )
    opt = lambda s: st.lists(st.one_of(st.none(), s), min_size=n, max_size=n)  # noqa: E731
    if draw(st.booleans()):
        cols["images_per_prompt"] = pa.array(draw(opt(st.integers(-1, 6))), pa.int64())
    if draw(st.booleans()):
        cols["steps"] = pa.array(draw(opt(st.integers(0, 60))), pa.int64())
    if draw(st.booleans()):
        cols["width"] = pa.array(draw(opt(st.sampled_from([0, 7, 64, 65, 128, 256, 100000]))), pa.int64())
    if draw(st.booleans()):
        cols["seed"] = pa.array(draw(opt(st.sampled_from([0, 1, 2**62 - 1, 2**62, -1]))), pa.int64())
    if draw(st.booleans()):
        cols["guidance_scale"] = pa.array(draw(opt(st.sampled_from([0.0, 1.5, -1.0, math.nan, math.inf]))))
    if draw(st.booleans()):
        cols["group"] = pa.array(draw(st.lists(st.text(max_size=3), min_size=n, max_size=n)))
    return pa.table(cols)


def _cfg(path, **shards):
    return from_dict(
        tiny_config(
            path,
            "unused",
            limits=LIMITS,
            generation={"guidance_scale": 7.5, "images_per_prompt": 2},
            shards={"rows_per_shard": 3, **shards},
        )
    )


@SETTINGS
@given(table=tables(), policy=st.sampled_from(["number", "first"]))
def test_rows_become_unique_keys_matching_the_input(tmp_path_factory, table, policy):
    path = str(tmp_path_factory.mktemp("p") / "in.parquet")
    pq.write_table(table, path, row_group_size=2)
    cfg = _cfg(path, on_invalid_row="mark", duplicates=policy)
    fs = fsspec.filesystem("file")
    try:
        scan = scan_input(fs, [path], 2, limits=row_limits(cfg, 1000))
    except InputError as e:  # a schema problem (e.g. an all-null override column): the file is named
        assert path in str(e)
        return
    for p in scan.problems:  # every problem names file, row and column
        assert p.file == path and 0 <= p.row < table.num_rows and p.column in table.column_names
    shards, _ = plan_shards(fs, [path], path.rsplit("/", 1)[0], 3, "f" * 16, scan, policy)
    keys, per_row = [], {}
    for sh in shards:
        out = expand(table.slice(sh.start, sh.stop - sh.start), sh, cfg, None, row_limits(cfg, 1000))
        keys += [(s.prompt_id, s.sample_idx) for s in out.samples] + [(b.prompt_id, 0) for b in out.invalid]
        for s in out.samples:
            per_row[sh.start + s.row] = per_row.get(sh.start + s.row, 0) + 1
        for b in out.invalid:
            per_row[sh.start + b.row] = -1
    assert len(keys) == len(set(keys)) and all(k[0] is not None for k in keys)
    bad = {p.row for p in scan.problems}
    skipped = {r for sh in shards for r in sh.skip}
    ipp = (
        table.column("images_per_prompt").to_pylist()
        if "images_per_prompt" in table.column_names
        else [None] * 99
    )
    for r in range(table.num_rows):
        want = 0 if r in skipped else -1 if r in bad else (ipp[r] if ipp[r] is not None else 2)
        assert per_row.get(r, 0) == want, (r, want, per_row)


config_values = st.one_of(
    st.none(),
    st.integers(-5, 2**64),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
keys = st.sampled_from(
    [
        "generation.steps",
        "generation.width",
        "generation.seed",
        "generation.guidance_scale",
        "generation.images_per_prompt",
        "generation.scheduler",
        "shards.rows_per_shard",
        "shards.duplicates",
        "limits.max_steps",
        "retry.attempts",
        "retry.base_s",
        "model",
        "storage.secret",
        "storage.api_token",
        "write.png_compress_level",
        "nosuch.key",
        "generation.nosuch",
    ]
)


@SETTINGS
@example(items={"generation.steps": "00:", "storage.secret": "00:"})  # the fresh-clone failure (issue 25)
@given(items=st.dictionaries(keys, config_values, max_size=4))
def test_config_dicts_are_valid_or_name_the_key(items):
    raw = {"input": "i", "output": "o"}
    for dotted, v in items.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    try:
        from_dict(raw)
    except ConfigError as e:
        msg = str(e)
        assert (
            any(k.split(".")[-1] in msg or k.split(".")[0] in msg for k in items)
            or "must not be empty" in msg
        )
        assert_no_secret_echoed(msg, items)


def assert_no_secret_echoed(msg: str, items: dict) -> None:
    """A secret-looking key's value must not appear in the error. The message has one line per bad key
    ("  generation.steps: ... (got '00:')"); a line counts against the secret unless it belongs to another
    key whose own value contains the same text (that key echoing itself, e.g. steps='00:' beside
    secret='00:'). The header and any line of no key, or of the secret's own key, always count."""
    for k, v in items.items():
        if not (("secret" in k or "token" in k) and isinstance(v, str) and len(v) > 2):
            continue
        for line in msg.splitlines():
            owner = line.strip().split(":", 1)[0]
            if owner != k and owner in items and repr(v) in repr(items[owner]):
                continue
            assert repr(v) not in line, f"{k}'s value {v!r} echoed in {line!r}"


def test_secret_oracle_tells_a_collision_from_a_leak():
    """The oracle above: another key echoing an equal value is not a leak; the secret's own line or the
    header showing it is (the fresh-clone failure of issue 25 was the first case taken for the second)."""
    items = {"generation.steps": "00:", "storage.secret": "00:"}
    assert_no_secret_echoed("invalid config <dict>:\n  generation.steps: not an integer (got '00:')", items)
    for leak in (
        "invalid config <dict>:\n  storage.secret: bad (got '00:')",
        "invalid config {'secret': '00:'}:\n  generation.steps: not an integer (got 5)",
    ):
        with pytest.raises(AssertionError):
            assert_no_secret_echoed(leak, items)
    with pytest.raises(AssertionError):  # a different value on another line is still the secret's text
        assert_no_secret_echoed(
            "invalid config <dict>:\n  model: bad (got '00:')", {"model": "x", "storage.secret": "00:"}
        )


@pytest.mark.slow
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(table=tables())
def test_end_to_end_output_matches_input(tmp_path_factory, table):
    d = tmp_path_factory.mktemp("e2e")
    pq.write_table(table, d / "in.parquet", row_group_size=2)
    cfg = tiny_config(
        d / "in.parquet",
        d / "out",
        limits=LIMITS,
        shards={"on_invalid_row": "mark"},
        generation={"images_per_prompt": 1, "steps": 2, "width": 64, "height": 64},
    )
    import pipeline

    try:
        summary = pipeline.run(cfg, progress=False)
    except InputError as e:  # exit 2 before any model loads, the file named
        assert "in.parquet" in str(e)
        return
    df = read_output(d / "out")
    assert_unique_keys(df)
    assert summary["complete"] and len(df) == summary["rows_total"]
    assert set(df.status) <= {"ok", "invalid", "blocked", "failed"}
