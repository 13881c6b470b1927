"""Tests for align.agreement: published examples, cross-checks with reference packages, undefined cases, voting."""

from __future__ import annotations

import json
import math
import warnings

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from align.agreement import (
    PAIRWISE_CONVENTION,
    AgreementConfig,
    AgreementGateError,
    AgreementWarning,
    aggregate,
    agreement_report,
    annotations_by_annotator,
    apply_agreement,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    fleiss_table,
    format_report,
    krippendorff_alpha,
    landis_koch_band,
    leave_one_out_kappa,
    map_labels,
    model_vs_humans,
    pairwise_kappa,
    percent_agreement,
    scores_to_preference,
)

NAN = math.nan

# Fleiss (1971) / Wikipedia worked example: 10 subjects, 5 categories, 14 raters each.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units, values 1..5.
KRIPPENDORFF_DATA = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def _panel(n_items: int = 300, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """3 annotators who agree with a hidden +-1 truth 90% of the time, and one who labels at random."""
    rng = np.random.default_rng(seed)
    truth = rng.choice([-1.0, 1.0], size=n_items)
    panel = {}
    for name in ("r1", "r2", "r3"):
        panel[name] = np.where(rng.random(n_items) < 0.9, truth, -truth)
    panel["noise"] = rng.choice([-1.0, 1.0], size=n_items)
    return panel, truth


# ----------------------------------------------------------------------------------------------------------------
# Published worked examples
# ----------------------------------------------------------------------------------------------------------------


def test_cohen_kappa_reproduces_worked_example_of_0_40():
    # Confusion matrix [[20, 5], [10, 15]] over 50 items: rows = rater A, columns = rater B.
    cells = {(1, 1): 20, (1, -1): 5, (-1, 1): 10, (-1, -1): 15}
    a = [x for (x, _), n in cells.items() for _ in range(n)]
    b = [y for (_, y), n in cells.items() for _ in range(n)]
    assert len(a) == 50
    assert cohen_kappa(a, b) == pytest.approx(0.40, abs=1e-12)


def test_fleiss_kappa_reproduces_classic_14_rater_example():
    assert round(fleiss_kappa(FLEISS_TABLE), 3) == 0.210


@pytest.mark.parametrize(
    ("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_alpha_reproduces_published_example(level, expected):
    assert round(krippendorff_alpha(np.array(KRIPPENDORFF_DATA), level), 3) == expected


# ----------------------------------------------------------------------------------------------------------------
# Cross-checks against reference implementations
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_labels", [2, 3, 7])
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_kappa_matches_sklearn_on_random_labels_with_missing(n_labels, weights):
    rng = np.random.default_rng(100 * n_labels + len(weights or ""))
    scale = np.arange(n_labels, dtype=float) - n_labels // 2
    a = rng.choice(scale, size=400)
    b = np.where(rng.random(400) < 0.6, a, rng.choice(scale, size=400))
    a_missing = a.copy()
    a_missing[rng.random(400) < 0.15] = np.nan
    both = ~np.isnan(a_missing)
    ours = cohen_kappa(a_missing, b, weights=weights)
    ref = cohen_kappa_score(a[both], b[both], weights=weights)
    assert ours == pytest.approx(ref, abs=1e-9)
    # An explicit label list (the full scale) gives the same positions as sklearn's `labels`.
    ours_labels = cohen_kappa(a_missing, b, weights=weights, labels=list(scale))
    assert ours_labels == pytest.approx(cohen_kappa_score(a[both], b[both], weights=weights, labels=scale), abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_fleiss_kappa_matches_statsmodels_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    n_raters, n_cats = int(rng.integers(2, 9)), int(rng.integers(2, 6))
    probs = rng.dirichlet(np.ones(n_cats))
    table = np.stack([rng.multinomial(n_raters, probs) for _ in range(60)])
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-9)


def test_fleiss_table_from_raw_labels_matches_statsmodels_aggregate_raters():
    rng = np.random.default_rng(7)
    matrix = rng.integers(-1, 2, size=(5, 80)).astype(float)
    table, cats = fleiss_table(matrix)
    ref_table, ref_cats = aggregate_raters(matrix.T)
    assert cats == [-1, 0, 1]
    np.testing.assert_array_equal(table, ref_table)
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(ref_table), abs=1e-9)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
@pytest.mark.parametrize("seed", range(3))
def test_krippendorff_alpha_matches_krippendorff_package_with_missing_values(level, seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, 6, size=70).astype(float)
    data = np.stack([np.where(rng.random(70) < 0.7, truth, rng.integers(1, 6, size=70)) for _ in range(4)])
    data[rng.random(data.shape) < 0.25] = np.nan
    if level in ("interval", "ratio"):
        data = data + 0.5 * (rng.random(data.shape) < 0.2)  # a few non-integer values
    ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level) == pytest.approx(ref, abs=1e-9)


def test_krippendorff_alpha_on_signed_preference_labels_matches_package_for_ordinal_and_interval():
    rng = np.random.default_rng(3)
    data = rng.integers(-3, 4, size=(3, 50)).astype(float)
    data[rng.random(data.shape) < 0.2] = np.nan
    for level in ("nominal", "ordinal", "interval"):
        ref = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        assert krippendorff_alpha(data, level) == pytest.approx(ref, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Percent agreement and the label matrix forms
# ----------------------------------------------------------------------------------------------------------------


def test_percent_agreement_averages_agreeing_pair_fractions_over_items_with_two_labels():
    matrix = {
        "a": [1, 1, 1, None],
        "b": [1, -1, 1, 1],
        "c": [1, 1, None, None],
    }
    # item 0: 3/3 pairs agree; item 1: 1/3; item 2: 1/1; item 3: one label, left out.
    assert percent_agreement(matrix) == pytest.approx((1 + 1 / 3 + 1) / 3)


def test_dict_and_array_inputs_give_the_same_statistics():
    panel, _ = _panel(60, seed=4)
    array = np.stack(list(panel.values()))
    array[0, :5] = np.nan
    as_dict = {k: [None if np.isnan(v) else v for v in row] for k, row in zip(panel, array, strict=True)}
    assert krippendorff_alpha(as_dict) == krippendorff_alpha(array)
    assert percent_agreement(as_dict) == percent_agreement(array)
    assert pairwise_kappa(as_dict) == pairwise_kappa(array, list(panel))


def test_annotations_by_annotator_transposes_record_annotations():
    per_record = [{"ann1": 1, "ann2": -1}, None, {"ann2": 0, "ann3": 1}]
    assert annotations_by_annotator(per_record) == {
        "ann1": [1.0, None, None],
        "ann2": [-1.0, None, 0.0],
        "ann3": [None, None, 1.0],
    }


# ----------------------------------------------------------------------------------------------------------------
# Undefined and invalid input
# ----------------------------------------------------------------------------------------------------------------


def test_single_category_makes_every_chance_corrected_statistic_nan_with_a_warning():
    same = np.ones((3, 10))
    with pytest.warns(AgreementWarning, match="single category"):
        assert math.isnan(cohen_kappa(same[0], same[1]))
    with pytest.warns(AgreementWarning, match="single category"):
        assert math.isnan(fleiss_kappa([[3, 0]] * 10))
    with pytest.warns(AgreementWarning, match="no variation"):
        assert math.isnan(krippendorff_alpha(same))
    # Raw agreement is still perfectly defined.
    assert percent_agreement(same) == 1.0


def test_fewer_than_two_labels_on_every_item_gives_nan_with_a_warning():
    matrix = np.array([[1, NAN, -1], [NAN, 1, NAN]])
    with pytest.warns(AgreementWarning, match="two or more"):
        assert math.isnan(krippendorff_alpha(matrix))
    with pytest.warns(AgreementWarning, match="two or more"):
        assert math.isnan(percent_agreement(matrix))
    with pytest.warns(AgreementWarning, match="no labelled item in common"):
        assert math.isnan(cohen_kappa(matrix[0], matrix[1]))
    with pytest.warns(AgreementWarning, match="at least two"):
        assert math.isnan(fleiss_kappa([[1, 0], [0, 1]]))


def test_single_annotator_has_no_pairs_and_undefined_agreement():
    with pytest.warns(AgreementWarning):
        assert math.isnan(krippendorff_alpha({"only": [1, -1, 1]}))
    assert pairwise_kappa({"only": [1, -1, 1]}) == {}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: cohen_kappa([1, -1, 1], [1, -1]), "different numbers of items"),
        (lambda: cohen_kappa([], []), "at least one item"),
        (lambda: cohen_kappa([1, -1], [1, 1], weights="cubic"), "weights"),
        (lambda: cohen_kappa([1, 2], [1, 1], labels=[0, 1]), "label 2 is not among"),
        (lambda: krippendorff_alpha({"a": [1, 0], "b": [1]}), "different numbers of items"),
        (lambda: krippendorff_alpha({}), "empty"),
        (lambda: krippendorff_alpha(np.zeros((2, 0))), "empty"),
        (lambda: krippendorff_alpha(np.ones(4)), "2-D"),
        (lambda: krippendorff_alpha([[1, 0]], level="fuzzy"), "level"),
        (lambda: krippendorff_alpha([[1, -1], [1, 1]], level="ratio"), "non-negative"),
        (lambda: percent_agreement({"a": ["A", "B"], "b": [1, 1]}), "map_labels"),
        (lambda: percent_agreement({"a": [1, math.inf], "b": [1, 1]}), "infinite"),
        (lambda: fleiss_kappa([[2, 1], [1, 1]]), "same number of raters"),
        (lambda: fleiss_kappa([[1.5, 1.5]]), "whole counts"),
        (lambda: fleiss_kappa([]), "non-empty"),
        (lambda: pairwise_kappa({"a|x": [1], "b": [1]}), r"contain '\|'"),
    ],
)
def test_structurally_invalid_input_raises_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_fleiss_table_keeps_items_with_the_modal_rater_count_and_warns():
    matrix = np.array(
        [
            [1, 1, -1, 1, 1],
            [1, -1, -1, NAN, 1],
            [1, 1, NAN, NAN, -1],
        ]
    )
    # Items 0, 1, 4 have 3 labels (the mode), item 2 has 2, item 3 has 1.
    with pytest.warns(AgreementWarning, match="kept 3 of 5 items"):
        table, cats = fleiss_table(matrix)
    assert cats == [-1, 1]
    np.testing.assert_array_equal(table, [[0, 3], [1, 2], [1, 2]])


