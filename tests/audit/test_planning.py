"""Audit planning (`sdgen audit-plan`, pipeline/audit/planning.py): the closed form against a hand
computation, the pilot's correlation against a known table, and the promise itself: a planned design
meets its target in >= 90% (half-width) / 80% (power) of simulated audits it was not planned on."""

import numpy as np
import pytest
from synth_output import cli, make_output, row

from pipeline.audit import planning as PL


def test_closed_form_half_width_by_hand():
    # t_{9, 0.975} = 2.2622; Var = 0.3 * 0.7 * (1 + 7 * 0.05) / 80 = 0.00354375
    assert PL.closed_form_half_width(0.3, 0.05, 10, 8) == pytest.approx(
        2.262157 * np.sqrt(0.00354375), rel=1e-5
    )
    # no correlation: images anywhere count alike
    assert PL.closed_form_half_width(0.5, 0.0, 20, 4) == pytest.approx(
        PL.closed_form_half_width(0.5, 0.0, 20, 4)
    )


def test_pilot_correlation_from_a_known_table():
    # 4 prompts of 10 images with shares 0.1, 0.1, 0.5, 0.5: p = 0.3, v_bin = 0.21/40,
    # v_clu = 4/3 * sum(m^2 (p_j - p)^2) / n^2 = 4/3 * 100 * 4 * 0.04 / 1600 = 0.01333...
    table = np.array([[1, 9], [1, 9], [5, 5], [5, 5]])
    icc = PL.pilot_icc({"g": table})
    deff = (4 / 3 * 100 * 4 * 0.04 / 1600) / (0.21 / 40)
    p, rho, P, n = icc[0]["groups"]["g"]
    assert (p, P, n) == (pytest.approx(0.3), 4, 40) and rho == pytest.approx((deff - 1) / 9)
    assert icc[0]["estimable"] and icc[0]["pooled"] == pytest.approx(rho)
    few = PL.pilot_icc({"g": table[:2]})  # 2 prompts: nothing to estimate the correlation from
    assert not few[0]["estimable"] and few[0]["pooled"] == PL.ASSUMED_ICC


def test_a_planned_half_width_holds_in_independent_simulated_audits():
    p, rho, target = 0.3, 0.05, 0.1
    (d,) = PL.plan_half_width(p, rho, target, ms=(8,), reps=120, seed=0)
    assert d.reached and d.prompts >= PL.MIN_PROMPTS
    fresh = PL._class0_intervals(p, rho, d.prompts, 8, 0.95, 400, seed=12345)
    reach = float(np.mean((fresh[:, 1] - fresh[:, 0]) / 2 <= target))
    assert reach >= PL.REACH - 0.03, reach  # 400 audits: SE of the reach ~0.015
    # and the plan is not wasteful: a fifth fewer prompts misses the target
    fewer = PL._class0_intervals(p, rho, int(d.prompts * 0.8), 8, 0.95, 400, seed=12345)
    assert float(np.mean((fewer[:, 1] - fewer[:, 0]) / 2 <= target)) < PL.REACH


def test_a_planned_disparity_design_has_its_power_in_independent_simulated_audits():
    p_ref, delta, rho, groups = 0.5, 0.2, 0.05, 4
    (d,) = PL.plan_disparity(p_ref, delta, rho, groups, 0.05, ms=(8,), reps=120, seed=0)
    assert d.reached
    power = PL.detect_rate(p_ref, delta, rho, d.prompts, 8, 1 - 0.05 / groups, reps=400, seed=999)
    assert power >= PL.POWER - 0.04, power


def test_more_images_per_prompt_buy_less_than_more_prompts():
    """Kish: with rho = 0.1, images past ~1/rho per prompt add little, so the images needed grow."""
    small, big = PL.plan_half_width(0.5, 0.1, 0.1, ms=(4, 64), reps=100, seed=0)
    assert small.images < big.images and small.prompts > big.prompts


def test_cli_stated_assumptions_and_bad_input(capsys):
    assert (
        cli(
            [
                "audit-plan",
                "--share",
                "0.3",
                "--icc",
                "0.05",
                "--half-width",
                "0.1",
                "--images-per-prompt",
                "8",
                "--reps",
                "100",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "share 0.300, between-prompt correlation 0.050" in out and "cheapest:" in out
    for argv, msg in [
        (["--half-width", "0.1"], "give --share P and --icc RHO"),
        (["--share", "0.3", "--icc", "0.05"], "exactly one target"),
        (["--share", "1.3", "--icc", "0.05", "--half-width", "0.1"], "--share must be in [0, 1), got 1.3"),
    ]:
        assert cli(["audit-plan", *argv]) == 2
        assert msg in capsys.readouterr().err


def test_cli_plans_from_a_pilot_output(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = []
    for g in ("circle", "square"):
        for j in range(4):  # 4 prompts of 8 images, prompt shares of "red" 0.2 or 0.6
            share = 0.2 if j % 2 else 0.6
            rows += [row(f"{g}{j}", k, "red" if rng.random() < share else "blue", group=g) for k in range(8)]
    out = make_output(tmp_path / "pilot", rows)
    argv = ["audit-plan", out, "--attribute", "colour", "--class", "red", "--group-by", "shape"]
    assert cli([*argv, "--half-width", "0.15", "--images-per-prompt", "8", "--reps", "60"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("colour=red: share") and "2 group(s)" in text and "cheapest:" in text
    assert "cannot be estimated" not in text  # 4 prompts per group: the pilot estimates rho
