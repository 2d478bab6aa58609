"""core.fmt: the one number formatter of pages, text tables and the dataset card."""

import math

import numpy as np
import pandas as pd

from pipeline.core.fmt import DASH, ci, num


def test_numbers_in_a_fixed_format_and_one_mark_where_there_is_none():
    assert num(0.12345) == "0.123" and num(np.float32(0.5), ".2f") == "0.50" and num(3, ".0%") == "300%"
    assert num(-0.0834, "+.3f") == "-0.083" and num(np.int64(7), ".2g") == "7"
    for missing in (None, math.nan, np.nan, math.inf, -np.inf, pd.NA, "n/a", [1]):
        assert num(missing) == DASH == "–"
    assert num(None, missing="-") == "-"  # the terminal tables' mark


def test_intervals():
    assert ci([0.1, 0.25]) == "[0.100, 0.250]" and ci((0.1, None), ".2f", sep=",") == "[0.10,–]"
    assert ci(None) == ci([1, 2, 3]) == ci("ab") == DASH
    assert ci([-0.15, 0.15], "+.3f", sep=",", missing="-") == "[-0.150,+0.150]"