def test_fleiss_table_rejects_labels_outside_the_given_categories():
    with pytest.raises(ValueError, match="label 2 is not among"):
        fleiss_table([[1, 2], [1, 1]], categories=[0, 1])


# ----------------------------------------------------------------------------------------------------------------
# Landis-Koch bands
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (-0.01, "poor"),
        (0.0, "slight"),
        (0.20, "slight"),
        (0.21, "fair"),
        (0.40, "fair"),
        (0.41, "moderate"),
        (0.6, "moderate"),
        (0.61, "substantial"),
        (0.8, "substantial"),
        (0.81, "almost perfect"),
        (1.0, "almost perfect"),
        (0.1 + 0.2 - 0.1, "slight"),  # 0.20000000000000004: float noise stays in the inclusive band
        (NAN, "undefined"),
        (None, "undefined"),
    ],
)
def test_landis_koch_band_boundaries(value, band):
    assert landis_koch_band(value) == band


def test_landis_koch_band_rejects_values_above_one():
    with pytest.raises(ValueError, match="at most 1"):
        landis_koch_band(1.5)


# ----------------------------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------------------------


def test_bootstrap_ci_is_seeded_and_contains_the_point_estimate():
    panel, _ = _panel(150, seed=1)
    point = krippendorff_alpha(panel)
    first = bootstrap_ci(krippendorff_alpha, panel, n_boot=300, seed=11)
    again = bootstrap_ci(krippendorff_alpha, panel, n_boot=300, seed=11)
    other = bootstrap_ci(krippendorff_alpha, panel, n_boot=300, seed=12)
    assert tuple(first) == tuple(again)
    assert tuple(first) != tuple(other)
    low, high = first
    assert low < point < high
    assert high - low < 0.3
    assert first.n_undefined == 0 and first.n_boot == 300


