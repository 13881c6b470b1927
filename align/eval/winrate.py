"""Win rates between checkpoints on the same prompts: one pair, every pair, and controlled for response length."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from align.eval.bootstrap import (
    as_vector,
    bootstrap_mean_ci,
    bootstrap_replicates,
    check_bootstrap_args,
    check_tolerance,
    paired,
    paired_outcomes,
    percentile_ci,
    sigmoid,
)


def win_rate(scores_a: object, scores_b: object, *, tie_tolerance: float = 0.0) -> dict[str, float | int]:
    """How often checkpoint a beats checkpoint b on the same prompts.

    A prompt is a tie when ``|a - b| <= tie_tolerance``, a win when ``a - b`` exceeds it, a loss otherwise.
    ``win_rate = (wins + 0.5 * ties) / n``: ties count half, so identical checkpoints score exactly 0.5 and
    ``win_rate(a, b) + win_rate(b, a) == 1``.
    """
    check_tolerance(tie_tolerance)
    a, b = paired(scores_a, scores_b, "scores_a", "scores_b")
    out = paired_outcomes(a, b, tie_tolerance)
    wins, ties = int(np.sum(out == 1.0)), int(np.sum(out == 0.5))
    n = int(out.size)
    return {"wins": wins, "ties": ties, "losses": n - wins - ties, "n": n, "win_rate": float(out.mean())}


def win_rate_ci(
    scores_a: object,
    scores_b: object,
    *,
    tie_tolerance: float = 0.0,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float | int]:
    """:func:`win_rate` plus a paired percentile-bootstrap CI (``low``, ``high``).

    Each replicate resamples prompt indices once and uses them for both checkpoints, which keeps the pairing
    (resampling the two score vectors independently would overstate the uncertainty).
    """
    check_bootstrap_args(n_boot, alpha)
    result = win_rate(scores_a, scores_b, tie_tolerance=tie_tolerance)
    a, b = paired(scores_a, scores_b, "scores_a", "scores_b")
    # The win rate is the mean of per-prompt outcomes, so resampling prompts = resampling outcomes.
    low, high = bootstrap_mean_ci(paired_outcomes(a, b, tie_tolerance), n_boot, alpha, seed)
    return {**result, "low": low, "high": high}


def win_rate_matrix(
    scores: Mapping[str, object],
    *,
    tie_tolerance: float = 0.0,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float | int]]]:
    """Pairwise win rates with CIs for every ordered pair of checkpoints, as a JSON-friendly nested dict.

    ``M[a][b]`` is the :func:`win_rate_ci` result of a against b (``win_rate``, ``low``, ``high``, ``wins``,
    ``ties``, ``losses``, ``n``). The diagonal is a checkpoint against itself: all ties, win rate 0.5.
    Each unordered pair is computed once and mirrored, so ``M[a][b]["win_rate"] + M[b][a]["win_rate"] == 1``
    and ``M[b][a]``'s interval is ``1 -`` ``M[a][b]``'s, exactly. Every pair uses the same seed.
    """
    check_bootstrap_args(n_boot, alpha)
    check_tolerance(tie_tolerance)
    if not scores:
        raise ValueError("scores is empty; pass {checkpoint_name: per-prompt scores} for at least one checkpoint.")
    vectors: dict[str, np.ndarray] = {}
    for name, s in scores.items():
        if not isinstance(name, str):
            raise ValueError(f"checkpoint names must be strings (they become JSON keys); got {name!r}.")
        vectors[name] = as_vector(s, f"scores[{name!r}]")
    sizes = {name: v.size for name, v in vectors.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(
            f"checkpoints were scored on different numbers of prompts {sizes}; score every checkpoint on the same "
            "prompts in the same order."
        )
    names = list(vectors)
    n = next(iter(sizes.values()))
    matrix: dict[str, dict[str, dict[str, float | int]]] = {name: {} for name in names}
    for i, a in enumerate(names):
        matrix[a][a] = {"wins": 0, "ties": n, "losses": 0, "n": n, "win_rate": 0.5, "low": 0.5, "high": 0.5}
        for b in names[i + 1 :]:
            ab = win_rate_ci(
                vectors[a], vectors[b], tie_tolerance=tie_tolerance, n_boot=n_boot, alpha=alpha, seed=seed
            )
            matrix[a][b] = ab
            matrix[b][a] = {
                "wins": ab["losses"],
                "ties": ab["ties"],
                "losses": ab["wins"],
                "n": n,
                "win_rate": 1.0 - ab["win_rate"],
                "low": 1.0 - ab["high"],
                "high": 1.0 - ab["low"],
            }
    return matrix


def _fit_logistic(
    X: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float, *, max_iter: int = 200, tol: float = 1e-10
) -> np.ndarray:
    """Weighted logistic regression by Newton's method (IRLS), batched over rows of ``weights``.

    ``X`` is (m, k) shared by every fit with the intercept as column 0, ``y`` (m,) holds targets in [0, 1]
    (fractional targets are allowed and equal duplicating the row as a 1 and a 0 weighted by y and 1 - y),
    ``weights`` is (batch, m). Minimises ``-sum_i w_i [y_i log p_i + (1 - y_i) log(1 - p_i)] + ridge / 2 *
    |beta_1..k-1|^2`` for each batch row and returns beta, shape (batch, k).

    The intercept is not penalised: shrinking it toward 0 would pull the length-controlled rate toward 50%. The
    ridge on the other coefficients keeps them finite when the data are separable along length. With a penalised
    slope the intercept diverges only when a fit sees no loss at all or no win at all (ties count as half of each);
    for exactly those batch rows the intercept gets the same small ridge, so "a wins every prompt" stays finite
    (its rate is then just below 1, not 1).

    Hand-written rather than sklearn because this runs inside the bootstrap (one fit per replicate, all replicates
    solved together as one batched Newton iteration) and sklearn stays a test-only dependency.
    """
    batch, k = weights.shape[0], X.shape[1]
    one_sided = (weights @ y <= 0) | (weights @ (1.0 - y) <= 0)  # no win or no loss mass: intercept diverges
    penalty = np.full((batch, k), ridge)
    penalty[:, 0] = np.where(one_sided, ridge, 0.0)
    beta = np.zeros((batch, k))
    for _ in range(max_iter):
        p = sigmoid(beta @ X.T)  # (batch, m)
        grad = (weights * (y - p)) @ X - penalty * beta  # gradient of the penalised log-likelihood, (batch, k)
        curvature = weights * p * (1.0 - p)
        hess = (curvature[:, :, None] * X).swapaxes(1, 2) @ X  # negative Hessian, (batch, k, k)
        hess[:, np.arange(k), np.arange(k)] += penalty
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        beta += step
        if np.max(np.abs(step)) < tol:
            break
    return beta


# A length-controlled rate reads the fit at equal lengths (x = 0); it needs prompts on both sides of 0.
_NEAR_ZERO_SD = 0.25


def _length_support(x: np.ndarray) -> tuple[int, int]:
    """(prompts needed, prompts available) for reading the length fit at x = 0 (equal lengths).

    With ``m = max(5, ceil(0.1 n))``, at least ``m`` prompts need ``x <= 0.25`` AND at least ``m`` need
    ``x >= -0.25`` (a quarter of a pooled SD of length from equal, or beyond it). When one checkpoint is, say,
    always ~60 tokens longer, every x sits on one side far from 0 and the intercept of
    :func:`length_controlled_win_rate` would be an extrapolation along an assumed straight logit line."""
    needed = max(5, math.ceil(0.1 * x.size))
    available = min(int(np.sum(x <= _NEAR_ZERO_SD)), int(np.sum(x >= -_NEAR_ZERO_SD)))
    return needed, available


def length_controlled_win_rate(
    scores_a: object,
    scores_b: object,
    len_a: object,
    len_b: object,
    *,
    tie_tolerance: float = 0.0,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    ridge: float = 1e-4,
) -> dict[str, float | int | bool | str | None]:
    """Win rate of a over b adjusted for response length, with a paired bootstrap CI.

    Reward models tend to score longer answers higher, so a raw win rate partly measures "who wrote more".
    Method (a much simplified version of AlpacaEval's length-controlled win rate):

    1. Per prompt, the outcome is 1 if a beats b, 0 if b beats a, and a tie (``|a - b| <= tie_tolerance``) is
       split: it enters as target 0.5, which is the same fit as duplicating the row as a win and a loss with
       weight 0.5 each.
    2. The single regressor is the length difference ``x = (len_a - len_b) / s`` where ``s`` is the pooled
       standard deviation of all response lengths (both checkpoints; 1 if every length is equal).
    3. Fit ``P(a wins) = sigmoid(intercept + length_coef * x)`` by Newton's method with a small L2 ``ridge`` on
       ``length_coef`` only (the intercept is unpenalised, except in a fit with no win or no loss at all, where
       it would be infinite; see ``_fit_logistic``).
    4. The length-controlled win rate is ``sigmoid(intercept)``: the predicted win rate when both responses have
       the same length.

    Identifiability: step 4 reads the fit at x = 0, which the data only pin down when some prompts sit at or
    beyond equal length on each side (the rule is :func:`_length_support`'s). When they do not, the result is
    ``identifiable: False`` with ``lc_win_rate``, ``intercept``, ``low`` and ``high`` set to None and a ``note``
    saying why (the raw win rate and ``length_coef`` are still reported). Otherwise ``identifiable: True`` and
    ``note`` is None.

    Other limits, stated honestly: it assumes the length effect is linear on the logit scale and the same for
    every prompt, and it controls for length only, not for anything that correlates with length.

    The CI resamples prompts (the same indices for both checkpoints), refits, and takes percentiles; the length
    scale ``s`` is fixed from the full sample (it only rescales ``length_coef``; ``sigmoid(intercept)`` does not
    depend on it). Returns ``lc_win_rate``, ``low``, ``high``, ``intercept``, ``length_coef`` (log-odds per pooled
    std of length difference), ``length_scale`` (``s``), ``raw_win_rate``, ``ties``, ``n``, ``identifiable``,
    ``near_equal_support`` (the smaller of the two counts above), ``support_needed`` (``m``) and ``note``.
    """
    check_bootstrap_args(n_boot, alpha)
    check_tolerance(tie_tolerance)
    if not np.isfinite(ridge) or ridge <= 0:
        raise ValueError(f"ridge must be a small positive number (it keeps separable fits finite); got {ridge!r}.")
    y, la, lb = _outcomes_and_lengths(scores_a, scores_b, len_a, len_b, tie_tolerance)
    n = y.size
    scale = float(np.std(np.concatenate([la, lb])))
    if scale == 0.0:
        scale = 1.0
    x = (la - lb) / scale
    X = np.column_stack([np.ones(n), x])
    needed, available = _length_support(x)
    intercept, length_coef = _fit_logistic(X, y, np.ones((1, n)), ridge)[0]
    out: dict[str, float | int | bool | str | None] = {
        "lc_win_rate": float(sigmoid(intercept)),
        "low": None,
        "high": None,
        "intercept": float(intercept),
        "length_coef": float(length_coef),
        "length_scale": scale,
        "raw_win_rate": float(y.mean()),
        "ties": int(np.sum(y == 0.5)),
        "n": int(n),
        "identifiable": available >= needed,
        "near_equal_support": available,
        "support_needed": needed,
        "note": None,
    }
    if available < needed:
        out.update(lc_win_rate=None, intercept=None, note=_not_identifiable_note(x, la - lb, scale, available, needed))
        return out
    out["low"], out["high"] = _refit_ci(X, y, ridge, n_boot, alpha, seed)
    return out


def _refit_ci(X: np.ndarray, y: np.ndarray, ridge: float, n_boot: int, alpha: float, seed: int) -> tuple[float, float]:
    """Percentile CI of sigmoid(intercept), refitting on prompt resamples."""
    n = y.size

    def lc_replicates(idx: np.ndarray) -> np.ndarray:
        # A bootstrap resample is the original rows weighted by how often each was drawn.
        block = idx.shape[0]
        flat = (idx + n * np.arange(block)[:, None]).ravel()
        counts = np.bincount(flat, minlength=block * n).reshape(block, n).astype(float)
        return sigmoid(_fit_logistic(X, y, counts, ridge)[:, 0])

    return percentile_ci(bootstrap_replicates(lc_replicates, n, n_boot, seed), alpha)


def _outcomes_and_lengths(
    scores_a: object, scores_b: object, len_a: object, len_b: object, tie_tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked inputs of :func:`length_controlled_win_rate`: per-prompt outcomes of a vs b and both lengths."""
    a, b = paired(scores_a, scores_b, "scores_a", "scores_b")
    la, lb = paired(len_a, len_b, "len_a", "len_b")
    if la.size != a.size:
        raise ValueError(f"got {a.size} scores but {la.size} lengths; pass one length per prompt for each checkpoint.")
    if np.any(la < 0) or np.any(lb < 0):
        raise ValueError("len_a and len_b are response lengths in tokens and must be >= 0.")
    return paired_outcomes(a, b, tie_tolerance), la, lb


def _not_identifiable_note(x: np.ndarray, gap: np.ndarray, scale: float, available: int, needed: int) -> str:
    """Why the fit cannot be read at equal length: which side a sits on, by how much, and what to do instead."""
    side, other = ("longer", "shorter") if np.median(x) > 0 else ("shorter", "longer")
    return (
        f"length-controlled win rate not identifiable: only {available} of {x.size} prompts have a's answer at most "
        f"{_NEAR_ZERO_SD * scale:.1f} tokens ({_NEAR_ZERO_SD} pooled SD) {side} than b's, or {other}, "
        f"and {needed} are needed. a is almost always {side} (median difference {np.median(gap):+.1f} "
        "tokens), so its win rate at equal length would be an extrapolation. Compare at matched lengths, or "
        "report the raw win rate together with the length gap."
    )
