"""Statistics behind ``align compare``: paired win rates, bootstrap CIs, length control, pass rates, diversity, KL.

Every function is pure and works on numpy arrays. Scores are one judge (reward model) score per held-out prompt,
with the same prompts in the same order for every checkpoint, so comparisons are *paired*: every bootstrap here
resamples prompt indices and applies the same indices to every checkpoint involved.

All confidence intervals are percentile bootstraps over prompts, seeded, so the same inputs and seed always give the
same interval. The bootstrap is written out by hand (a few lines of numpy) rather than using
``scipy.stats.bootstrap`` because scipy is not a runtime dependency, and the paired and weighted variants here
(shared indices across checkpoints, resample counts as regression weights) are simpler to express directly and to
vectorise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from statistics import NormalDist

import numpy as np

# Bootstrap replicates are drawn in blocks holding at most this many indices, so memory stays bounded
# (about 64 MiB of int64) however many prompts there are.
_MAX_BLOCK_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------------------------------------------
# validation and bootstrap helpers
# --------------------------------------------------------------------------------------------------------------


def _as_vector(x: object, name: str) -> np.ndarray:
    """``x`` as a non-empty, finite, 1-D float array, or a ValueError naming ``name``."""
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per prompt); got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value per prompt.")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} non-finite value(s) (first at index {bad[0]}: {arr[bad[0]]}); "
            "drop or re-score those prompts for every checkpoint before comparing."
        )
    return arr


def _paired(a: object, b: object, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two vectors of the same length (the same prompts in the same order)."""
    va, vb = _as_vector(a, name_a), _as_vector(b, name_b)
    if va.shape != vb.shape:
        raise ValueError(
            f"{name_a} has {va.size} values but {name_b} has {vb.size}; paired comparisons need one value per "
            "prompt for the same prompts in the same order."
        )
    return va, vb


def _check_bootstrap_args(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0.05 gives a 95% interval); got {alpha!r}.")


def _check_tolerance(tie_tolerance: float) -> None:
    if not np.isfinite(tie_tolerance) or tie_tolerance < 0:
        raise ValueError(f"tie_tolerance must be a finite number >= 0; got {tie_tolerance!r}.")


