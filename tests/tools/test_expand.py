"""sdgen expand: templates x slots -> prompt rows with content-derived ids and passthrough columns."""

import pyarrow.parquet as pq
import pytest
import yaml

from pipeline.tools.expand import TemplateError, expand, expand_file, prompt_id, template_slots

BASE = {
    "templates": [
        "a photo of a {profession}",
        {"template": "a {adj} {profession}", "images_per_prompt": 3, "columns": {"style": "adjective"}},
    ],
    "slots": {"profession": ["doctor", "nurse"], "adj": ["tall", "young", "old"]},
    "columns": {"domain": "people"},
}


def test_product_per_template_and_columns():
    t = expand(BASE).to_pandas()
    assert len(t) == 2 + 2 * 3
    first = t[t.template == "a photo of a {profession}"]
    assert list(first.prompt) == ["a photo of a doctor", "a photo of a nurse"]
    assert first.adj.isna().all() and (first.domain == "people").all() and first["style"].isna().all()
    second = t[t.template == "a {adj} {profession}"]
    assert set(second.prompt) == {f"a {a} {p}" for a in ("tall", "young", "old") for p in ("doctor", "nurse")}
    assert (second.images_per_prompt == 3).all() and (second["style"] == "adjective").all()
    assert first.images_per_prompt.isna().all()  # the job's images_per_prompt applies
    assert t.prompt_id.is_unique and list(t.columns[:3]) == ["prompt", "prompt_id", "template"]


def test_ids_come_from_content_not_position():
    t = expand(BASE).to_pandas().set_index("prompt")
    shuffled = {
        **BASE,
        "templates": BASE["templates"][::-1],
        "slots": {"adj": ["old", "tall", "young", "short"], "profession": ["nurse", "doctor"]},
    }
    u = expand(shuffled).to_pandas().set_index("prompt")
    assert len(u) == len(t) + 2  # the added value adds rows and changes no existing id
    assert (u.loc[t.index, "prompt_id"] == t.prompt_id).all()
    assert t.loc["a tall doctor", "prompt_id"] == prompt_id(
        "a {adj} {profession}", {"adj": "tall", "profession": "doctor"}
    )
    assert t.loc["a photo of a doctor", "prompt_id"] == prompt_id(
        "a photo of a {profession}", {"profession": "doctor"}
    )


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"templates": ["a {job}"], "slots": {"profession": ["x"]}}, "template 'a {job}' uses slot {job}"),
        (
            {"templates": ["a {profession}"], "slots": {"profession": []}},
            "slot 'profession' needs a non-empty list",
        ),
        (
            {"templates": ["a {profession}"], "slots": {"profession": ["a", "a"]}},
            "slot 'profession' lists 'a' more",
        ),
        ({"templates": ["a {seed}"], "slots": {"seed": ["1"]}}, "slot 'seed' would shadow"),
        ({"templates": ["a {0}"], "slots": {}}, "template 'a {0}': slot {0} must be a plain name"),
        ({"templates": ["a {x"], "slots": {"x": ["1"]}}, "template 'a {x' is not a valid format string"),
        (
            {"templates": ["a"], "slots": {}, "images_per_prompt": 0},
            "images_per_prompt must be an integer >= 1, got 0",
        ),
        ({"templates": [{"template": "a", "images_per_prompt": "8"}]}, "template 'a': images_per_prompt"),
        ({"templates": ["a", "a"]}, "template 'a' is listed twice"),
        ({"templates": []}, "'templates' must be a non-empty list"),
        ({"templates": ["a"], "slot": {}}, "unknown top-level keys ['slot']"),
        ({"templates": [{"template": "a", "colums": {}}]}, "templates[0] must be a string or a mapping"),
    ],
)
def test_errors_name_template_or_slot(raw, needle):
    with pytest.raises(TemplateError) as e:
        expand(raw)
    assert needle in str(e.value)


def test_template_slots_order():
    assert template_slots("{b} and {a} and {b}") == ["b", "a"]


def test_shipped_templates(tmp_path):
    toy = expand_file("configs/templates/toyworld.yaml").to_pandas()
    neutral = toy[toy.neutral]
    assert set(neutral["shape"]) == {"circle", "square", "triangle"} and neutral.colour.isna().all()
    assert "a circle" in set(neutral.prompt) and "a red circle" in set(toy[~toy.neutral].prompt)
    people = expand_file("configs/templates/professions.yaml").to_pandas()
    assert "a photo of a doctor" in set(people.prompt) and people.profession.nunique() >= 10


def test_cli_writes_parquet_and_errors_exit_2(tmp_path, capsys):
    from synth_output import cli

    src = tmp_path / "t.yaml"
    src.write_text(yaml.safe_dump(BASE))
    assert cli(["expand", src, "-o", tmp_path / "p.parquet"]) == 0
    t = pq.read_table(tmp_path / "p.parquet")
    assert t.num_rows == 8 and "wrote 8 prompts from 2 templates" in capsys.readouterr().out
    src.write_text("templates: ['a {nope}']\nslots: {}\n")
    assert cli(["expand", src, "-o", tmp_path / "q.parquet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdgen: error: ") and "{nope}" in err and str(src) in err
    assert not (tmp_path / "q.parquet").exists()


def test_expanded_prompts_run_and_pass_through(tmp_path):
    from conftest import read_output, tiny_config

    import pipeline

    raw = {
        "templates": ["a {shape}"],
        "slots": {"shape": ["circle", "square"]},
        "columns": {"neutral": True},
        "images_per_prompt": 1,
    }
    from pipeline.tools.expand import write_prompts

    write_prompts(expand(raw), str(tmp_path / "p.parquet"))
    pipeline.run(tiny_config(tmp_path / "p.parquet", tmp_path / "o"), progress=False)
    df = read_output(tmp_path / "o")
    ids = expand(raw).to_pandas().set_index("prompt").prompt_id
    assert len(df) == 2 and set(df["shape"]) == {"circle", "square"} and df.neutral.all() and "template" in df
    assert (df.set_index("prompt").prompt_id == ids.loc[df.prompt]).all()  # the run keeps the expanded ids