def test_bootstrap_ci_skips_and_counts_undefined_resamples():
    # One disagreeing item among 30 agreeing ones: a resample without it has a single category (kappa undefined).
    a = [1.0] * 30 + [1.0]
    b = [1.0] * 30 + [-1.0]
    matrix = np.array([a, b])
    ci = bootstrap_ci(lambda m: cohen_kappa(m[0], m[1]), matrix, n_boot=200, seed=0, max_undefined=0.9)
    # P(item 31 absent from a resample of 31) = (30/31)^31 ~ 0.36.
    assert 30 < ci.n_undefined < 120
    assert not math.isnan(ci.low)
    with pytest.warns(AgreementWarning, match="undefined on"):
        strict = bootstrap_ci(lambda m: cohen_kappa(m[0], m[1]), matrix, n_boot=200, seed=0, max_undefined=0.1)
    assert math.isnan(strict.low) and math.isnan(strict.high)
    assert strict.n_undefined == ci.n_undefined


def test_bootstrap_ci_rejects_bad_settings():
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(percent_agreement, [[1, 1], [1, 1]], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(percent_agreement, [[1, 1], [1, 1]], alpha=1.5)


# ----------------------------------------------------------------------------------------------------------------
# Label helpers
# ----------------------------------------------------------------------------------------------------------------


def test_scores_to_preference_uses_the_tie_tolerance_and_keeps_missing_as_nan():
    out = scores_to_preference([3.0, 1.0, 2.0, 2.05, None], [1.0, 3.0, 2.0, 2.0, 1.0], tie_tolerance=0.1)
    np.testing.assert_array_equal(out, [1.0, -1.0, 0.0, 0.0, NAN])
    assert scores_to_preference(2.05, 2.0) == 1.0
    per_annotator = scores_to_preference(np.array([[5, 1], [2, 2]]), np.array([[4, 3], [2, 1]]))
    np.testing.assert_array_equal(per_annotator, [[1, -1], [0, 1]])
    with pytest.raises(ValueError, match="different shapes"):
        scores_to_preference([1, 2], [1])
    with pytest.raises(ValueError, match="tie_tolerance"):
        scores_to_preference([1], [1], tie_tolerance=-1)


def test_map_labels_converts_raw_labels_case_insensitively():
    out = map_labels(["A", " b ", "Tie", "chosen", "REJECTED", 1, "-1", None, ""], PAIRWISE_CONVENTION)
    np.testing.assert_array_equal(out, [1, -1, 0, 1, -1, 1, -1, NAN, NAN])
    ordinal = map_labels(["much better", "slightly worse"], {"much better": 3, "slightly worse": -1})
    np.testing.assert_array_equal(ordinal, [3, -1])


def test_map_labels_names_an_unknown_label_and_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown label 'C' at position 1; known labels: \['A', 'B', 'tie'\]"):
        map_labels(["A", "C"], {"A": 1, "B": -1, "tie": 0})


# ----------------------------------------------------------------------------------------------------------------
# Pairwise and leave-one-out kappa, a simulated panel
# ----------------------------------------------------------------------------------------------------------------


def test_pairwise_kappa_is_cohen_on_the_items_both_labelled():
    matrix = np.array([[1, -1, 1, NAN, 1], [1, -1, -1, 1, 1], [NAN, -1, 1, 1, -1]])
    out = pairwise_kappa(matrix, ["x", "y", "z"])
    assert list(out) == ["x|y", "x|z", "y|z"]
    assert out["x|z"] == pytest.approx(cohen_kappa_score([-1, 1, 1], [-1, 1, -1]))


def test_random_annotator_has_the_clearly_lowest_leave_one_out_kappa():
    panel, _ = _panel()
    loo = leave_one_out_kappa(panel)
    reliable = [loo[n] for n in ("r1", "r2", "r3")]
    assert min(loo, key=loo.get) == "noise"
    assert abs(loo["noise"]) < 0.15
    assert min(reliable) > 0.6
    assert min(reliable) - loo["noise"] > 0.45


def test_adversarial_annotator_gets_a_negative_leave_one_out_kappa():
    panel, truth = _panel(200, seed=2)
    panel["noise"] = -truth
    assert leave_one_out_kappa(panel)["noise"] < -0.5


def test_leave_one_out_leaves_out_items_where_the_others_split():
    # Annotator "a" vs majority of b, c: item 2 splits (1 vs -1) and item 3 is unlabelled by a.
    matrix = {"a": [1, -1, 1, None, -1], "b": [1, -1, 1, 1, 1], "c": [1, -1, -1, 1, 1]}
    loo = leave_one_out_kappa(matrix)
    assert loo["a"] == pytest.approx(cohen_kappa([1, -1, -1], [1, -1, 1]))


def test_apply_agreement_drops_exactly_the_random_annotator():
    panel, _ = _panel()
    cfg = AgreementConfig(drop_annotators_below=0.2, bootstrap=0)
    with pytest.warns(AgreementWarning, match="dropping annotators.*noise"):
        outcome = apply_agreement(panel, cfg)
    assert list(outcome.dropped_annotators) == ["noise"]
    assert outcome.report["annotators"] == ["r1", "r2", "r3"]
    full = agreement_report(panel, n_boot=0)
    assert outcome.report["fleiss_kappa"] > full["fleiss_kappa"] + 0.1


# ----------------------------------------------------------------------------------------------------------------
# Aggregation
# ----------------------------------------------------------------------------------------------------------------

# Hand-built items (columns), three annotators (rows):
#   0: +1 +1 +1  unanimous keep          4: -  -  -   no labels
#   1: -1 -1 +1  flip, agreement 2/3     5: +1 -1  0  three-way split: tie, agreement 1/3
#   2: +1 -1  -  split: tie, agr. 1/2    6: +2 +3 -1  ordinal, sign vote: keep, agreement 2/3
#   3:  0  0 +1  humans say tie, 2/3     7: +1  -  -  single vote: keep, agreement 1
HAND = np.array(
    [
        [1, -1, 1, 0, NAN, 1, 2, 1],
        [1, -1, -1, 0, NAN, -1, 3, NAN],
        [1, 1, NAN, 1, NAN, 0, -1, NAN],
    ]
)


def test_aggregate_majority_votes_orientation_agreement_and_margin():
    votes = aggregate(HAND)
    assert [v.orientation for v in votes] == [1, -1, 0, 0, 0, 0, 1, 1]
    assert [v.n_votes for v in votes] == [3, 3, 2, 3, 0, 3, 3, 1]
    assert votes[1].agreement == pytest.approx(2 / 3)
    assert votes[1].margin == pytest.approx(1 / 3)  # in the flipped pair: 2 for, 1 against
    assert votes[2].agreement == pytest.approx(1 / 2)
    assert votes[5].agreement == pytest.approx(1 / 3)
    assert votes[0].margin == 1.0 and votes[3].margin == 0.0
    assert [v.drop_reason for v in votes] == [None, None, "tie", "tie", "no_labels", "tie", None, None]


def test_aggregate_min_item_agreement_drops_weak_majorities_and_ties():
    votes = aggregate(HAND, min_item_agreement=0.7, ties="drop")
    assert [i for i, v in enumerate(votes) if v.kept] == [0, 7]
    assert [v.drop_reason for v in votes] == [
        None,
        "low_agreement",
        "tie",
        "tie",
        "no_labels",
        "tie",
        "low_agreement",
        None,
    ]


def test_aggregate_keeps_ties_that_pass_the_agreement_threshold():
    votes = aggregate(HAND, min_item_agreement=0.5, ties="keep")
    assert [i for i, v in enumerate(votes) if v.kept] == [0, 1, 2, 3, 6, 7]
    assert votes[5].drop_reason == "low_agreement"
    assert votes[4].drop_reason == "no_labels"
    assert votes[3].kept and votes[3].orientation == 0


def test_aggregate_unanimous_requires_every_vote_on_the_winning_side():
    votes = aggregate(HAND, rule="unanimous", ties="keep")
    assert [i for i, v in enumerate(votes) if v.kept] == [0, 7]
    assert votes[3].drop_reason == "low_agreement"


def test_apply_agreement_counts_drop_reasons_and_flips():
    names = ["a", "b", "c"]
    annotations = {n: list(row) for n, row in zip(names, HAND, strict=True)}
    cfg = AgreementConfig(min_item_agreement=0.7, ties="drop", bootstrap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        outcome = apply_agreement(annotations, cfg)
    assert outcome.drop_reasons == {"tie": 3, "low_agreement": 2, "no_labels": 1}
    assert outcome.n_kept == 2 and outcome.n_flipped == 0
    loose = apply_agreement(annotations, AgreementConfig(bootstrap=0))
    assert loose.n_kept == 4 and loose.n_flipped == 1
    assert loose.gate_passed is None


# ----------------------------------------------------------------------------------------------------------------
# Config, gate, report
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metric": "cohen"}, "agreement.metric must be one of"),
        ({"min": 1.5}, r"agreement.min must be a number in \[-1, 1\]"),
        ({"on_fail": "stop"}, "'error' or 'warn'"),
        ({"drop_annotators_below": "low"}, "agreement.drop_annotators_below"),
        ({"aggregate": "mean"}, "'majority' or 'unanimous'"),
        ({"min_item_agreement": 67}, r"in \[0, 1\].*0.67"),
        ({"ties": "split"}, "'drop' or 'keep'"),
        ({"margin_from_votes": "yes"}, "true or false"),
        ({"bootstrap": -1}, "0 disables"),
        ({"seed": 1.5}, "agreement.seed"),
    ],
)
def test_agreement_config_rejects_bad_fields_with_a_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AgreementConfig(**kwargs)


