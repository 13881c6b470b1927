"""Known-answer and statistical-sanity tests for align.compare_stats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from align.compare_stats import (
    distinct_n,
    implicit_reward_accuracy,
    length_controlled_win_rate,
    mcnemar,
    mean_with_ci,
    pass_rate,
    sample_kl,
    self_judging_warning,
    wilson_interval,
    win_rate,
    win_rate_ci,
    win_rate_matrix,
)

# --------------------------------------------------------------------------------------------------------------
# win_rate
# --------------------------------------------------------------------------------------------------------------


def test_win_rate_is_one_when_a_beats_b_by_a_constant():
    b = np.random.default_rng(0).normal(size=50)
    result = win_rate(b + 0.3, b)
    assert result == {"wins": 50, "ties": 0, "losses": 0, "n": 50, "win_rate": 1.0}


def test_identical_scores_are_all_ties_and_win_rate_half():
    s = np.random.default_rng(1).normal(size=30)
    result = win_rate(s, s.copy())
    assert result["ties"] == 30 and result["wins"] == 0 and result["losses"] == 0
    assert result["win_rate"] == 0.5


def test_three_wins_one_tie_one_loss_counts_tie_as_half():
    a = [2.0, 3.0, 4.0, 1.0, 0.0]
    b = [1.0, 1.0, 1.0, 1.0, 5.0]
    result = win_rate(a, b)
    assert (result["wins"], result["ties"], result["losses"]) == (3, 1, 1)
    assert result["win_rate"] == pytest.approx(0.7)


def test_tie_tolerance_turns_near_equal_scores_into_ties():
    a = [1.00, 2.00, 3.0]
    b = [1.01, 1.995, 1.0]
    assert win_rate(a, b)["ties"] == 0
    tolerant = win_rate(a, b, tie_tolerance=0.02)
    assert (tolerant["wins"], tolerant["ties"], tolerant["losses"]) == (1, 2, 0)
    assert tolerant["win_rate"] == pytest.approx((1 + 0.5 * 2) / 3)


def test_win_rate_of_a_over_b_and_b_over_a_sum_to_one():
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 3, size=40).astype(float), rng.integers(0, 3, size=40).astype(float)
    assert win_rate(a, b)["win_rate"] + win_rate(b, a)["win_rate"] == pytest.approx(1.0)


def test_win_rate_rejects_unpaired_or_non_finite_scores():
    with pytest.raises(ValueError, match="same prompts"):
        win_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        win_rate([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="tie_tolerance"):
        win_rate([1.0], [1.0], tie_tolerance=-1.0)


# --------------------------------------------------------------------------------------------------------------
# bootstrap confidence intervals
# --------------------------------------------------------------------------------------------------------------


def test_same_seed_gives_same_ci_and_other_seed_differs():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(size=60)
    first = win_rate_ci(a, b, seed=7)
    assert win_rate_ci(a, b, seed=7) == first
    other = win_rate_ci(a, b, seed=8)
    assert (other["low"], other["high"]) != (first["low"], first["high"])
    assert mean_with_ci(a, seed=5) == mean_with_ci(a, seed=5)


def test_ci_contains_point_estimate():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.2, 1.0, size=80), rng.normal(size=80)
    wr = win_rate_ci(a, b)
    assert wr["low"] <= wr["win_rate"] <= wr["high"]
    m = mean_with_ci(a)
    assert m["low"] <= m["mean"] <= m["high"]
    assert m["n"] == 80


def test_ci_shrinks_as_prompts_grow():
    rng = np.random.default_rng(5)
    small_a, small_b = rng.normal(0.3, 1.0, size=20), rng.normal(size=20)
    big_a, big_b = rng.normal(0.3, 1.0, size=2000), rng.normal(size=2000)
    small, big = win_rate_ci(small_a, small_b), win_rate_ci(big_a, big_b)
    assert big["high"] - big["low"] < 0.5 * (small["high"] - small["low"])
    small_m, big_m = mean_with_ci(small_a), mean_with_ci(big_a)
    assert big_m["high"] - big_m["low"] < 0.5 * (small_m["high"] - small_m["low"])


def test_clearly_better_model_ci_lies_above_half():
    rng = np.random.default_rng(6)
    b = rng.normal(size=200)
    a = rng.normal(1.5, 1.0, size=200)
    result = win_rate_ci(a, b)
    assert result["low"] > 0.5


def test_paired_bootstrap_keeps_prompts_aligned():
    # Prompt difficulty varies wildly but a beats b on every prompt: a paired resample can never see a loss.
    base = np.random.default_rng(7).normal(0.0, 100.0, size=100)
    result = win_rate_ci(base + 0.01, base)
    assert result["low"] == result["high"] == 1.0


def test_bootstrap_ci_contains_true_bernoulli_rate():
    outcomes = (np.random.default_rng(8).random(400) < 0.7).astype(float)
    result = mean_with_ci(outcomes, seed=0)
    assert result["low"] < 0.7 < result["high"]
    # Same data through the win-rate path (win = 1, loss = 0) gives the same interval.
    wr = win_rate_ci(outcomes, np.full(400, 0.5), seed=0)
    assert (wr["low"], wr["high"]) == pytest.approx((result["low"], result["high"]))


def test_bootstrap_coverage_is_near_nominal_over_many_datasets():
    rng = np.random.default_rng(9)
    hits = 0
    trials = 200
    for t in range(trials):
        outcomes = (rng.random(400) < 0.7).astype(float)
        ci = mean_with_ci(outcomes, n_boot=400, seed=t)
        hits += ci["low"] <= 0.7 <= ci["high"]
    assert 0.88 <= hits / trials <= 0.99


def test_bootstrap_arguments_are_validated():
    with pytest.raises(ValueError, match="n_boot"):
        mean_with_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        mean_with_ci([1.0, 2.0], alpha=1.5)
    with pytest.raises(ValueError, match="empty"):
        mean_with_ci([])


# --------------------------------------------------------------------------------------------------------------
# win_rate_matrix
# --------------------------------------------------------------------------------------------------------------


def _three_checkpoints() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(10)
    base = rng.normal(size=120)
    return {
        "sft": base + rng.normal(0.0, 0.5, size=120),
        "dpo": base + 0.4 + rng.normal(0.0, 0.5, size=120),
        "ppo": base + 0.6 + rng.normal(0.0, 0.5, size=120),
    }


def test_win_rate_matrix_diagonal_is_half_and_pairs_are_complementary():
    scores = _three_checkpoints()
    m = win_rate_matrix(scores, n_boot=300)
    assert list(m) == ["sft", "dpo", "ppo"]
    for a in scores:
        assert m[a][a]["win_rate"] == 0.5
        for b in scores:
            assert m[a][b]["win_rate"] + m[b][a]["win_rate"] == pytest.approx(1.0)
            assert m[a][b]["low"] == pytest.approx(1.0 - m[b][a]["high"])
            assert m[a][b]["wins"] == m[b][a]["losses"]


def test_win_rate_matrix_entries_match_win_rate_ci_and_are_json_friendly():
    scores = _three_checkpoints()
    m = win_rate_matrix(scores, n_boot=300, seed=3)
    assert m["sft"]["ppo"] == win_rate_ci(scores["sft"], scores["ppo"], n_boot=300, seed=3)
    assert m["ppo"]["sft"]["win_rate"] > 0.5
    assert json.loads(json.dumps(m)) == m


def test_win_rate_matrix_rejects_checkpoints_scored_on_different_prompts():
    with pytest.raises(ValueError, match="different numbers of prompts"):
        win_rate_matrix({"a": [1.0, 2.0], "b": [1.0]})
    with pytest.raises(ValueError, match="empty"):
        win_rate_matrix({})


# --------------------------------------------------------------------------------------------------------------
# length-controlled win rate
# --------------------------------------------------------------------------------------------------------------


def test_length_control_removes_a_pure_length_advantage():
    rng = np.random.default_rng(11)
    n = 1000
    len_a = rng.uniform(50, 250, size=n)
    len_b = rng.uniform(50, 250, size=n) + 100.0  # b tends to be longer, same quality otherwise
    scores_a = 0.02 * len_a + rng.normal(0.0, 1.0, size=n)
    scores_b = 0.02 * len_b + rng.normal(0.0, 1.0, size=n)
    result = length_controlled_win_rate(scores_b, scores_a, len_b, len_a, n_boot=500)
    assert result["raw_win_rate"] > 0.75
    assert abs(result["lc_win_rate"] - 0.5) < 0.06
    assert result["low"] < 0.5 < result["high"]
    assert result["length_coef"] > 0  # longer answers win


def test_length_control_matches_raw_win_rate_without_length_effect():
    rng = np.random.default_rng(12)
    n = 1000
    len_a, len_b = rng.uniform(50, 250, size=n), rng.uniform(50, 250, size=n)
    scores_a = rng.normal(0.5, 1.0, size=n)
    scores_b = rng.normal(0.0, 1.0, size=n)
    result = length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=500)
    assert result["lc_win_rate"] == pytest.approx(result["raw_win_rate"], abs=0.03)
    assert abs(result["length_coef"]) < 0.2
    assert result["low"] <= result["lc_win_rate"] <= result["high"]


def test_logistic_fit_matches_sklearn_with_ties_as_half_weight_rows():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(13)
    n = 300
    len_a, len_b = rng.integers(20, 200, size=n).astype(float), rng.integers(20, 200, size=n).astype(float)
    scores_a = np.round(0.01 * len_a + rng.normal(0.0, 1.0, size=n), 1)
    scores_b = np.round(0.01 * len_b + rng.normal(0.2, 1.0, size=n), 1)
    result = length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=50)
    assert result["ties"] > 0  # the rounding makes some ties, so the tie handling is exercised

    x = (len_a - len_b) / np.std(np.concatenate([len_a, len_b]))
    diff = scores_a - scores_b
    tie = diff == 0
    # Wins and losses as single rows; each tie as a win row and a loss row of weight 0.5.
    X = np.concatenate([x[~tie], x[tie], x[tie]])[:, None]
    y = np.concatenate([(diff[~tie] > 0).astype(int), np.ones(tie.sum(), int), np.zeros(tie.sum(), int)])
    w = np.concatenate([np.ones((~tie).sum()), np.full(tie.sum(), 0.5), np.full(tie.sum(), 0.5)])
    oracle = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12, max_iter=1000)
    oracle.fit(X, y, sample_weight=w)

    assert result["intercept"] == pytest.approx(oracle.intercept_[0], abs=1e-4)
    assert result["length_coef"] == pytest.approx(oracle.coef_[0, 0], abs=1e-4)
    assert result["lc_win_rate"] == pytest.approx(1.0 / (1.0 + math.exp(-oracle.intercept_[0])), abs=1e-4)


def test_length_control_stays_finite_when_a_wins_every_prompt():
    rng = np.random.default_rng(14)
    len_a, len_b = rng.uniform(10, 100, size=40), rng.uniform(10, 100, size=40)
    result = length_controlled_win_rate(np.ones(40), np.zeros(40), len_a, len_b, n_boot=200)
    assert result["raw_win_rate"] == 1.0
    assert math.isfinite(result["intercept"]) and math.isfinite(result["length_coef"])
    assert result["lc_win_rate"] > 0.99


def test_length_control_is_seeded_and_handles_equal_lengths():
    rng = np.random.default_rng(15)
    a, b = rng.normal(0.3, 1.0, size=100), rng.normal(size=100)
    lengths = np.full(100, 80.0)
    first = length_controlled_win_rate(a, b, lengths, lengths, n_boot=200, seed=4)
    assert length_controlled_win_rate(a, b, lengths, lengths, n_boot=200, seed=4) == first
    # With no length differences the model is intercept-only, so the LC rate is the raw rate (up to the ridge).
    assert first["lc_win_rate"] == pytest.approx(first["raw_win_rate"], abs=1e-4)


def test_length_control_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="lengths"):
        length_controlled_win_rate([1.0, 2.0], [0.0, 1.0], [1.0], [2.0])
    with pytest.raises(ValueError, match=">= 0"):
        length_controlled_win_rate([1.0, 2.0], [0.0, 1.0], [1.0, -3.0], [2.0, 2.0])


# --------------------------------------------------------------------------------------------------------------
# distinct_n
# --------------------------------------------------------------------------------------------------------------


def test_distinct_n_hand_examples():
    assert distinct_n(["a b a b"], 1) == 0.5
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert distinct_n(["the cat", "the dog"], 1) == pytest.approx(3 / 4)


def test_distinct_n_does_not_join_ngrams_across_texts():
    # Joined, "a b a b" would give 3 bigrams (2 unique); per text there are 2 bigrams, both "a b".
    assert distinct_n(["a b", "a b"], 2) == 0.5


def test_distinct_n_is_zero_without_ngrams_and_rejects_bad_input():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["one", ""], 2) == 0.0
    with pytest.raises(ValueError, match="one string"):
        distinct_n("a b a b", 1)
    with pytest.raises(ValueError, match="positive integer"):
        distinct_n(["a b"], 0)


# --------------------------------------------------------------------------------------------------------------
# sample_kl
# --------------------------------------------------------------------------------------------------------------


def test_sample_kl_is_zero_for_identical_logprobs():
    lp = np.log(np.random.default_rng(16).uniform(0.05, 1.0, size=(10, 6)))
    result = sample_kl(lp, lp.copy(), np.ones_like(lp))
    assert result["mean"] == result["low"] == result["high"] == 0.0
    assert result["k3_mean"] == 0.0


def test_sample_kl_hand_example_ignores_masked_padding():
    policy = np.array([[-1.0, -2.0, np.nan], [-0.5, -0.5, -0.5]])
    ref = np.array([[-1.5, -1.0, -np.inf], [-0.5, -1.0, -0.5]])
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    result = sample_kl(policy, ref, mask, n_boot=100)
    # Sequence 1: (-1 + 1.5) + (-2 + 1) = -0.5; sequence 2: 0.5 + 0 = 0.5.
    assert result["mean"] == pytest.approx(0.0)
    k3_seq1 = (math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0)
    k3_seq2 = math.exp(-0.5) - 1 + 0.5
    assert result["k3_mean"] == pytest.approx((k3_seq1 + k3_seq2) / 2)
    assert result["n"] == 2


def test_sample_kl_estimates_true_kl_on_policy_samples():
    rng = np.random.default_rng(17)
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.2, 0.2, 0.2, 0.2, 0.2])
    tokens = rng.choice(5, size=(4000, 3), p=p)
    result = sample_kl(np.log(p)[tokens], np.log(q)[tokens], np.ones(tokens.shape), n_boot=500)
    true_kl = 3 * float(np.sum(p * np.log(p / q)))
    assert result["low"] < true_kl < result["high"]
    assert result["k3_mean"] == pytest.approx(true_kl, rel=0.05)


def test_sample_kl_rejects_bad_shapes_and_masks():
    with pytest.raises(ValueError, match="shapes differ"):
        sample_kl(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="only 0 and 1"):
        sample_kl(np.zeros((2, 3)), np.zeros((2, 3)), np.full((2, 3), 2))
    with pytest.raises(ValueError, match="non-finite"):
        sample_kl(np.zeros((1, 2)), np.array([[0.0, -np.inf]]), np.ones((1, 2)))


# --------------------------------------------------------------------------------------------------------------
# implicit_reward_accuracy
# --------------------------------------------------------------------------------------------------------------


def test_implicit_reward_accuracy_counts_zero_margin_as_half():
    result = implicit_reward_accuracy([1.0, -1.0, 0.0, 2.0], n_boot=200)
    assert result["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert result["n"] == 4
    assert result["low"] <= result["accuracy"] <= result["high"]


def test_implicit_reward_accuracy_ci_covers_true_rate():
    margins = np.random.default_rng(18).normal(0.5244, 1.0, size=400)  # P(margin > 0) = 0.7
    result = implicit_reward_accuracy(margins)
    assert result["low"] < 0.7 < result["high"]


# --------------------------------------------------------------------------------------------------------------
# self_judging_warning
# --------------------------------------------------------------------------------------------------------------


def test_self_judging_warning_flags_only_checkpoints_trained_against_the_judge():
    trained = {"sft": None, "dpo": None, "ppo": "/runs/rm/final", "ppo_other": "/runs/rm2/final"}
    warnings = self_judging_warning("/runs/rm/final/", trained)
    assert len(warnings) == 1
    text = warnings[0]
    assert "'ppo'" in text and "ppo_other" not in text
    assert "WARNING" in text and "inflated" in text and "disjoint judge" in text


def test_self_judging_warning_is_empty_for_a_disjoint_judge():
    assert self_judging_warning("sha256:abc", {"ppo": "sha256:def", "sft": None}) == []
    assert len(self_judging_warning("sha256:abc", {"ppo": "sha256:abc", "ppo2": "sha256:abc"})) == 2
    with pytest.raises(ValueError, match="judge_id"):
        self_judging_warning("", {"ppo": "x"})


def test_exact_kl_is_summed_per_response_and_must_be_a_divergence():
    lp = np.log(np.full((2, 3), 0.5))
    lq = np.log(np.full((2, 3), 0.25))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    exact = np.array([[0.1, 0.2, 9.0], [0.3, 0.0, 0.3]])  # the 9.0 sits under mask 0: ignored
    out = sample_kl(lp, lq, mask, n_boot=200, exact_token_kl=exact)
    assert out["exact_mean"] == pytest.approx((0.3 + 0.6) / 2)
    assert out["exact_low"] <= out["exact_mean"] <= out["exact_high"]
    with pytest.raises(ValueError, match="KL divergence"):
        sample_kl(lp, lq, mask, n_boot=200, exact_token_kl=-exact)


# --------------------------------------------------------------------------------------------------------------
# length-controlled win rate: unpenalised intercept and identifiability
# --------------------------------------------------------------------------------------------------------------


def _mixed_lengths() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(12)
    n = 1000
    len_a, len_b = rng.uniform(50, 250, size=n), rng.uniform(50, 250, size=n)
    return 0.02 * len_a + rng.normal(0.5, 1.0, size=n), 0.02 * len_b + rng.normal(0.0, 1.0, size=n), len_a, len_b


def test_well_mixed_lengths_are_identifiable_and_match_the_penalised_fit_closely():
    result = length_controlled_win_rate(*_mixed_lengths(), n_boot=300)
    assert result["identifiable"] is True and result["note"] is None
    assert result["near_equal_support"] >= result["support_needed"] == 100
    # figures of the previous fit (ridge 1e-4 on both coefficients) on the same data and seed
    assert result["lc_win_rate"] == pytest.approx(0.6662588451491422, abs=1e-5)
    assert result["intercept"] == pytest.approx(0.6913125443694159, abs=1e-5)
    assert result["length_coef"] == pytest.approx(1.4078553437635455, abs=1e-5)
    assert (result["low"], result["high"]) == pytest.approx((0.630271354108772, 0.7003212622526526), abs=1e-5)


def test_one_checkpoint_always_60_tokens_longer_is_not_identifiable():
    rng = np.random.default_rng(20)
    n = 200
    len_b = rng.uniform(50, 250, size=n)
    len_a = len_b + 60 + rng.normal(0.0, 3.0, size=n)
    result = length_controlled_win_rate(rng.normal(0.3, 1.0, size=n), rng.normal(size=n), len_a, len_b, n_boot=100)
    assert result["identifiable"] is False
    assert result["lc_win_rate"] is None and result["low"] is None and result["high"] is None
    assert result["intercept"] is None
    assert result["near_equal_support"] == 0 and result["support_needed"] == 20
    assert "not identifiable" in result["note"] and "longer" in result["note"] and "+" in result["note"]
    assert 0.0 <= result["raw_win_rate"] <= 1.0 and math.isfinite(result["length_coef"])
    assert json.loads(json.dumps(result)) == result


def test_identifiability_needs_enough_prompts_near_equal_length_on_both_sides():
    # 100 prompts: 10 with a 5 tokens shorter (x well within 0.25 SD) and 90 with a 100 tokens longer
    len_b = np.full(100, 100.0)
    len_a = np.where(np.arange(100) < 10, 95.0, 200.0)
    scores_a, scores_b = np.random.default_rng(21).normal(size=(2, 100))
    assert length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=50)["identifiable"] is True
    len_a[9] = 200.0  # only 9 of the needed 10 left on the short side
    assert length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=50)["identifiable"] is False


def test_intercept_is_not_shrunk_toward_half():
    # Equal lengths leave an intercept-only model, whose unpenalised fit is the raw rate exactly, whatever the ridge.
    lengths = np.full(10, 50.0)
    scores_a = np.array([1.0] * 8 + [0.0] * 2)
    result = length_controlled_win_rate(scores_a, np.full(10, 0.5), lengths, lengths, n_boot=50, ridge=1.0)
    assert result["lc_win_rate"] == pytest.approx(0.8, abs=1e-9)


# --------------------------------------------------------------------------------------------------------------
# Wilson interval, pass rates, McNemar
# --------------------------------------------------------------------------------------------------------------


def test_wilson_interval_matches_statsmodels_and_a_hand_value():
    from statsmodels.stats.proportion import proportion_confint

    for n in (1, 7, 40, 120, 1000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for alpha in (0.05, 0.1):
                expected = proportion_confint(k, n, alpha=alpha, method="wilson")
                assert wilson_interval(k, n, alpha) == pytest.approx(expected, abs=1e-12), (k, n, alpha)
    # by hand, k = 0 of n = 10 at 95%: z = 1.959964, upper = z^2 / (n + z^2) = 3.841459 / 13.841459
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(3.841459 / 13.841459, abs=1e-6)


def test_wilson_interval_rejects_impossible_counts():
    with pytest.raises(ValueError, match="positive integer"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="between 0 and n"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="alpha"):
        wilson_interval(1, 4, alpha=0.0)


def test_pass_rate_leaves_out_prompts_where_the_check_does_not_apply():
    result = pass_rate([True, None, False, True, None, True])
    assert (result["k"], result["n"], result["rate"]) == (3, 4, 0.75)
    assert (result["low"], result["high"]) == pytest.approx(wilson_interval(3, 4))
    assert pass_rate([None, None]) == {"rate": None, "low": None, "high": None, "k": 0, "n": 0}
    with pytest.raises(ValueError, match="True, False or None"):
        pass_rate([1, 0])


def test_mcnemar_hand_example():
    # 1 prompt broken (b), 6 fixed (c), 3 unchanged, 1 dropped for a None: p = 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125
    ref = [True, False, False, False, False, False, False, True, True, False, None]
    new = [False, True, True, True, True, True, True, True, True, False, True]
    result = mcnemar(ref, new)
    assert (result["b"], result["c"], result["n_discordant"], result["n"]) == (1, 6, 7, 10)
    assert result["p_value"] == pytest.approx(0.125)
    assert result["statistic"] == 1 and result["direction"] == "better"
    assert mcnemar(new[:-1], ref[:-1])["direction"] == "worse"
    same = mcnemar([True, False], [True, False])
    assert same["p_value"] == 1.0 and same["direction"] == "same" and same["n_discordant"] == 0


def test_mcnemar_matches_statsmodels_exact_test_on_random_tables():
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    rng = np.random.default_rng(22)
    for _ in range(60):
        n = int(rng.integers(5, 300))
        ref = rng.random(n) < rng.uniform(0.1, 0.9)
        new = np.where(rng.random(n) < rng.uniform(0.0, 0.5), ~ref, ref)
        table = [[np.sum(ref & new), np.sum(ref & ~new)], [np.sum(~ref & new), np.sum(~ref & ~new)]]
        expected = sm_mcnemar(table, exact=True)
        result = mcnemar(list(ref), list(new))
        assert result["p_value"] == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        assert result["statistic"] == expected.statistic


def test_mcnemar_rejects_unpaired_outcomes():
    with pytest.raises(ValueError, match="same prompts"):
        mcnemar([True], [True, False])


# --------------------------------------------------------------------------------------------------------------
# sampled KL with several samples per prompt
# --------------------------------------------------------------------------------------------------------------


def _toy_samples(prompts: int, per_prompt: int, tokens: int, seed: int):
    """Sequences of i.i.d. tokens from p over 5 symbols, scored under p and under the reference q."""
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    q = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
    draws = np.random.default_rng(seed).choice(5, size=(prompts * per_prompt, tokens), p=p)
    groups = np.repeat(np.arange(prompts), per_prompt)
    return np.log(p)[draws], np.log(q)[draws], groups, tokens * float(np.sum(p * np.log(p / q)))


def test_grouped_kl_estimates_match_the_closed_form_and_the_ci_covers_it():
    lp, lq, groups, exact = _toy_samples(prompts=400, per_prompt=8, tokens=4, seed=23)
    result = sample_kl(lp, lq, np.ones_like(lp), groups=groups, n_boot=500)
    assert (result["n"], result["n_prompts"]) == (3200, 400)
    k1 = (lp - lq).sum(axis=1)
    k3 = (np.expm1(lq - lp) - (lq - lp)).sum(axis=1)
    assert result["mean"] == pytest.approx(k1.mean()) and result["k3_mean"] == pytest.approx(k3.mean())
    for values, key in ((k1, "mean"), (k3, "k3_mean")):
        stderr = values.std(ddof=1) / math.sqrt(values.size)
        assert abs(result[key] - exact) < 3 * stderr, key
    assert result["low"] < exact < result["high"]
    assert result["k3_low"] < exact < result["k3_high"]


def test_grouped_bootstrap_resamples_prompts_not_rows():
    # Each prompt's 8 rows are copies of one sequence: there are only 50 independent values, and the clustered CI
    # must be as wide as for those 50, not sqrt(8) times narrower as a row bootstrap would claim.
    lp, lq, _, _ = _toy_samples(prompts=50, per_prompt=1, tokens=4, seed=24)
    lp8, lq8, groups = np.repeat(lp, 8, axis=0), np.repeat(lq, 8, axis=0), np.repeat(np.arange(50), 8)
    ones = np.ones_like(lp8)
    clustered = sample_kl(lp8, lq8, ones, groups=groups, n_boot=2000, seed=1)
    rows = sample_kl(lp8, lq8, ones, n_boot=2000, seed=1)
    single = sample_kl(lp, lq, np.ones_like(lp), n_boot=2000, seed=1)
    width = {name: r["high"] - r["low"] for name, r in (("c", clustered), ("r", rows), ("s", single))}
    assert width["c"] > 2.0 * width["r"]
    assert width["c"] == pytest.approx(width["s"], rel=0.15)
    assert clustered["mean"] == pytest.approx(single["mean"])


def test_one_group_per_row_gives_the_ungrouped_interval_and_bad_groups_are_rejected():
    lp, lq, _, _ = _toy_samples(prompts=60, per_prompt=1, tokens=3, seed=25)
    mask = np.ones_like(lp)
    grouped = sample_kl(lp, lq, mask, groups=np.arange(60)[::-1], n_boot=300)
    plain = sample_kl(lp, lq, mask, n_boot=300)
    assert grouped["n_prompts"] == plain["n_prompts"] == 60
    for key in ("mean", "k3_mean"):
        assert grouped[key] == pytest.approx(plain[key])
    with pytest.raises(ValueError, match="one prompt id per row"):
        sample_kl(lp, lq, mask, groups=np.arange(59))
    with pytest.raises(ValueError, match="integer"):
        sample_kl(lp, lq, mask, groups=np.zeros(60))


# --------------------------------------------------------------------------------------------------------------
# Refusals, messages, defaults and edges (added from mutation testing: docs/faults.md, "Mutation testing")
# --------------------------------------------------------------------------------------------------------------


def test_every_bad_score_or_length_is_named_in_the_error():
    good, flat = [0.1, 0.2, 0.3], [[0.1, 0.2], [0.3, 0.4]]
    for fn in (win_rate, lambda a, b: length_controlled_win_rate(a, b, [5, 5, 5], [5, 5, 5])):
        with pytest.raises(ValueError, match=r"^scores_a must be 1-D \(one value per prompt\); got shape \(2, 2\)\.$"):
            fn(flat, good)
        with pytest.raises(ValueError, match=r"^scores_b must be 1-D"):
            fn(good, flat)
    with pytest.raises(ValueError, match=r"^len_a must be 1-D"):
        length_controlled_win_rate(good, good, flat, [5, 5, 5])
    with pytest.raises(ValueError, match=r"^len_b must be 1-D"):
        length_controlled_win_rate(good, good, [5, 5, 5], flat)
    with pytest.raises(
        ValueError,
        match=r"first at index 1: nan\); drop or re-score those prompts for every checkpoint before comparing\.$",
    ):
        win_rate([1.0, float("nan")], [1.0, 1.0])
    with pytest.raises(
        ValueError,
        match=r"^scores_a has 2 values but scores_b has 1; paired comparisons need one value per prompt for the same prompts in the same order\.$",
    ):
        win_rate([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"^x is empty; pass at least one value per prompt\.$"):
        mean_with_ci([])
    with pytest.raises(ValueError, match=r"^chosen_margins is empty"):
        implicit_reward_accuracy([])
    with pytest.raises(ValueError, match=r"^scores\['b'\] is empty"):
        win_rate_matrix({"a": [1.0], "b": []})
    with pytest.raises(ValueError, match=r"^checkpoint names must be strings \(they become JSON keys\); got 3\.$"):
        win_rate_matrix({3: [1.0]})
    with pytest.raises(
        ValueError,
        match=r"^scores is empty; pass \{checkpoint_name: per-prompt scores\} for at least one checkpoint\.$",
    ):
        win_rate_matrix({})
    with pytest.raises(ValueError, match=r"score every checkpoint on the same prompts in the same order\.$"):
        win_rate_matrix({"a": [1.0, 2.0], "b": [1.0]})


def test_response_lengths_may_be_zero_but_not_negative():
    s = [0.3, 0.1, 0.2, 0.5, 0.4, 0.0]
    length_controlled_win_rate(s, s[::-1], [0, 1, 2, 3, 4, 5], [0, 0, 1, 5, 2, 3], n_boot=10)
    for la, lb in (([-1, 1, 2, 3, 4, 5], [1] * 6), ([1] * 6, [1, 1, 1, 1, 1, -2])):
        with pytest.raises(ValueError, match=r"^len_a and len_b are response lengths in tokens and must be >= 0\.$"):
            length_controlled_win_rate(s, s[::-1], la, lb, n_boot=10)


def test_bootstrap_counts_and_alphas_at_and_past_their_bounds():
    assert mean_with_ci([1.0, 2.0], n_boot=1)["n"] == 2  # one resample: a degenerate but valid interval
    for n_boot in (True, 2.5, 0):
        with pytest.raises(ValueError, match=r"^n_boot must be a positive integer; got "):
            mean_with_ci([1.0, 2.0], n_boot=n_boot)
    for alpha in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\)"):
            mean_with_ci([1.0, 2.0], alpha=alpha)


def test_defaults_are_2000_resamples_with_seed_0():
    rng = np.random.default_rng(30)
    a, b = rng.normal(size=40), rng.normal(size=40)
    la, lb = rng.uniform(20, 80, size=40), rng.uniform(20, 80, size=40)
    lp, lq = rng.normal(-2.0, 0.5, size=(40, 6)), rng.normal(-2.2, 0.5, size=(40, 6))
    mask = np.ones((40, 6))
    assert mean_with_ci(a) == mean_with_ci(a, n_boot=2000, seed=0)
    assert win_rate_ci(a, b) == win_rate_ci(a, b, n_boot=2000, seed=0)
    assert win_rate_matrix({"a": a, "b": b}) == win_rate_matrix({"a": a, "b": b}, n_boot=2000, seed=0)
    assert length_controlled_win_rate(a, b, la, lb) == length_controlled_win_rate(a, b, la, lb, n_boot=2000, seed=0)
    assert sample_kl(lp, lq, mask) == sample_kl(lp, lq, mask, n_boot=2000, seed=0)
    assert implicit_reward_accuracy(a) == implicit_reward_accuracy(a, n_boot=2000, seed=0)
    # ... and those numbers are not what 2001 resamples or seed 1 give
    assert mean_with_ci(a) != mean_with_ci(a, n_boot=2001) and mean_with_ci(a) != mean_with_ci(a, seed=1)


def test_resamples_drawn_in_bounded_blocks_give_the_same_interval(monkeypatch):
    import align.eval.bootstrap as bootstrap

    x = np.random.default_rng(31).normal(size=7)
    whole = mean_with_ci(x, n_boot=500)
    monkeypatch.setattr(bootstrap, "_MAX_BLOCK_ELEMENTS", 20)  # 2 resamples of 7 prompts per block
    assert mean_with_ci(x, n_boot=500) == whole
    assert mean_with_ci(x, n_boot=499) != whole


def test_every_interval_is_reproducible_from_its_seed():
    rng = np.random.default_rng(32)
    lp, lq = rng.normal(-2.0, 0.5, size=(30, 5)), rng.normal(-2.2, 0.5, size=(30, 5))
    mask, ex = np.ones((30, 5)), rng.uniform(0.0, 0.3, size=(30, 5))
    groups = np.repeat(np.arange(10), 3)
    for kwargs in ({}, {"groups": groups}):
        assert sample_kl(lp, lq, mask, n_boot=200, exact_token_kl=ex, **kwargs) == sample_kl(
            lp, lq, mask, n_boot=200, exact_token_kl=ex, **kwargs
        )
    margins = rng.normal(0.2, 1.0, size=30)
    assert implicit_reward_accuracy(margins, n_boot=200) == implicit_reward_accuracy(margins, n_boot=200)


def _prompt_bootstrap(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05):
    """The documented grouped bootstrap, written out: draw prompts (groups) with replacement from
    numpy's default_rng(seed); each replicate is the drawn prompts' row sum over their row count."""
    ids = np.unique(groups, return_inverse=True)[1]
    sums, counts = np.bincount(ids, weights=values), np.bincount(ids).astype(float)
    idx = np.random.default_rng(seed).integers(0, sums.size, size=(n_boot, sums.size))
    reps = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    return tuple(np.quantile(reps, [alpha / 2, 1 - alpha / 2]))


def test_grouped_intervals_of_k1_k3_and_exact_kl_all_resample_prompts():
    rng = np.random.default_rng(33)
    lp, lq = rng.normal(-2.0, 0.5, size=(24, 4)), rng.normal(-2.3, 0.5, size=(24, 4))
    mask, ex = np.ones((24, 4)), rng.uniform(0.0, 0.4, size=(24, 4))
    groups = np.repeat([5, 9, 2, 7, 11, 3], 4)  # any integer ids, in any order
    out = sample_kl(lp, lq, mask, n_boot=300, seed=4, exact_token_kl=ex, groups=groups)
    log_ratio = lp - lq
    k1, k3, exact = log_ratio.sum(1), (np.expm1(-log_ratio) + log_ratio).sum(1), ex.sum(1)
    for key, values in (("", k1), ("k3_", k3), ("exact_", exact)):
        low, high = _prompt_bootstrap(values, groups, 300, 4)
        assert (out[f"{key}low"], out[f"{key}high"]) == pytest.approx((low, high), rel=1e-12), key


def test_sample_kl_shape_mask_and_value_errors_say_what_to_fix():
    one = np.zeros((1, 1))
    assert sample_kl(one, one, np.ones((1, 1)), n_boot=5)["mean"] == 0.0  # one prompt of one token is enough
    with pytest.raises(
        ValueError, match=r"^policy_logprobs must be a non-empty 2-D \(prompts, tokens\) array; got shape \(3,\)\.$"
    ):
        sample_kl(np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=r"all three must be \(prompts, tokens\) over the same sampled responses\.$"):
        sample_kl(np.zeros((2, 2)), np.zeros((2, 3)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"^mask must contain only 0 and 1 \(1 = response token\)\.$"):
        sample_kl(np.zeros((1, 2)), np.zeros((1, 2)), np.array([[1, 2]]))
    with pytest.raises(
        ValueError,
        match=r"^non-finite log-probabilities on masked-in tokens; a -inf under the reference means KL is infinite\. Check the mask covers only sampled response tokens\.$",
    ):
        sample_kl(np.zeros((1, 2)), np.array([[0.0, -np.inf]]), np.ones((1, 2)))
    with pytest.raises(
        ValueError, match=r"^exact_token_kl has shape \(1, 3\); it must match policy_logprobs \(1, 2\)\.$"
    ):
        sample_kl(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), exact_token_kl=np.zeros((1, 3)))
    with pytest.raises(
        ValueError, match=r"^exact_token_kl must be finite and >= 0 on response tokens \(it is a KL divergence\)\.$"
    ):
        sample_kl(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), exact_token_kl=np.array([[0.0, -2e-6]]))
    # rounding just below zero (down to -1e-6) is a divergence of 0, not an error
    out = sample_kl(np.zeros((1, 2)), np.zeros((1, 2)), np.ones((1, 2)), exact_token_kl=np.array([[0.0, -1e-6]]))
    assert out["exact_mean"] == 0.0


def test_distinct_n_refusals_name_the_fix():
    with pytest.raises(
        ValueError,
        match=r"^texts must be a sequence of strings, not one string; wrap it: distinct_n\(\[text\], n\)\.$",
    ):
        distinct_n("a b c", 1)
    for n in (True, 1.5, 0):
        with pytest.raises(ValueError, match=r"^n must be a positive integer"):
            distinct_n(["a b"], n)
    with pytest.raises(ValueError, match=r"^texts\[1\] is int, not str; pass the decoded response texts\.$"):
        distinct_n(["a b", 3], 1)


def test_self_judging_warning_text_says_why_and_what_to_do():
    (text,) = self_judging_warning("/rm", {"dpo": "/rm/"})
    assert text == (
        "WARNING: SELF-JUDGING: checkpoint 'dpo' is scored by the same reward model it was trained against (/rm). "
        "Its policy was optimised to maximise exactly this model's scores, so it has learned this judge's quirks and "
        "blind spots (reward hacking: e.g. length, flattery, formatting the judge over-rewards). Its scores and win "
        "rates are inflated relative to checkpoints that never saw this judge, and the comparison is not fair. "
        "Re-run `align compare` with a disjoint judge: a reward model that no compared checkpoint was trained "
        "against, ideally trained on different preference data. Until then treat this checkpoint's numbers as an "
        "upper bound."
    )


def test_wilson_interval_refusals_and_its_exact_ends():
    for n in (True, 2.5, 0):
        with pytest.raises(ValueError, match=r"^n must be a positive integer"):
            wilson_interval(0, n)
    for k in (True, 1.5, -1, 4):
        with pytest.raises(ValueError, match=r"^k must be an integer between 0 and n=3"):
            wilson_interval(k, 3)
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\)"):
            wilson_interval(1, 3, alpha)
    # k = n: the upper end is exactly 1 (the formula reaches it only up to rounding for some n)
    assert all(wilson_interval(n, n)[1] == 1.0 for n in range(1, 200))


def test_pass_rate_uses_its_alpha_and_names_bad_outcomes():
    outcomes = [True] * 7 + [False] * 3
    r = pass_rate(outcomes, alpha=0.2)
    assert (r["low"], r["high"]) == wilson_interval(7, 10, 0.2) != wilson_interval(7, 10)
    with pytest.raises(ValueError, match=r"^outcomes\[1\] is 1; outcomes must be True, False or None"):
        pass_rate([True, 1])
    with pytest.raises(ValueError, match=r"^ref_pass\[0\] is 'x'"):
        mcnemar(["x"], [True])
    with pytest.raises(ValueError, match=r"^new_pass\[0\] is 'y'"):
        mcnemar([True], ["y"])


def test_win_rate_ci_and_the_matrix_pass_on_the_tie_tolerance_and_alpha():
    a, b = np.array([1.0, 1.05, 2.0, 0.0, 3.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0, 3.02, 2.0])
    r = win_rate_ci(a, b, tie_tolerance=0.1, n_boot=300)
    assert r["ties"] == 3 and r["wins"] == 1 and r["losses"] == 2
    m = win_rate_matrix({"a": a, "b": b}, tie_tolerance=0.1, alpha=0.3, n_boot=300)
    assert m["a"]["b"] == win_rate_ci(a, b, tie_tolerance=0.1, alpha=0.3, n_boot=300)
    assert m["a"]["a"] == {"wins": 0, "ties": 6, "losses": 0, "n": 6, "win_rate": 0.5, "low": 0.5, "high": 0.5}
    ab = m["a"]["b"]
    assert m["b"]["a"] == {
        "wins": ab["losses"], "ties": ab["ties"], "losses": ab["wins"], "n": 6,
        "win_rate": 1.0 - ab["win_rate"], "low": 1.0 - ab["high"], "high": 1.0 - ab["low"],
    }  # fmt: skip


def test_penalised_logistic_fit_equals_sklearn_with_the_same_l2_on_the_slope_only():
    from sklearn.linear_model import LogisticRegression

    from align.eval.winrate import _fit_logistic

    rng = np.random.default_rng(34)
    x = rng.normal(size=60)
    for y in (
        (rng.uniform(size=60) < 1 / (1 + np.exp(-(0.4 + 1.5 * x)))).astype(float),  # both outcomes, many each
        np.eye(60)[0],  # one win among 59 losses
        1.0 - np.eye(60)[0],  # one loss among 59 wins
    ):
        X = np.column_stack([np.ones(60), x])
        ours = _fit_logistic(X, y, np.ones((1, 60)), ridge=0.5)[0]
        oracle = LogisticRegression(C=1 / 0.5, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(x[:, None], y)
        assert ours == pytest.approx([oracle.intercept_[0], oracle.coef_[0, 0]], abs=1e-6)


def test_losing_every_prompt_mirrors_winning_every_prompt():
    rng = np.random.default_rng(35)
    la, lb = rng.uniform(10, 100, size=40), rng.uniform(10, 100, size=40)
    win = length_controlled_win_rate(np.ones(40), np.zeros(40), la, lb, n_boot=50)
    lose = length_controlled_win_rate(np.zeros(40), np.ones(40), la, lb, n_boot=50)
    assert lose["raw_win_rate"] == 0.0 and 0.0 < lose["lc_win_rate"] < 0.05
    assert lose["lc_win_rate"] == pytest.approx(1.0 - win["lc_win_rate"], abs=1e-9)


def test_length_control_refuses_a_ridge_that_is_not_small_and_positive_and_reports_its_fields():
    s = np.array([0.3, 0.1, 0.2, 0.5, 0.4, 0.0])
    for ridge in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(
            ValueError, match=r"^ridge must be a small positive number \(it keeps separable fits finite\); got "
        ):
            length_controlled_win_rate(s, s[::-1], [5] * 6, [5] * 6, ridge=ridge)
    r = length_controlled_win_rate(s, np.array([0.3, 0.2, 0.7, 0.1, 0.4, 0.9]), [5] * 6, [5] * 6, n_boot=20)
    assert r["length_scale"] == 1.0  # every length equal: the scale falls back to 1
    assert r["ties"] == 2 and r["n"] == 6


def test_identifiable_at_exactly_the_needed_support_with_five_needed_below_fifty_prompts():
    len_b = np.full(40, 100.0)
    len_a = np.where(np.arange(40) < 5, 100.0, 300.0)  # 5 prompts at equal length, 35 with a far longer
    scores_a, scores_b = np.random.default_rng(36).normal(size=(2, 40))
    r = length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=50)
    assert r["support_needed"] == 5 and r["near_equal_support"] == 5
    assert r["identifiable"] is True and r["lc_win_rate"] is not None


def test_the_not_identifiable_note_gives_the_side_the_gap_and_the_counts():
    len_b = np.full(40, 100.0)
    len_a = np.where(np.arange(40) < 2, 100.0, 140.0)  # only 2 prompts at equal length: 5 needed
    scores_a, scores_b = np.random.default_rng(37).normal(size=(2, 40))
    scale = float(np.std(np.concatenate([len_a, len_b])))
    r = length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=20)
    assert r["note"] == (
        f"length-controlled win rate not identifiable: only 2 of 40 prompts have a's answer at most "
        f"{0.25 * scale:.1f} tokens (0.25 pooled SD) longer than b's, or shorter, and 5 are needed. a is almost "
        "always longer (median difference +40.0 tokens), so its win rate at equal length would be an "
        "extrapolation. Compare at matched lengths, or report the raw win rate together with the length gap."
    )
    r = length_controlled_win_rate(scores_a, scores_b, len_b, len_a, n_boot=20)  # the other way round
    assert "longer than b's" not in r["note"] and "shorter than b's, or longer" in r["note"]
    assert "a is almost always shorter (median difference -40.0 tokens)" in r["note"]
    # a only half a pooled SD longer on every prompt: still never at equal length, and still "longer"
    len_b = np.random.default_rng(38).uniform(50, 150, size=40)
    len_a = len_b + 15.0
    r = length_controlled_win_rate(scores_a, scores_b, len_a, len_b, n_boot=20)
    assert r["identifiable"] is False and 0.25 < 15.0 / r["length_scale"] < 1.0
    assert "a is almost always longer (median difference +15.0 tokens)" in r["note"]


def test_win_rate_and_accuracy_intervals_default_to_2000_resamples_with_seed_0():
    # Means of win/tie/loss outcomes take few values, so most data leave an interval end unchanged by one more
    # resample; these data do not (found by trying seeds), which makes the defaults visible.
    rng = np.random.default_rng(22)
    a, b = rng.normal(size=60), rng.normal(size=60)
    default = win_rate_ci(a, b)
    assert default == win_rate_ci(a, b, n_boot=2000, seed=0)
    assert default != win_rate_ci(a, b, n_boot=2001) and default != win_rate_ci(a, b, seed=1)
    matrix = win_rate_matrix({"a": a, "b": b})
    assert matrix["a"]["b"] == default
    margins = np.random.default_rng(0).normal(size=60)
    acc = implicit_reward_accuracy(margins)
    assert acc != implicit_reward_accuracy(margins, n_boot=2001) and acc != implicit_reward_accuracy(margins, seed=1)


def test_self_judging_refuses_a_reward_model_identity_that_is_not_a_string():
    with pytest.raises(
        ValueError, match=r"^trained_against\['dpo'\] must be a reward-model path/fingerprint string or None; got 3\.$"
    ):
        self_judging_warning("/rm", {"dpo": 3})
