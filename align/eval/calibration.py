"""Reward-model calibration and length bias on held-out preference pairs (pure functions, numpy only).

A Bradley-Terry reward model states ``P(chosen wins) = sigmoid(r(chosen) - r(rejected))``. On held-out pairs
oriented so that ``chosen`` is the side the humans preferred, every outcome is 1, and a calibration error computed
on those alone only measures how far the probabilities sit below 1. :func:`pair_calibration` therefore shows each
pair in a seeded random orientation first: a flipped pair predicts ``sigmoid(-margin)`` for its first side, which
lost (outcome 0). Both outcome values then occur and the equal-width bins compare stated probability with observed
frequency. The Brier score does not depend on the orientation ((1 - p)^2 either way); ECE does.

Correlations are written with numpy because scipy is not a runtime dependency; the tests check them against
``scipy.stats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["length_correlation", "pair_calibration"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only, so large margins neither overflow nor warn.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} has a non-finite value at index {int(np.flatnonzero(~np.isfinite(arr))[0])}.")
    return arr


def _bins(p: np.ndarray, y: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    # Equal-width bins on [0, 1]; p == 1 belongs to the last bin.
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        n = int(sel.sum())
        out.append(
            {
                "lo": b / n_bins,
                "hi": (b + 1) / n_bins,
                "n": n,
                "confidence": float(p[sel].mean()) if n else None,
                "frequency": float(y[sel].mean()) if n else None,
            }
        )
    return out


def pair_calibration(
    margins: Sequence[float], *, n_bins: int = 10, seed: int = 0, orientation: Sequence[int] | None = None
) -> dict[str, Any]:
    """ECE and Brier score of ``sigmoid(margin)`` as the probability that the preferred side wins.

    ``margins``: ``r(chosen) - r(rejected)`` per held-out pair, with ``chosen`` the preferred side. Each pair is
    shown in a random orientation drawn with ``seed`` (see the module docstring); ``orientation`` (+1 as given,
    -1 flipped, one per pair) fixes it instead. ECE = sum over bins of (bin size / n) * |mean p - mean outcome|;
    Brier = mean (p - outcome)^2. No pairs: ``ece``/``brier`` None.
    """
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}.")
    m = _finite(margins, "margins")
    if orientation is None:
        sign = np.where(np.random.default_rng(seed).random(len(m)) < 0.5, -1.0, 1.0)
    else:
        sign = np.asarray(orientation, dtype=float)
        if sign.shape != m.shape or not np.isin(sign, (-1.0, 1.0)).all():
            raise ValueError(f"orientation must hold one +1 or -1 per margin ({len(m)}), got {list(orientation)}.")
    p = _sigmoid(sign * m)
    y = (sign > 0).astype(float)  # the first side shown is the preferred one unless the pair was flipped
    bins = _bins(p, y, n_bins)
    if len(m) == 0:
        return {"ece": None, "brier": None, "n": 0, "n_bins": n_bins, "seed": seed, "bins": bins}
    ece = sum(b["n"] * abs(b["confidence"] - b["frequency"]) for b in bins if b["n"]) / len(m)
    brier = float(np.mean((p - y) ** 2))
    return {"ece": float(ece), "brier": brier, "n": int(len(m)), "n_bins": n_bins, "seed": seed, "bins": bins}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as Spearman's coefficient needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(group, weights=ranks)
    return sums[group] / counts[group]


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    # A constant side has no correlation to speak of.
    return None if denom == 0.0 else float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def length_correlation(rewards: Sequence[float], lengths: Sequence[float]) -> dict[str, Any]:
    """Pearson and Spearman correlation of reward with reply length (None when undefined: n < 2 or constant)."""
    r, n = _finite(rewards, "rewards"), _finite(lengths, "lengths")
    if len(r) != len(n):
        raise ValueError(f"rewards ({len(r)}) and lengths ({len(n)}) must have one value per reply.")
    if len(r) < 2:
        return {"pearson": None, "spearman": None, "n": int(len(r))}
    return {"pearson": _pearson(r, n), "spearman": _pearson(_ranks(r), _ranks(n)), "n": int(len(r))}
