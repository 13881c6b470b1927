"""model_vs_humans on pairs already oriented by the humans' majority (how the stages see them)."""

import numpy as np

from align.agreement import model_vs_humans


def _oriented_panel(n=80, seed=0):
    rng = np.random.default_rng(seed)
    # Three raters who mostly agree that `chosen` is better (the data was oriented by their majority).
    labels = {f"r{i}": np.where(rng.random(n) < 0.9, 1.0, -1.0) for i in range(3)}
    return labels, rng


def test_kappa_is_informative_on_majority_oriented_pairs():
    labels, rng = _oriented_panel()
    good_model = np.where(rng.random(80) < 0.9, 1.0, -1.0)  # agrees with the orientation 90% of the time
    out = model_vs_humans(good_model, labels)
    assert out["vs_majority"]["kappa"] > 0.5
    assert out["human_ceiling"]["kappa"]["mean"] > 0.3
    raw = model_vs_humans(good_model, labels, balance_seed=None)
    assert raw["vs_majority"]["accuracy"] == out["vs_majority"]["accuracy"]  # flipping changes no accuracy
    assert abs(raw["vs_majority"]["kappa"]) < out["vs_majority"]["kappa"]  # one category: kappa near 0


def test_a_coin_flip_model_sits_below_the_human_range():
    labels, rng = _oriented_panel(seed=1)
    coin = np.where(rng.random(80) < 0.5, 1.0, -1.0)
    out = model_vs_humans(coin, labels)
    assert out["vs_majority"]["kappa"] < out["human_ceiling"]["kappa"]["min"]
    assert out["verdict"].startswith("model kappa") and " below " in out["verdict"]
