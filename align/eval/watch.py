"""The reward-hacking watch's rule: is the proxy reward still rising while a held-out judge falls?

When a policy is optimised against a proxy reward model, a held-out ("gold") reward first rises with the proxy and
then falls while the proxy keeps rising (Gao, Schulman and Hilton 2022, "Scaling Laws for Reward Model
Overoptimization"). The online stages sample ``(proxy, judge, KL)`` every ``watch.sample_every`` iterations; this
module decides, from those points alone, whether the pattern is there. The rule, on the last ``window`` points
``(t_i, proxy_i, judge_i)`` (``t`` = iteration):

    fit proxy = a + b_p t and judge = c + b_j t by ordinary least squares;
    divergence when   b_p - q SE(b_p) > 0   and   b_j + q SE(b_j) < 0,

with ``q`` the Student-t quantile at ``confidence`` with ``window - 2`` degrees of freedom: each slope's one-sided
confidence interval excludes zero on the side the over-optimisation pattern predicts (the proxy up, the judge
down). Proxy and judge may be on different scales: the rule reads each slope against its own standard error, so
units do not matter. A window of 3 points is the least that gives a standard error; 4-6 points trade detection
delay against false alarms (with independent noise and no trend, both intervals are wrong on the predicted side
with probability (1 - confidence)^2, 1% at 0.9).

Pure functions on lists of floats, plus the plot; the stages' hooks live in :mod:`align.stages.watch`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class WatchPoint:
    """One sampled iteration: the mean proxy reward (what the stage optimises, before the KL term), the mean judge
    score of the same samples, and the KL to the reference as the stage reports it (None where it has none)."""

    iteration: int
    proxy: float
    judge: float
    kl: float | None = None

    @property
    def gap(self) -> float:
        return self.proxy - self.judge

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gap": self.gap}


@dataclass(frozen=True)
class Slope:
    slope: float
    se: float
    n: int


@dataclass(frozen=True)
class Divergence:
    """Where and how the rule fired: at ``iteration``, over the ``window`` points ending there."""

    iteration: int
    window: int
    confidence: float
    proxy_slope: float
    proxy_low: float  # lower end of the proxy slope's one-sided interval (> 0)
    judge_slope: float
    judge_high: float  # upper end of the judge slope's one-sided interval (< 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf(t: float, df: int, intervals: int = 2000) -> float:
    """P(T <= t) for t >= 0: 1/2 + the integral of the density over [0, t] (composite Simpson rule; the density is
    smooth, so 2,000 intervals give ~1e-10 for the t values the watch uses)."""
    h = t / intervals
    s = _t_pdf(0.0, df) + _t_pdf(t, df)
    s += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, intervals))
    return 0.5 + s * h / 3


@functools.lru_cache(maxsize=64)
def t_quantile(p: float, df: int) -> float:
    """The Student-t quantile t_{p, df} for 0.5 <= p < 1, by bisection on the CDF.

    Written by hand so the watch needs no scipy at run time (tests check it against scipy.stats.t.ppf)."""
    if not 0.5 <= p < 1:
        raise ValueError(f"t_quantile: p must be in [0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"t_quantile: degrees of freedom must be >= 1, got {df}")
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def ols_slope(x: Sequence[float], y: Sequence[float]) -> Slope:
    """Least-squares slope of ``y`` on ``x`` and its standard error (residual variance on n - 2 degrees of
    freedom). Needs at least 3 points and two distinct x values."""
    n = len(x)
    if n != len(y) or n < 3:
        raise ValueError(f"ols_slope: needs >= 3 paired points, got {len(x)} x and {len(y)} y")
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x)
    if sxx == 0:
        raise ValueError("ols_slope: all x values are equal")
    b = sum((a - mx) * (c - my) for a, c in zip(x, y)) / sxx
    resid = [c - (my + b * (a - mx)) for a, c in zip(x, y)]
    s2 = sum(r * r for r in resid) / (n - 2)
    return Slope(b, math.sqrt(s2 / sxx), n)


def check_window(points: Sequence[WatchPoint], window: int, confidence: float) -> Divergence | None:
    """The rule on the last ``window`` points (see the module docstring); None while there are fewer points, or
    when the pattern is not there."""
    if window < 3:
        raise ValueError(f"window={window}: the rule needs at least 3 points")
    if len(points) < window:
        return None
    last = points[-window:]
    t = [float(p.iteration) for p in last]
    proxy = ols_slope(t, [p.proxy for p in last])
    judge = ols_slope(t, [p.judge for p in last])
    q = t_quantile(confidence, window - 2)
    proxy_low, judge_high = proxy.slope - q * proxy.se, judge.slope + q * judge.se
    if proxy_low > 0 and judge_high < 0:
        return Divergence(last[-1].iteration, window, confidence, proxy.slope, proxy_low, judge.slope, judge_high)
    return None


def first_divergence(points: Sequence[WatchPoint], window: int, confidence: float) -> Divergence | None:
    """The first point at which the rule fires when the points arrive one by one (what a run would have warned)."""
    for end in range(window, len(points) + 1):
        found = check_window(points[:end], window, confidence)
        if found is not None:
            return found
    return None


def plot_watch(points: Sequence[WatchPoint], path: str | Path, divergence: Divergence | None, title: str) -> Path:
    """Proxy and judge (left axis) and KL (right axis) against the iteration; a line where the watch fired."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = [p.iteration for p in points]
    ax.plot(x, [p.proxy for p in points], marker="o", label="proxy reward (optimised)")
    ax.plot(x, [p.judge for p in points], marker="s", label="held-out judge")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean score")
    handles, labels = ax.get_legend_handles_labels()
    kl = [(p.iteration, p.kl) for p in points if p.kl is not None]
    if kl:
        ax2 = ax.twinx()
        (line,) = ax2.plot([a for a, _ in kl], [b for _, b in kl], color="grey", linestyle="--", label="KL")
        ax2.set_ylabel("KL to the reference")
        handles.append(line)
        labels.append("KL")
    if divergence is not None:
        ax.axvline(divergence.iteration, color="red", linewidth=1)
        labels[0] += f" (watch fired at {divergence.iteration})"
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
