"""Calibration of sigmoid(margin) on held-out pairs, and the reward-length correlation."""

import math

import numpy as np
import pytest
from scipy import stats

from align.eval.calibration import length_correlation, pair_calibration

LN3 = math.log(3.0)  # sigmoid(ln 3) = 0.75


def test_ece_and_brier_by_hand_with_a_fixed_orientation():
    # Pair 2 is shown flipped: it states sigmoid(-ln 3) = 0.25 for a side that lost (outcome 0).
    out = pair_calibration([LN3, LN3, 0.0, -LN3], n_bins=2, orientation=[1, -1, 1, 1])
    # Bin [0, 0.5): p 0.25 (y 0) and 0.25 (y 1) -> |0.25 - 0.5|; bin [0.5, 1]: p 0.75 and 0.5, both y 1 -> 0.375.
    assert out["ece"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.375)
    assert out["brier"] == pytest.approx((0.25**2 + 0.25**2 + 0.5**2 + 0.75**2) / 4)
    assert out["n"] == 4
    assert [(b["n"], b["confidence"], b["frequency"]) for b in out["bins"]] == [
        (2, pytest.approx(0.25), 0.5),
        (2, pytest.approx(0.625), 1.0),
    ]


def _oriented_margins(n, scale, seed=0):
    """Margins of held-out pairs whose preferred side won with probability sigmoid(true margin), oriented so
    chosen = the winner, as the model states them (``scale`` x the true margin)."""
    rng = np.random.default_rng(seed)
    true = rng.normal(0.0, 2.0, n)
    first_wins = rng.random(n) < 1.0 / (1.0 + np.exp(-true))
    return scale * np.where(first_wins, true, -true)


def test_a_calibrated_model_has_ece_near_zero_and_an_overconfident_one_does_not():
    calibrated = pair_calibration(_oriented_margins(20000, 1.0))
    overconfident = pair_calibration(_oriented_margins(20000, 5.0))
    assert calibrated["ece"] < 0.02
    assert overconfident["ece"] > 0.1
    assert overconfident["brier"] > calibrated["brier"]
    # The random orientation puts both outcomes in play: roughly half the pairs are shown flipped.
    shown_first = sum(b["n"] * b["frequency"] for b in calibrated["bins"] if b["n"])
    assert 0.45 < shown_first / calibrated["n"] < 0.55


def test_brier_does_not_depend_on_the_orientation_but_ece_does():
    m = _oriented_margins(500, 3.0)
    a, b = pair_calibration(m, seed=1), pair_calibration(m, orientation=np.ones(500))
    assert a["brier"] == pytest.approx(b["brier"])
    assert a["ece"] != pytest.approx(b["ece"])
    assert pair_calibration(m, seed=1) == a  # seeded: the same orientation every time


def test_calibration_refuses_bad_input_and_handles_no_pairs():
    with pytest.raises(ValueError, match="non-finite"):
        pair_calibration([1.0, math.nan])
    with pytest.raises(ValueError, match="orientation"):
        pair_calibration([1.0, 2.0], orientation=[1, 0])
    assert pair_calibration([])["ece"] is None


def test_length_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 40, 300).astype(float)  # token counts: many ties
    rewards = 0.05 * lengths + rng.normal(0, 1, 300)
    out = length_correlation(rewards, lengths)
    assert out["n"] == 300
    assert out["pearson"] == pytest.approx(stats.pearsonr(rewards, lengths).statistic, abs=1e-12)
    assert out["spearman"] == pytest.approx(stats.spearmanr(rewards, lengths).statistic, abs=1e-12)
    assert out["pearson"] > 0.2


def test_length_correlation_is_undefined_for_constant_lengths():
    assert length_correlation([1.0, 2.0, 3.0], [7, 7, 7]) == {"pearson": None, "spearman": None, "n": 3}
    with pytest.raises(ValueError, match="one value per reply"):
        length_correlation([1.0, 2.0], [3])
