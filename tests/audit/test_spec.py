"""AuditSpec: the one home of the audit's defaults; what its callers give comes out as tuples."""

import dataclasses
import inspect

import pytest

from pipeline.audit import bootstrap, stats, tables
from pipeline.audit.spec import BOOTSTRAP, LEVEL, MIN_N, AuditSpec, ProbeSpec


def test_defaults_and_normalised_fields():
    s = AuditSpec("colour", "shape", where=["shape=circle"])
    assert (s.attributes, s.group_by, s.where) == (("colour",), ("shape",), ("shape=circle",))
    assert (
        (s.bootstrap, s.min_n, s.level, s.target, s.seed)
        == (BOOTSTRAP, MIN_N, LEVEL, "uniform", 0)
        == (2000, 30, 0.95, "uniform", 0)
    )
    assert s.probe == ProbeSpec() and s.probe.kwargs() == {
        "attribute_set": None,
        "clip_model": None,
        "clip_weights": None,
        "device": "auto",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 1  # type: ignore[misc]
    assert dataclasses.replace(s, group_by=["a", "b"]).group_by == ("a", "b")


def test_the_statistics_default_to_the_spec():
    for fn in (stats.group_metrics, bootstrap.hierarchical_bootstrap, tables.audit_table, tables.compare):
        params = inspect.signature(fn).parameters
        # compare() draws no bootstrap since its differences are MOVER intervals (issue 22)
        assert "B" not in params if fn is tables.compare else params["B"].default == BOOTSTRAP, fn.__name__
        assert "min_n" not in params or params["min_n"].default == MIN_N, fn.__name__
    assert inspect.signature(tables.compare).parameters["min_n"].default == MIN_N
