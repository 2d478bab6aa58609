"""The one number formatter of sdgen: the report pages (also as the jinja filters `num` and `ci`), the
audit's text tables and the dataset card. A number prints in a fixed format; where there is none
(None, NaN, ±inf, pd.NA, not a number at all) one mark prints instead."""

from __future__ import annotations

import math
import numbers

DASH = "–"  # what a missing number prints as (the audit's terminal tables pass missing="-")


def num(x, spec: str = ".3f", missing: str = DASH) -> str:
    """``x`` formatted by the format spec ``spec`` (".3f", "+.3f", ".0%", ".2g"), or ``missing``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return missing
    if not math.isfinite(v):
        return missing
    return format(x if isinstance(x, numbers.Number) else v, spec)


def ci(pair, spec: str = ".3f", sep: str = ", ", missing: str = DASH) -> str:
    """An interval "[low, high]", each end by `num`; ``missing`` when ``pair`` is not two values."""
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        return missing
    return f"[{num(pair[0], spec, missing)}{sep}{num(pair[1], spec, missing)}]"
