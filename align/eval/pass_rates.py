"""Pass rates of objective checks: Wilson intervals for one checkpoint, the exact McNemar test between two."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np


def wilson_interval(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion with ``k`` successes in ``n`` trials.

    With ``p = k / n`` and ``z`` the ``1 - alpha / 2`` normal quantile::

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))

    and the interval is ``[centre - half, centre + half]`` (clipped to [0, 1] against rounding). Unlike the
    normal-approximation interval it stays inside [0, 1] and is not zero-width at ``k = 0`` or ``k = n``, which
    matters for check pass rates near 0% or 100% on ~100 prompts.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (the number of prompts the check applied to); got {n!r}.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= n:
        raise ValueError(f"k must be an integer between 0 and n={n}; got {k!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0.05 gives a 95% interval); got {alpha!r}.")
    z = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula only reaches it up to rounding
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def _booleans(outcomes: object, name: str) -> list[bool | None]:
    values = list(outcomes)  # type: ignore[call-overload]
    for i, v in enumerate(values):
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise ValueError(f"{name}[{i}] is {v!r}; outcomes must be True, False or None (check did not apply).")
    return [None if v is None else bool(v) for v in values]


def pass_rate(outcomes: object, alpha: float = 0.05) -> dict[str, float | int | None]:
    """Share of prompts that passed a check, with a Wilson interval (:func:`wilson_interval`).

    ``outcomes`` holds True/False per prompt, None where the check did not apply (those are left out). Returns
    ``{"rate", "low", "high", "k", "n"}`` with ``k`` passes out of ``n`` applicable prompts; with ``n = 0`` the
    rate and interval are None.
    """
    kept = [v for v in _booleans(outcomes, "outcomes") if v is not None]
    n, k = len(kept), sum(kept)
    if n == 0:
        return {"rate": None, "low": None, "high": None, "k": 0, "n": 0}
    low, high = wilson_interval(k, n, alpha)
    return {"rate": k / n, "low": low, "high": high, "k": k, "n": n}


def _binomial_two_sided_half(m: int, n: int) -> float:
    """Exact two-sided p-value of ``m = min(b, c)`` successes in ``n`` Binomial(n, 1/2) trials: ``min(1, 2 P(X <= m))``
    (the distribution is symmetric, so doubling the smaller tail is the usual exact test)."""
    tail = sum(math.comb(n, i) for i in range(m + 1)) / 2**n  # exact integers, one division
    return min(1.0, 2.0 * tail)


def mcnemar(ref_pass: object, new_pass: object) -> dict[str, float | int | str]:
    """Exact McNemar test: did a check's pass rate change between two checkpoints on the same prompts?

    Pairs where either outcome is None are dropped. Of the rest, only discordant pairs carry information:
    ``b`` = reference passed and new failed, ``c`` = reference failed and new passed. Under "no change" each
    discordant pair is a fair coin, so ``min(b, c) ~ Binomial(b + c, 1/2)`` and the two-sided p-value is
    ``min(1, 2 P(X <= min(b, c)))`` (1.0 when there are no discordant pairs). Returns ``b``, ``c``,
    ``n_discordant``, ``n`` (pairs kept), ``statistic`` (``min(b, c)``), ``p_value`` and ``direction``:
    ``"better"`` when ``c > b`` (more prompts fixed than broken), ``"worse"`` when ``b > c``, else ``"same"``.
    """
    ref, new = _booleans(ref_pass, "ref_pass"), _booleans(new_pass, "new_pass")
    if len(ref) != len(new):
        raise ValueError(
            f"ref_pass has {len(ref)} outcomes but new_pass has {len(new)}; pass one per prompt for the same prompts."
        )
    pairs = [(r, w) for r, w in zip(ref, new) if r is not None and w is not None]
    b = sum(r and not w for r, w in pairs)
    c = sum(w and not r for r, w in pairs)
    p_value = _binomial_two_sided_half(min(b, c), b + c) if b + c else 1.0
    direction = "better" if c > b else "worse" if b > c else "same"
    return {
        "b": b,
        "c": c,
        "n_discordant": b + c,
        "n": len(pairs),
        "statistic": min(b, c),
        "p_value": p_value,
        "direction": direction,
    }
