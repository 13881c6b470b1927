"""model_vs_humans against a reliable panel: the planted unreliable annotator leaves the majority and the ceiling."""

import numpy as np
import pytest

from align.agreement import model_vs_humans

RELIABLE = ["r1", "r2", "r3"]


def _panel_with_a_coin_flipper(n=200, seed=3):
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    panel = {name: np.where(rng.random(n) < 0.95, truth, -truth) for name in RELIABLE}
    panel["noise"] = np.where(rng.random(n) < 0.5, truth, -truth)  # the planted unreliable rater
    model = np.where(rng.random(n) < 0.7, truth, -truth)  # a mediocre reward model
    return panel, model


@pytest.mark.filterwarnings("ignore")
def test_leaving_out_the_coin_flipper_moves_the_verdict_from_inside_to_below():
    panel, model = _panel_with_a_coin_flipper()
    out = model_vs_humans(model, panel, annotators=RELIABLE, left_out_reason="planted coin flip")
    # With the coin flipper the human range reaches down to its kappa near 0, so the mediocre model looks human.
    assert " inside the human range" in out["verdict_all_annotators"]
    assert out["verdict"].startswith("model kappa vs reliable human majority") and " below " in out["verdict"]
    assert "left out noise (leave-one-out kappa" in out["verdict"] and out["verdict"].endswith(": planted coin flip")
    assert out["reliable"]["annotators"] == RELIABLE and out["reliable"]["left_out"] == ["noise"]
    # The panel's figures are those of the reliable annotators alone: their majority and their ceiling.
    alone = model_vs_humans(model, {k: panel[k] for k in RELIABLE})
    assert out["reliable"]["vs_majority"] == alone["vs_majority"]
    assert out["reliable"]["human_ceiling"] == alone["human_ceiling"]
    assert set(out["reliable"]["human_ceiling"]["per_annotator"]) == set(RELIABLE)
    # The all-annotator figures stay as they were without a panel.
    everyone = model_vs_humans(model, panel)
    assert "reliable" not in everyone
    assert out["vs_majority"] == everyone["vs_majority"] and out["verdict_all_annotators"] == everyone["verdict"]
    assert out["vs_majority"] != out["reliable"]["vs_majority"]  # the coin flipper did sway the majority


@pytest.mark.filterwarnings("ignore")
def test_a_panel_of_everyone_leaves_nobody_out():
    panel, model = _panel_with_a_coin_flipper()
    out = model_vs_humans(model, panel, annotators=list(panel))
    assert out["reliable"]["left_out"] == [] and out["verdict"].endswith("; no annotator left out")
    assert out["reliable"]["human_ceiling"] == out["human_ceiling"]


def test_an_unknown_or_empty_panel_is_refused():
    panel, model = _panel_with_a_coin_flipper(n=20)
    with pytest.raises(ValueError, match=r"\['nobody'\] must name some"):
        model_vs_humans(model, panel, annotators=["r1", "nobody"])
    with pytest.raises(ValueError, match="must name some"):
        model_vs_humans(model, panel, annotators=[])
