"""Tests of pipeline.probes.safety: prompt screening rules and concept-list loading."""

from __future__ import annotations

import pytest

from pipeline.probes.safety import PromptScreen, load_concepts

CONFIG = {
    "terms": {"weapons": ["gun", "assault rifle"], "age": ["18+"]},
    "patterns": {"year": r"\b(19|20)\d{2}\b"},
}


def test_terms_whole_word_case_insensitive():
    s = PromptScreen(CONFIG)
    assert s.check("A GUN on a table") == (True, "weapons: 'GUN'")
    assert s.check("the show has begun") == (False, None)  # inside a word: not a match
    assert s.check("guns and roses") == (False, None)  # whole words only (list plurals explicitly)
    assert s.check("an Assault   Rifle") == (True, "weapons: 'Assault Rifle'")  # any whitespace
    assert s.check("rated 18+ only") == (True, "age: '18+'")  # punctuation at a term's edge
    assert s.check("rated 18+x") == (False, None)
    assert s.check("ａ ｇｕｎ")[0]  # full-width letters are normalised (NFKC)


def test_patterns_and_rule_order():
    s = PromptScreen(CONFIG)
    assert s.check("a photo from 1987") == (True, "year: '1987'")
    assert s.check("a gun from 1987") == (True, "weapons: 'gun'")  # terms first, in config order
    assert s.check_many(["a cat", "a gun"]) == [(False, None), (True, "weapons: 'gun'")]
    assert PromptScreen(None).check("anything") == (False, None)


def test_config_errors_echo_the_bad_value():
    with pytest.raises(ValueError, match=r"bad regular expression '\(unclosed'"):
        PromptScreen({"patterns": {"broken": "(unclosed"}})
    with pytest.raises(ValueError, match="'gun'"):
        PromptScreen({"terms": {"weapons": "gun"}})  # a string, not a list
    with pytest.raises(ValueError, match="regexes"):
        PromptScreen({"regexes": {}})
    with pytest.raises(ValueError, match="42"):
        PromptScreen(CONFIG).check(42)


def test_default_screening_list():
    s = PromptScreen.load("default")
    assert s.check("a photo of a doctor") == (False, None)
    assert s.check("a NUDE figure")[1].startswith("sexual_content:")
    assert s.check("a gory battlefield")[1].startswith("graphic_violence:")
    assert s.check("a seductive teen")[1].startswith("minor_sexualised:")
    assert s.check("a teen reading a book") == (False, None)


def test_load_concepts_shipped():
    toy = load_concepts("toyworld")
    assert toy.names == ["x_mark"] and toy.concepts[0].prompts == ("an x mark", "a black x mark")
    assert toy.special_care == [False] and toy.calibrated and toy.thresholds == [0.4]
    default = load_concepts("default")
    assert {"nudity", "violence", "gore", "weapons"} <= set(default.names)
    assert default.adjustment == 0.01 and not default.calibrated
    assert any(default.special_care) and not all(default.special_care)


def test_load_concepts_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("concepts:\n  a:\n    prompts: [x]\n    threshold: 7\n")
    with pytest.raises(ValueError, match="got 7"):
        load_concepts(f)
    f.write_text("concepts:\n  a:\n    prompts: x\n    threshold: 0.2\n")
    with pytest.raises(ValueError, match="'x'"):
        load_concepts(f)
    f.write_text("concepts:\n  a:\n    prompts: [x]\n    threshold: 0.2\n    special_care: true\n")
    with pytest.raises(ValueError, match="special_care"):
        load_concepts(f)
    with pytest.raises(ValueError, match="default"):  # unknown name: lists the shipped ones
        load_concepts("nope")