def test_agreement_config_defaults():
    cfg = AgreementConfig()
    assert (cfg.metric, cfg.min, cfg.on_fail, cfg.bootstrap, cfg.seed) == ("fleiss_kappa", None, "warn", 1000, 0)


def test_gate_error_names_metric_value_threshold_and_the_recipe_fix():
    panel, _ = _panel(100, seed=5)
    cfg = AgreementConfig(metric="krippendorff_alpha", min=0.95, on_fail="error", bootstrap=0)
    value = krippendorff_alpha(panel)
    with pytest.raises(AgreementGateError, match=rf"krippendorff_alpha = {value:.3f}.*agreement.min = 0.95") as err:
        apply_agreement(panel, cfg)
    assert "agreement.on_fail" in str(err.value)


def test_gate_warns_and_continues_when_on_fail_is_warn():
    panel, _ = _panel(100, seed=5)
    cfg = AgreementConfig(metric="cohen_kappa_mean", min=0.95, on_fail="warn", bootstrap=0)
    with pytest.warns(AgreementWarning, match="gate failed: cohen_kappa_mean"):
        outcome = apply_agreement(panel, cfg)
    assert outcome.gate_passed is False
    assert outcome.gate_value == pytest.approx(np.mean(list(pairwise_kappa(panel).values())))
    assert len(outcome.votes) == 100
    passing = apply_agreement(panel, AgreementConfig(metric="percent_agreement", min=0.5, bootstrap=0))
    assert passing.gate_passed is True


