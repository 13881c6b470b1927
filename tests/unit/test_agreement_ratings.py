"""The agreement gate on single-response ratings (unpaired feedback): statistics against the ``krippendorff`` package
and ``sklearn``, labels from the aggregate checked against hand-computed values."""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from align.agreement import AgreementConfig, AgreementWarning, apply_rating_agreement
from align.errors import AgreementGateError


def _ratings(n_items: int, seed: int, scale=(1, 5), missing: float = 0.15) -> np.ndarray:
    """Three raters who track a latent quality with noise, and a fourth who rates at random."""
    rng = np.random.default_rng(seed)
    low, high = scale
    quality = rng.integers(low, high + 1, n_items)
    rows = [np.clip(quality + rng.integers(-1, 2, n_items), low, high) for _ in range(3)]
    rows.append(rng.integers(low, high + 1, n_items))
    m = np.vstack(rows).astype(float)
    m[rng.random(m.shape) < missing] = np.nan
    return m


def _names(m: np.ndarray) -> dict[str, np.ndarray]:
    return {f"rater_{i + 1}": row for i, row in enumerate(m)}


@pytest.mark.parametrize("level", ["interval", "ordinal", "nominal"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_on_1_to_5_ratings_matches_the_krippendorff_package_whatever_the_threshold(level, seed):
    m = _ratings(60, seed)
    ref = krippendorff.alpha(reliability_data=m, level_of_measurement=level)
    for threshold in (0, 3, 2.5):
        cfg = AgreementConfig(level=level, rating_threshold=threshold, metric="krippendorff_alpha", bootstrap=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AgreementWarning)
            outcome = apply_rating_agreement(_names(m), cfg)
        assert outcome.report["krippendorff_alpha"] == pytest.approx(ref, abs=1e-9)
        assert outcome.gate_value == pytest.approx(ref, abs=1e-9)
        assert outcome.report["labels"] == [1, 2, 3, 4, 5]  # the ratings as given, not shifted


def test_thumbs_up_and_down_are_nominal_and_match_the_package_and_sklearn():
    m = np.array(
        [
            [1, 1, -1, -1, 1, 1, -1, 1, np.nan, 1],
            [1, -1, -1, -1, 1, 1, -1, 1, 1, 1],
        ]
    )
    outcome = apply_rating_agreement(_names(m), AgreementConfig(metric="krippendorff_alpha", bootstrap=0))
    assert outcome.report["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=m, level_of_measurement="nominal"), abs=1e-9
    )
    both = ~np.isnan(m).any(0)
    assert outcome.report["cohen_kappa_pairwise"]["rater_1|rater_2"] == pytest.approx(
        cohen_kappa_score(m[0, both], m[1, both]), abs=1e-9
    )


def test_labels_by_vote_mean_and_median_match_hand_computed_values():
    # threshold 3. Items: (5,4,5) all above; (1,2,1) all below; (3,3,2) two on it, one below; (5,2,2) one above,
    # two below; (4,4,1) two above, one below (mean 3: on the threshold); (2,None,5) one each side.
    ratings = {
        "a": [5, 1, 3, 5, 4, 2],
        "b": [4, 2, 3, 2, 4, None],
        "c": [5, 1, 2, 2, 1, 5],
    }
    expected = {
        # vote: plurality of the sides (+1 above, -1 below, 0 on the threshold); a tie has no label
        "vote": [(1, None), (-1, None), (0, "tie"), (-1, None), (1, None), (0, "tie")],
        # mean: 4.67, 1.33, 2.67, 3.0, 3.0, 3.5
        "mean": [(1, None), (-1, None), (-1, None), (0, "tie"), (0, "tie"), (1, None)],
        # median: 5, 1, 3, 2, 4, 3.5
        "median": [(1, None), (-1, None), (0, "tie"), (-1, None), (1, None), (1, None)],
    }
    for rule, want in expected.items():
        cfg = AgreementConfig(rating_threshold=3, rating_label=rule, bootstrap=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AgreementWarning)
            outcome = apply_rating_agreement(ratings, cfg)
        assert [(v.orientation, v.drop_reason) for v in outcome.votes] == want, rule
        assert outcome.report["rating_label"] == rule
    # The share of votes on the winning side: (5,2,2) under the median is 2 of 3 below.
    cfg = AgreementConfig(rating_threshold=3, rating_label="median", min_item_agreement=0.7, bootstrap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        votes = apply_rating_agreement(ratings, cfg).votes
    assert votes[3].agreement == pytest.approx(2 / 3) and votes[3].drop_reason == "low_agreement"
    assert votes[0].drop_reason is None


def test_a_random_rater_is_dropped_by_the_leave_one_out_kappa_of_their_votes():
    m = _ratings(200, seed=5, missing=0.0)
    cfg = AgreementConfig(rating_threshold=3, level="interval", drop_annotators_below=0.2, bootstrap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        outcome = apply_rating_agreement(_names(m), cfg)
    assert list(outcome.dropped_annotators) == ["rater_4"]
    assert outcome.report["annotators"] == ["rater_1", "rater_2", "rater_3"]
    # Without the random rater alpha is higher than with it (computed by the package on both panels).
    with_all = krippendorff.alpha(reliability_data=m, level_of_measurement="interval")
    assert outcome.report["krippendorff_alpha"] == pytest.approx(
        krippendorff.alpha(reliability_data=m[:3], level_of_measurement="interval"), abs=1e-9
    )
    assert outcome.report["krippendorff_alpha"] > with_all


def test_the_rating_gate_fails_below_its_minimum_and_names_the_fix():
    rng = np.random.default_rng(3)
    noise = {f"r{i}": rng.integers(1, 6, 50).astype(float) for i in range(3)}
    cfg = AgreementConfig(
        rating_threshold=3, level="interval", metric="krippendorff_alpha", min=0.4, on_fail="error", bootstrap=0
    )
    with pytest.raises(AgreementGateError, match=r"krippendorff_alpha = -?0\.\d+ is below agreement.min = 0.4"):
        apply_rating_agreement(noise, cfg)


def test_ratio_level_is_refused_for_ratings_and_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="ratio"):
        apply_rating_agreement({"a": [1, 2], "b": [1, 2]}, AgreementConfig(level="ratio", bootstrap=0))
    with pytest.raises(ValueError, match="rating_label"):
        AgreementConfig(rating_label="mode")
    with pytest.raises(ValueError, match="rating_threshold"):
        AgreementConfig(rating_threshold=float("nan"))
    with pytest.raises(ValueError, match="level"):
        AgreementConfig(level="fuzzy")