def _bootstrap_index_blocks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield arrays of resampled prompt indices, shape (block, n), ``n_boot`` rows in total, from one seeded RNG."""
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_BLOCK_ELEMENTS // n)
    done = 0
    while done < n_boot:
        size = min(block, n_boot - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def _bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of ``stat``, which maps an index block (block, n) to one statistic per row."""
    return np.concatenate([stat(idx) for idx in _bootstrap_index_blocks(n, n_boot, seed)])


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    """Logistic function, overflow-free for any z (numpy only: scipy is not a runtime dependency)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def _percentile_ci(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def _bootstrap_mean_ci(values: np.ndarray, n_boot: int, alpha: float, seed: int) -> tuple[float, float]:
    """Percentile CI for the mean of ``values`` over prompts."""
    replicates = _bootstrap(lambda idx: values[idx].mean(axis=1), values.size, n_boot, seed)
    return _percentile_ci(replicates, alpha)


def _outcomes(a: np.ndarray, b: np.ndarray, tie_tolerance: float) -> np.ndarray:
    """Per-prompt outcome of a vs b: 1 = a wins, 0.5 = tie (|a - b| <= tie_tolerance), 0 = a loses."""
    diff = a - b
    return np.where(np.abs(diff) <= tie_tolerance, 0.5, (diff > 0).astype(float))


# --------------------------------------------------------------------------------------------------------------
# means and win rates
# --------------------------------------------------------------------------------------------------------------


def mean_with_ci(x: object, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, float | int]:
    """Mean of per-prompt values with a seeded percentile-bootstrap CI over prompts.

    Returns ``{"mean", "low", "high", "n"}``; the interval has coverage ``1 - alpha``.
    """
    _check_bootstrap_args(n_boot, alpha)
    v = _as_vector(x, "x")
    low, high = _bootstrap_mean_ci(v, n_boot, alpha, seed)
    return {"mean": float(v.mean()), "low": low, "high": high, "n": int(v.size)}


def win_rate(scores_a: object, scores_b: object, *, tie_tolerance: float = 0.0) -> dict[str, float | int]:
    """How often checkpoint a beats checkpoint b on the same prompts.

    A prompt is a tie when ``|a - b| <= tie_tolerance``, a win when ``a - b`` exceeds it, a loss otherwise.
    ``win_rate = (wins + 0.5 * ties) / n``: ties count half, so identical checkpoints score exactly 0.5 and
    ``win_rate(a, b) + win_rate(b, a) == 1``.
    """
    _check_tolerance(tie_tolerance)
    a, b = _paired(scores_a, scores_b, "scores_a", "scores_b")
    out = _outcomes(a, b, tie_tolerance)
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
    _check_bootstrap_args(n_boot, alpha)
    result = win_rate(scores_a, scores_b, tie_tolerance=tie_tolerance)
    a, b = _paired(scores_a, scores_b, "scores_a", "scores_b")
    # The win rate is the mean of per-prompt outcomes, so resampling prompts = resampling outcomes.
    low, high = _bootstrap_mean_ci(_outcomes(a, b, tie_tolerance), n_boot, alpha, seed)
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
    _check_bootstrap_args(n_boot, alpha)
    _check_tolerance(tie_tolerance)
    if not scores:
        raise ValueError("scores is empty; pass {checkpoint_name: per-prompt scores} for at least one checkpoint.")
    vectors: dict[str, np.ndarray] = {}
    for name, s in scores.items():
        if not isinstance(name, str):
            raise ValueError(f"checkpoint names must be strings (they become JSON keys); got {name!r}.")
        vectors[name] = _as_vector(s, f"scores[{name!r}]")
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


# --------------------------------------------------------------------------------------------------------------
# pass rates of objective checks
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# length-controlled win rate
# --------------------------------------------------------------------------------------------------------------


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
        p = _sigmoid(beta @ X.T)  # (batch, m)
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
    """(prompts needed, prompts available) for reading the fit at x = 0; see :func:`length_controlled_win_rate`."""
    needed = max(5, math.ceil(0.1 * x.size))
    available = min(int(np.sum(x <= _NEAR_ZERO_SD)), int(np.sum(x >= -_NEAR_ZERO_SD)))
    return needed, available


# Over 80 lines on purpose: the estimator's steps in order (design, fit, counterfactual, interval), read as one.
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
    beyond equal length on each side. The rule: with ``m = max(5, ceil(0.1 n))``, at least ``m`` prompts need
    ``x <= 0.25`` AND at least ``m`` need ``x >= -0.25`` (a quarter of a pooled SD of length from equal, or
    beyond it). When one checkpoint is, say, always ~60 tokens longer, every x sits on one side far from 0, the
    intercept is an extrapolation along an assumed straight logit line, and the result is ``identifiable:
    False`` with ``lc_win_rate``, ``intercept``, ``low`` and ``high`` set to None and a ``note`` saying why
    (the raw win rate and ``length_coef`` are still reported). Otherwise ``identifiable: True`` and ``note``
    is None.

    Other limits, stated honestly: it assumes the length effect is linear on the logit scale and the same for
    every prompt, and it controls for length only, not for anything that correlates with length.

    The CI resamples prompts (the same indices for both checkpoints), refits, and takes percentiles; the length
    scale ``s`` is fixed from the full sample (it only rescales ``length_coef``; ``sigmoid(intercept)`` does not
    depend on it). Returns ``lc_win_rate``, ``low``, ``high``, ``intercept``, ``length_coef`` (log-odds per pooled
    std of length difference), ``length_scale`` (``s``), ``raw_win_rate``, ``ties``, ``n``, ``identifiable``,
    ``near_equal_support`` (the smaller of the two counts above), ``support_needed`` (``m``) and ``note``.
    """
    _check_bootstrap_args(n_boot, alpha)
    _check_tolerance(tie_tolerance)
    if not np.isfinite(ridge) or ridge <= 0:
        raise ValueError(f"ridge must be a small positive number (it keeps separable fits finite); got {ridge!r}.")
    a, b = _paired(scores_a, scores_b, "scores_a", "scores_b")
    la, lb = _paired(len_a, len_b, "len_a", "len_b")
    if la.size != a.size:
        raise ValueError(f"got {a.size} scores but {la.size} lengths; pass one length per prompt for each checkpoint.")
    if np.any(la < 0) or np.any(lb < 0):
        raise ValueError("len_a and len_b are response lengths in tokens and must be >= 0.")
    y = _outcomes(a, b, tie_tolerance)
    n = y.size
    scale = float(np.std(np.concatenate([la, lb])))
    if scale == 0.0:
        scale = 1.0
    x = (la - lb) / scale
    X = np.column_stack([np.ones(n), x])
    needed, available = _length_support(x)
    intercept, length_coef = _fit_logistic(X, y, np.ones((1, n)), ridge)[0]
    out: dict[str, float | int | bool | str | None] = {
        "lc_win_rate": float(_sigmoid(intercept)),
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
        out.update(lc_win_rate=None, intercept=None)
        side, other = ("longer", "shorter") if np.median(x) > 0 else ("shorter", "longer")
        out["note"] = (
            f"length-controlled win rate not identifiable: only {available} of {n} prompts have a's answer at most "
            f"{_NEAR_ZERO_SD * scale:.1f} tokens ({_NEAR_ZERO_SD} pooled SD) {side} than b's, or {other}, "
            f"and {needed} are needed. a is almost always {side} (median difference {np.median(la - lb):+.1f} "
            "tokens), so its win rate at equal length would be an extrapolation. Compare at matched lengths, or "
            "report the raw win rate together with the length gap."
        )
        return out

    def lc_replicates(idx: np.ndarray) -> np.ndarray:
        # A bootstrap resample is the original rows weighted by how often each was drawn.
        block = idx.shape[0]
        flat = (idx + n * np.arange(block)[:, None]).ravel()
        counts = np.bincount(flat, minlength=block * n).reshape(block, n).astype(float)
        return _sigmoid(_fit_logistic(X, y, counts, ridge)[:, 0])

    out["low"], out["high"] = _percentile_ci(_bootstrap(lc_replicates, n, n_boot, seed), alpha)
    return out


# --------------------------------------------------------------------------------------------------------------
# diversity, KL, implicit reward
# --------------------------------------------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over whitespace tokens, pooled over all texts.

    N-grams never span two texts. Returns 0.0 when there are no n-grams (e.g. every text is shorter than n).
    Low values across a checkpoint's responses signal repetitive or collapsed generations.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it: distinct_n([text], n).")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (1 for unigrams, 2 for bigrams, ...); got {n!r}.")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, not str; pass the decoded response texts.")
        tokens = text.split()
        grams = [tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _groups(groups: object | None, rows: int) -> np.ndarray | None:
    """``groups`` as dense cluster ids 0..G-1 (one per row), or None for one cluster per row."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (rows,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            f"groups must be a 1-D integer array with one prompt id per row ({rows} rows); got dtype {g.dtype} and "
            f"shape {g.shape}."
        )
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def _cluster_mean_ci(
    values: np.ndarray, cluster: np.ndarray | None, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    """Percentile CI for the mean over rows, resampling clusters (prompts) with all their rows."""
    if cluster is None:
        return _bootstrap_mean_ci(values, n_boot, alpha, seed)
    sums = np.bincount(cluster, weights=values)
    counts = np.bincount(cluster).astype(float)
    replicates = _bootstrap(lambda idx: sums[idx].sum(axis=1) / counts[idx].sum(axis=1), sums.size, n_boot, seed)
    return _percentile_ci(replicates, alpha)


def sample_kl(
    policy_logprobs: object,
    ref_logprobs: object,
    mask: object,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    exact_token_kl: object | None = None,
    groups: object | None = None,
) -> dict[str, float | int]:
    """Estimate KL(policy || ref) per response from the policy's own samples, with a bootstrap CI over prompts.

    Inputs are (prompts, tokens) arrays: the log-probability of each sampled response token under the policy
    (``logp``) and under the reference (``logq``), and a 0/1 ``mask`` marking response tokens (values under mask 0,
    e.g. padding, are ignored even if non-finite). Per sequence:

    - k1 = sum over response tokens of ``logp - logq``: unbiased for the sequence KL, but single samples can be
      negative and it is noisy.
    - k3 = sum of ``(r - 1) - log r`` with ``r = q / p = exp(logq - logp)``: also unbiased (E_p[r] = 1 per token),
      never negative, usually lower variance.

    Returns ``mean``/``low``/``high`` for k1, ``k3_mean``/``k3_low``/``k3_high`` for k3 (both in nats per
    sequence) and ``n``. k1 and k3 are only meaningful when the responses were sampled from the policy.

    ``exact_token_kl`` (same shape), when given, holds the full-distribution ``KL(pi(.|prefix) || ref(.|prefix))``
    at each response position; its per-sequence sum (``exact_mean``/``exact_low``/``exact_high``) is the KL
    accumulated along the responses actually produced, never negative, and valid for greedy decoding too.

    Several samples per prompt: ``groups`` (one integer per row, naming the row's prompt) makes the bootstrap
    resample *prompts* with all their rows, since samples of one prompt are correlated and resampling rows alone
    would give too narrow an interval. The estimates stay the mean over all rows (sequences); each replicate is
    ``sum of the drawn prompts' row values / number of their rows``. ``n`` counts rows and ``n_prompts`` the
    distinct groups. Without ``groups`` every row is its own prompt (the same numbers as before groups existed).
    """
    _check_bootstrap_args(n_boot, alpha)
    lp = np.asarray(policy_logprobs, dtype=float)
    lq = np.asarray(ref_logprobs, dtype=float)
    m = np.asarray(mask)
    if lp.ndim != 2 or lp.size == 0:
        raise ValueError(f"policy_logprobs must be a non-empty 2-D (prompts, tokens) array; got shape {lp.shape}.")
    if lq.shape != lp.shape or m.shape != lp.shape:
        raise ValueError(
            f"shapes differ: policy_logprobs {lp.shape}, ref_logprobs {lq.shape}, mask {m.shape}; all three must "
            "be (prompts, tokens) over the same sampled responses."
        )
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("mask must contain only 0 and 1 (1 = response token).")
    on = m == 1
    if not (np.all(np.isfinite(lp[on])) and np.all(np.isfinite(lq[on]))):
        raise ValueError(
            "non-finite log-probabilities on masked-in tokens; a -inf under the reference means KL is infinite. "
            "Check the mask covers only sampled response tokens."
        )
    log_ratio = np.where(on, lp - lq, 0.0)  # log p - log q
    k1 = log_ratio.sum(axis=1)
    k3 = np.where(on, np.expm1(-log_ratio) + log_ratio, 0.0).sum(axis=1)
    cluster = _groups(groups, k1.size)
    k1_low, k1_high = _cluster_mean_ci(k1, cluster, n_boot, alpha, seed)
    k3_low, k3_high = _cluster_mean_ci(k3, cluster, n_boot, alpha, seed)
    out: dict[str, float | int] = {
        "mean": float(k1.mean()),
        "low": k1_low,
        "high": k1_high,
        "k3_mean": float(k3.mean()),
        "k3_low": k3_low,
        "k3_high": k3_high,
        "n": int(k1.size),
        "n_prompts": int(k1.size if cluster is None else cluster.max() + 1),
    }
    if exact_token_kl is not None:
        ex = np.asarray(exact_token_kl, dtype=float)
        if ex.shape != lp.shape:
            raise ValueError(f"exact_token_kl has shape {ex.shape}; it must match policy_logprobs {lp.shape}.")
        if not np.all(np.isfinite(ex[on])) or np.any(ex[on] < -1e-6):
            raise ValueError("exact_token_kl must be finite and >= 0 on response tokens (it is a KL divergence).")
        seq = np.where(on, np.maximum(ex, 0.0), 0.0).sum(axis=1)
        ex_low, ex_high = _cluster_mean_ci(seq, cluster, n_boot, alpha, seed)
        out.update(exact_mean=float(seq.mean()), exact_low=ex_low, exact_high=ex_high)
    return out


def implicit_reward_accuracy(
    chosen_margins: object, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float | int]:
    """Fraction of held-out preference pairs whose (implicit) reward ranks chosen above rejected, with a CI.

    ``chosen_margins`` is ``reward(chosen) - reward(rejected)`` per pair (for DPO, the implicit reward
    ``beta * (log pi/ref(chosen) - log pi/ref(rejected))``). A margin > 0 counts as correct, == 0 as half
    (a coin flip), < 0 as wrong. Returns ``{"accuracy", "low", "high", "n"}``.
    """
    _check_bootstrap_args(n_boot, alpha)
    margins = _as_vector(chosen_margins, "chosen_margins")
    correct = _outcomes(margins, np.zeros_like(margins), 0.0)
    low, high = _bootstrap_mean_ci(correct, n_boot, alpha, seed)
    return {"accuracy": float(correct.mean()), "low": low, "high": high, "n": int(margins.size)}


# --------------------------------------------------------------------------------------------------------------
# judge sanity
# --------------------------------------------------------------------------------------------------------------


def _normalise_id(identity: str) -> str:
    """Light, I/O-free normalisation so ``/rm/`` and ``/rm`` match; callers pass resolved paths or fingerprints."""
    return os.path.normpath(identity.strip())


def self_judging_warning(judge_id: str, trained_against: Mapping[str, str | None]) -> list[str]:
    """One loud warning per checkpoint whose judge is the reward model it was optimised against.

    ``judge_id`` and the values of ``trained_against`` (checkpoint name -> reward model it was trained against, or
    None) must be comparable identities: resolved paths or content fingerprints. Only exact matches (after
    stripping whitespace and normalising path separators) are detected; the caller resolves symlinks and relative
    paths. Returns an empty list when no checkpoint is graded by its own reward model.
    """
    if not isinstance(judge_id, str) or not judge_id.strip():
        raise ValueError(f"judge_id must be a non-empty string (resolved path or fingerprint); got {judge_id!r}.")
    judge = _normalise_id(judge_id)
    warnings: list[str] = []
    for name, rm in trained_against.items():
        if rm is None:
            continue
        if not isinstance(rm, str):
            raise ValueError(
                f"trained_against[{name!r}] must be a reward-model path/fingerprint string or None; got {rm!r}."
            )
        if rm.strip() and _normalise_id(rm) == judge:
            warnings.append(
                f"WARNING: SELF-JUDGING: checkpoint {name!r} is scored by the same reward model it was trained "
                f"against ({judge_id}). Its policy was optimised to maximise exactly this model's scores, so it "
                "has learned this judge's quirks and blind spots (reward hacking: e.g. length, flattery, formatting "
                "the judge over-rewards). Its scores and win rates are inflated relative to checkpoints that never "
                "saw this judge, and the comparison is not fair. Re-run `align compare` with a disjoint judge: a "
                "reward model that no compared checkpoint was trained against, ideally trained on different "
                "preference data. Until then treat this checkpoint's numbers as an upper bound."
            )
    return warnings