def test_gate_treats_undefined_agreement_as_failed():
    single_category = {"a": [1, 1, 1], "b": [1, 1, 1]}
    cfg = AgreementConfig(min=0.2, on_fail="error", bootstrap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        with pytest.raises(AgreementGateError, match="fleiss_kappa = undefined"):
            apply_agreement(single_category, cfg)


def test_agreement_report_has_the_documented_keys_and_is_json_serialisable():
    panel, _ = _panel(80, seed=6)
    panel["r1"] = [None if i % 7 == 0 else v for i, v in enumerate(panel["r1"])]
    report = agreement_report(panel, n_boot=100, seed=0)
    assert set(report) == {
        "n_items",
        "n_annotators",
        "annotators",
        "labels",
        "percent_agreement",
        "cohen_kappa_pairwise",
        "fleiss_kappa",
        "fleiss_items",
        "krippendorff_alpha",
        "per_annotator",
        "headline",
        "band",
        "ci",
    }
    json.dumps(report, allow_nan=False)
    assert report["n_items"] == 80 and report["n_annotators"] == 4 and report["labels"] == [-1, 1]
    assert report["fleiss_items"] == 80 - len(range(0, 80, 7))
    assert report["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(panel))
    assert report["headline"] == {"metric": "fleiss_kappa", "value": report["fleiss_kappa"]}
    assert report["band"] == landis_koch_band(report["fleiss_kappa"])
    pair_keys = {f"cohen_kappa:{k}" for k in report["cohen_kappa_pairwise"]}
    assert set(report["ci"]) == {"percent_agreement", "fleiss_kappa", "krippendorff_alpha"} | pair_keys
    low, high = report["ci"]["krippendorff_alpha"]
    assert low <= report["krippendorff_alpha"] <= high


def test_agreement_report_maps_undefined_values_to_none_and_skips_bootstrap_when_asked():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        report = agreement_report({"a": [1, 1], "b": [1, 1]}, n_boot=0)
    assert report["fleiss_kappa"] is None and report["krippendorff_alpha"] is None
    assert report["band"] == "undefined"
    assert report["ci"]["fleiss_kappa"] == [None, None]
    json.dumps(report, allow_nan=False)


def test_format_report_shows_every_figure():
    panel, _ = _panel(60, seed=8)
    report = agreement_report(panel, n_boot=50)
    text = format_report(report)
    assert f"{report['fleiss_kappa']:.3f}" in text
    assert f"{report['krippendorff_alpha']:.3f}" in text
    for pair, value in report["cohen_kappa_pairwise"].items():
        assert pair in text and f"{value:.3f}" in text
    assert "noise" in text and "<- lowest" in text.split("noise")[-1].splitlines()[0]


# ----------------------------------------------------------------------------------------------------------------
# Reward model vs humans
# ----------------------------------------------------------------------------------------------------------------


def test_model_equal_to_the_majority_scores_perfectly_against_it():
    panel, _ = _panel(120, seed=9)
    majority = np.sign(sum(np.asarray(v) for v in panel.values()) + 0.5)  # 4 +-1 voters: ties broken below
    counts = np.stack([np.asarray(v) for v in panel.values()])
    split = (counts == 1).sum(0) == 2
    model = np.where(split, 1.0, majority) * 3.7  # score differences: only the sign is used
    out = model_vs_humans(model, panel)
    assert out["vs_majority"]["accuracy"] == 1.0
    assert out["vs_majority"]["kappa"] == pytest.approx(1.0)
    assert out["vs_majority"]["n_items"] == int((~split).sum())
    assert "above the human range" in out["verdict"]
    json.dumps(out, allow_nan=False)


def test_random_model_sits_below_the_human_ceiling():
    panel, _ = _panel(300, seed=10)
    del panel["noise"]
    model = np.random.default_rng(0).normal(size=300)
    out = model_vs_humans(model, panel)
    assert out["vs_majority"]["kappa"] < out["human_ceiling"]["kappa"]["min"]
    assert out["vs_majority"]["accuracy"] < out["human_ceiling"]["accuracy"]["mean"]
    assert "below the human range" in out["verdict"]
    assert set(out["vs_annotators"]) == {"r1", "r2", "r3"}


def test_model_vs_humans_rejects_a_length_mismatch():
    with pytest.raises(ValueError, match="model_pref has 2 items but the annotations have 3"):
        model_vs_humans([1, -1], {"a": [1, 1, 1], "b": [1, -1, 1]})


# ----------------------------------------------------------------------------------------------------------------
# Refusals, messages and edge cases (added from mutation testing: docs/faults.md, "Mutation testing")
# ----------------------------------------------------------------------------------------------------------------


def _said(fn, *args, **kwargs) -> tuple[object, list[str]]:
    """fn's result and the AgreementWarnings it emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, AgreementWarning)]


def test_cohen_kappa_errors_and_warnings_say_which_annotator_and_why():
    with pytest.raises(ValueError, match=r"^first annotator's labels, item 1: "):
        cohen_kappa([1, "x"], [1, 1])
    with pytest.raises(ValueError, match=r"^second annotator's labels, item 0: "):
        cohen_kappa([1, 1], ["y", 1])
    with pytest.raises(ValueError, match=r"^cohen_kappa needs at least one item\.$"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match=r"^label 3 is not among the cohen_kappa categories \[-1, 1\]"):
        cohen_kappa([1, 3], [1, -1], labels=[-1, 1])
    value, said = _said(cohen_kappa, [1, None], [None, 1])
    assert math.isnan(value) and said == [
        "Cohen's kappa is undefined: the two annotators have no labelled item in common."
    ]
    value, said = _said(cohen_kappa, [1, 1], [1, 1])
    assert math.isnan(value) and said[0].startswith(
        "Cohen's kappa is undefined: both annotators use a single category ([1])"
    )


def test_fleiss_kappa_refuses_tables_that_are_not_whole_equal_row_counts():
    for bad in (np.zeros((0, 3)), np.zeros((2, 0)), [1, 2, 3]):
        with pytest.raises(ValueError, match=r"^a Fleiss table must be a non-empty items x categories array"):
            fleiss_kappa(bad)
    with pytest.raises(
        ValueError, match=r"^a Fleiss table holds non-negative whole counts \(raters per item and category\)\.$"
    ):
        fleiss_kappa([[3, -1], [1, 1]])  # rows sum to 2, but -1 is not a count
    with pytest.raises(ValueError) as err:
        fleiss_kappa([[2, 0], [1, 2], [1, 2]])
    assert str(err.value).startswith(
        "Fleiss' kappa needs the same number of raters on every item: item 0 has 2, item 1 has 3;"
    )
    assert str(err.value).endswith("or use krippendorff_alpha(), which allows missing labels.")


def test_fleiss_kappa_with_two_raters_and_with_one_item_matches_statsmodels():
    two = [[2, 0], [1, 1], [0, 2], [2, 0], [1, 1]]
    assert fleiss_kappa(two) == pytest.approx(sm_fleiss_kappa(np.array(two), method="fleiss"))
    one = [[2, 1, 0]]
    assert fleiss_kappa(one) == pytest.approx(sm_fleiss_kappa(np.array(one), method="fleiss"))
    value, said = _said(fleiss_kappa, [[3, 0], [3, 0]])
    assert math.isnan(value) and said == [
        "Fleiss' kappa is undefined: all ratings fall in a single category, so chance agreement is 1."
    ]


def test_fleiss_table_keeps_items_with_the_modal_label_count_and_says_what_it_left_out():
    # Items with 2 labels are the mode (3 of them); one item has 3 labels, one has 1.
    m = [[1, 1, -1, 1, 1], [1, -1, -1, 1, None], [None, None, None, 1, None]]
    (table, cats), said = _said(fleiss_table, m)
    assert cats == [-1, 1] and table.tolist() == [[0, 2], [1, 1], [2, 0]]
    assert said == [
        "fleiss_table: kept 3 of 5 items (those with 2 labels); left out 2 with a different number of labels. "
        "krippendorff_alpha() uses every item."
    ]
    (table, _), said = _said(fleiss_table, [[1, 1, 1], [1, None, None]])  # one item has two labels
    assert table.tolist() == [[2]] and "kept 1 of 3 items (those with 2 labels); left out 2" in said[0]
    (table, _), said = _said(fleiss_table, [[1, 1], [1, 1]])  # one category: still a table
    assert table.tolist() == [[2], [2]] and said == []
    (table, cats), said = _said(fleiss_table, [[1, None], [None, -1]])  # no item has two labels
    assert table.shape == (0, 2) and "kept 0 of 2 items (those with 0 labels); left out 2" in said[0]
    (table, cats), said = _said(fleiss_table, [[NAN, NAN, NAN]])  # no labels at all
    assert table.shape == (0, 0) and cats == [] and "kept 0 of 3 items (those with 0 labels); left out 3" in said[0]
    with pytest.raises(ValueError, match=r"label 0 is not among the fleiss_table categories \[-1, 1\]"):
        fleiss_table([[1, 0], [1, 1]], categories=[1, -1])


def test_report_s_fleiss_kappa_is_undefined_only_when_no_item_has_two_labels():
    report, said = _said(agreement_report, {"a": [1, None], "b": [None, -1]}, n_boot=0)
    assert report["fleiss_kappa"] is None
    assert "Fleiss' kappa is undefined: no item has two or more labels." in said
    report, _ = _said(agreement_report, {"a": [1, -1, None], "b": [1, None, 1]}, n_boot=0)
    assert report["fleiss_items"] == 1  # one item has two labels: Fleiss' kappa is computed on it
    assert report["fleiss_kappa"] is None or not math.isnan(report["fleiss_kappa"])
    assert (
        "Fleiss' kappa is undefined: no item has two or more labels."
        not in _said(agreement_report, {"a": [1, -1, None], "b": [1, None, 1]}, n_boot=0)[1]
    )


def test_ratio_alpha_with_zero_and_one_matches_the_krippendorff_package():
    data = [[0, 1, 2, 3, 0, 1, NAN], [0, 1, 3, 3, 1, 1, 2], [1, 1, 2, NAN, 0, 2, 2]]
    ours = krippendorff_alpha(data, "ratio")
    ref = krippendorff.alpha(reliability_data=np.array(data, dtype=float), level_of_measurement="ratio")
    assert ours == pytest.approx(ref, rel=1e-9)


def test_krippendorff_alpha_refusals_and_undefined_cases_say_why():
    with pytest.raises(
        ValueError,
        match=r"^ratio-level alpha needs non-negative values, got -1; use level='interval' for signed preference labels\.$",
    ):
        krippendorff_alpha([[-1, 0, 1], [1, 0, -1]], "ratio")
    value, said = _said(krippendorff_alpha, [[NAN, NAN], [NAN, NAN]])
    assert math.isnan(value) and said == ["Krippendorff's alpha is undefined: there are no labels."]
    value, said = _said(krippendorff_alpha, [[1, NAN], [NAN, 2]])
    assert math.isnan(value) and said == [
        "Krippendorff's alpha is undefined: no item has labels from two or more annotators."
    ]
    value, said = _said(krippendorff_alpha, [[1, 1, -1], [1, 1, NAN]])  # -1 sits on an item with one label
    assert math.isnan(value) and said == [
        "Krippendorff's alpha is undefined: the pairable labels show no variation (values [1]), so expected "
        "disagreement is 0."
    ]


def test_percent_agreement_undefined_cases_say_why():
    value, said = _said(percent_agreement, [[NAN, NAN]])
    assert math.isnan(value) and said == ["percent agreement is undefined: there are no labels."]
    value, said = _said(percent_agreement, [[1, NAN], [NAN, 1]])
    assert math.isnan(value) and said == [
        "percent agreement is undefined: no item has labels from two or more annotators."
    ]


def test_landis_koch_bounds_absorb_floating_point_noise_of_1e_9():
    assert landis_koch_band(1.0 + 1e-9) == "almost perfect"
    assert landis_koch_band(0.20 + 1e-9) == "slight"
    with pytest.raises(ValueError, match="at most 1"):
        landis_koch_band(1.0 + 1e-6)


def _percentile_bootstrap(stat, m, n_boot, seed, alpha=0.05):
    """The documented procedure, written out: resample the items (columns) with replacement from
    numpy's default_rng(seed), then take the alpha/2 and 1 - alpha/2 quantiles."""
    m = np.asarray(m, dtype=float)
    idx = np.random.default_rng(seed).integers(0, m.shape[1], size=(n_boot, m.shape[1]))
    values = np.array([stat(m[:, i]) for i in idx])
    return tuple(np.quantile(values, [alpha / 2, 1 - alpha / 2]))


def test_bootstrap_interval_is_the_percentile_interval_of_seeded_item_resamples():
    m = [[1, -1, 1, 1, -1, 0, 1, 1], [1, -1, -1, 1, -1, 0, 1, -1], [1, 1, 1, 1, -1, 0, -1, 1]]
    for alpha in (0.05, 0.2):
        ours = bootstrap_ci(percent_agreement, m, n_boot=200, seed=3, alpha=alpha)
        assert ours == pytest.approx(_percentile_bootstrap(percent_agreement, m, 200, 3, alpha))
    default = bootstrap_ci(percent_agreement, m)  # 1000 resamples, seed 0
    assert default.n_boot == 1000 and default == pytest.approx(_percentile_bootstrap(percent_agreement, m, 1000, 0))
    assert bootstrap_ci(percent_agreement, m, n_boot=1).n_boot == 1  # one resample is a (degenerate) interval


def test_bootstrap_refuses_bad_resample_counts_and_alphas():
    m = [[1, -1, 1], [1, 1, 1]]
    for n_boot in (0, True, 2.5):
        with pytest.raises(ValueError, match="n_boot must be a positive int"):
            bootstrap_ci(percent_agreement, m, n_boot=n_boot)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
            bootstrap_ci(percent_agreement, m, alpha=alpha)


def test_bootstrap_gives_up_past_max_undefined_resamples_and_counts_them():
    m = [[1, -1, 1, 1], [1, 1, -1, 1]]

    def undefined_first(k):
        calls = {"n": 0}

        def stat(x):
            calls["n"] += 1
            return NAN if calls["n"] <= k else float(np.nansum(x))

        return stat

    exactly_10 = bootstrap_ci(undefined_first(1), m, n_boot=10)  # 10% undefined: still an interval
    assert not math.isnan(exactly_10.low) and exactly_10.n_undefined == 1
    over, said = _said(bootstrap_ci, undefined_first(2), m, n_boot=10)  # 20% > the default 10%
    assert math.isnan(over.low) and over.n_boot == 10 and over.n_undefined == 2
    assert said == ["bootstrap interval undefined: the statistic was undefined on 2 of 10 resamples (more than 10%)."]
    one_left = bootstrap_ci(undefined_first(9), m, n_boot=10, max_undefined=1.0)
    assert one_left.low == one_left.high and not math.isnan(one_left.low)


def test_bootstrap_silences_only_the_agreement_warnings_of_its_resamples():
    def noisy(x):
        warnings.warn("something else is wrong", RuntimeWarning, stacklevel=2)
        return 1.0

    with pytest.warns(RuntimeWarning, match="something else is wrong"):
        bootstrap_ci(noisy, [[1, 1], [1, -1]], n_boot=3)


def test_leave_one_out_kappa_undefined_for_one_annotator_keeps_the_others():
    # "x" labels only item 2, where the others split 1-1: no majority to compare with.
    matrix = {"x": [None, None, 1, None], "a": [1, -1, 1, 1], "b": [1, -1, -1, 1], "c": [1, -1, None, 1]}
    loo, said = _said(leave_one_out_kappa, matrix)
    assert list(loo) == ["x", "a", "b", "c"] and math.isnan(loo["x"])
    assert "leave-one-out kappa for 'x' is undefined: no item with its label and a majority of the others." in said


def test_aggregate_refuses_unknown_rules_and_agreement_outside_0_1():
    m = [[1, -1], [1, 1]]
    with pytest.raises(ValueError, match=r"^rule must be 'majority' or 'unanimous', got 'most'\.$"):
        aggregate(m, rule="most")
    with pytest.raises(ValueError, match=r"^ties must be 'drop' or 'keep', got 'coin'\.$"):
        aggregate(m, ties="coin")
    with pytest.raises(ValueError, match=r"^min_item_agreement is a fraction of votes in \[0, 1\], got 1\.5\.$"):
        aggregate(m, min_item_agreement=1.5)
    votes = aggregate(m, min_item_agreement=1.0)  # everyone must agree: the first item is kept, the second not
    assert [v.drop_reason for v in votes] == [None, "tie"]


def test_an_item_nobody_labelled_is_dropped_with_no_agreement_and_no_margin():
    (vote,) = aggregate([[NAN], [NAN]])
    assert vote.drop_reason == "no_labels" and vote.orientation == 0 and vote.n_votes == 0
    assert math.isnan(vote.agreement) and vote.margin == 0.0
