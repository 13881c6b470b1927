"""The reward-hacking watch's rule on constructed series: fires on over-optimisation, quiet otherwise."""

from __future__ import annotations

import math
import random

import pytest

from align.eval.watch import WatchPoint, check_window, first_divergence, ols_slope, plot_watch, t_quantile


def series(proxy, judge, kl=None):
    return [WatchPoint(i + 1, p, j, None if kl is None else kl[i]) for i, (p, j) in enumerate(zip(proxy, judge))]


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for p in (0.5, 0.8, 0.9, 0.95, 0.99):
        for df in (1, 2, 3, 5, 10, 30):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-6, abs=1e-9), (p, df)


def test_t_quantile_rejects_a_lower_tail_or_no_degrees_of_freedom():
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


def test_ols_slope_and_its_standard_error_match_the_hand_derived_values():
    # y = 1, 3, 2 at x = 0, 1, 2: slope 0.5; residuals -0.5, 1, -0.5; s^2 = 1.5 / 1; SE = sqrt(1.5 / 2)
    fit = ols_slope([0, 1, 2], [1, 3, 2])
    assert fit.slope == pytest.approx(0.5) and fit.se == pytest.approx(math.sqrt(0.75)) and fit.n == 3
    exact = ols_slope([1, 2, 3, 4], [2, 4, 6, 8])
    assert exact.slope == pytest.approx(2.0) and exact.se == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        ols_slope([1, 2], [1, 2])
    with pytest.raises(ValueError):
        ols_slope([1, 1, 1], [1, 2, 3])


def test_fires_when_the_proxy_rewards_length_while_the_judge_penalises_it():
    rng = random.Random(0)
    lengths = [20 + 6 * i for i in range(12)]  # answers grow as the policy learns the proxy
    proxy = [0.05 * n + rng.gauss(0, 0.1) for n in lengths]  # the proxy pays for length
    judge = [1.0 - 0.03 * n + rng.gauss(0, 0.1) for n in lengths]  # the judge penalises it
    fired = first_divergence(series(proxy, judge), window=4, confidence=0.9)
    assert fired is not None and fired.iteration == 4  # as soon as a full window shows it
    assert fired.proxy_slope > 0 and fired.proxy_low > 0 and fired.judge_slope < 0 and fired.judge_high < 0


def test_fires_only_after_the_judge_turns_down_as_in_over_optimisation():
    # Gao et al.: the gold score first rises with the proxy, peaks, then falls while the proxy keeps rising.
    proxy = [0.5 * i for i in range(14)]
    judge = [min(i, 12 - i) * 0.3 + 0.02 * (-1) ** i for i in range(14)]  # peak at iteration 7 (i = 6)
    fired = first_divergence(series(proxy, judge), window=4, confidence=0.9)
    assert fired is not None and fired.iteration > 7


def test_quiet_when_the_judge_rises_with_the_proxy():
    rng = random.Random(1)
    proxy = [0.3 * i + rng.gauss(0, 0.2) for i in range(20)]
    judge = [0.2 * i + rng.gauss(0, 0.2) for i in range(20)]
    assert first_divergence(series(proxy, judge), window=4, confidence=0.9) is None


def test_quiet_on_noise_without_a_trend_in_all_but_rare_windows():
    fired = 0
    for seed in range(200):
        rng = random.Random(seed)
        points = series([rng.gauss(0, 1) for _ in range(5)], [rng.gauss(0, 1) for _ in range(5)])
        fired += check_window(points, window=5, confidence=0.9) is not None
    # independent slopes, each wrong-signed with probability 0.1: about 1% of windows
    assert fired <= 8


def test_quiet_while_the_proxy_is_flat_even_if_the_judge_falls():
    proxy = [1.0, 1.0, 1.0, 1.0, 1.0]
    judge = [1.0, 0.8, 0.6, 0.4, 0.2]
    assert check_window(series(proxy, judge), window=5, confidence=0.9) is None


def test_needs_a_full_window_of_at_least_three_points():
    points = series([1, 2], [2, 1])
    assert check_window(points, window=3, confidence=0.9) is None
    with pytest.raises(ValueError):
        check_window(points, window=2, confidence=0.9)


def test_the_plot_shows_proxy_judge_and_kl(tmp_path):
    points = series([1, 2, 3, 4], [1, 0.5, 0.0, -0.5], kl=[0.0, 0.1, 0.3, 0.6])
    fired = first_divergence(points, window=3, confidence=0.9)
    out = plot_watch(points, tmp_path / "watch.png", fired, "test")
    assert out.stat().st_size > 1000 and points[0].to_dict()["gap"] == 0.0
