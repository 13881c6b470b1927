"""The paired bootstrap behind every interval ``align compare`` reports, plus input checks shared by its statistics.

Scores are one judge (reward model) score per held-out prompt, with the same prompts in the same order for every
checkpoint, so comparisons are *paired*: every bootstrap here resamples prompt indices and applies the same indices to
every checkpoint involved.

All confidence intervals are percentile bootstraps over prompts, seeded, so the same inputs and seed always give the
same interval. The bootstrap is written out by hand (a few lines of numpy) rather than using
``scipy.stats.bootstrap`` because scipy is not a runtime dependency, and the paired and weighted variants here
(shared indices across checkpoints, resample counts as regression weights) are simpler to express directly and to
vectorise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

# Bootstrap replicates are drawn in blocks holding at most this many indices, so memory stays bounded
# (about 64 MiB of int64) however many prompts there are.
_MAX_BLOCK_ELEMENTS = 1 << 23


def as_vector(x: object, name: str) -> np.ndarray:
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


def paired(a: object, b: object, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Two vectors of the same length (the same prompts in the same order)."""
    va, vb = as_vector(a, name_a), as_vector(b, name_b)
    if va.shape != vb.shape:
        raise ValueError(
            f"{name_a} has {va.size} values but {name_b} has {vb.size}; paired comparisons need one value per "
            "prompt for the same prompts in the same order."
        )
    return va, vb


def check_bootstrap_args(n_boot: int, alpha: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1) (0.05 gives a 95% interval); got {alpha!r}.")


def check_tolerance(tie_tolerance: float) -> None:
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


def bootstrap_replicates(stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap replicates of ``stat``, which maps an index block (block, n) to one statistic per row."""
    return np.concatenate([stat(idx) for idx in _bootstrap_index_blocks(n, n_boot, seed)])


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    """Logistic function, overflow-free for any z (numpy only: scipy is not a runtime dependency)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=float)))


def percentile_ci(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, alpha: float, seed: int) -> tuple[float, float]:
    """Percentile CI for the mean of ``values`` over prompts."""
    replicates = bootstrap_replicates(lambda idx: values[idx].mean(axis=1), values.size, n_boot, seed)
    return percentile_ci(replicates, alpha)


def paired_outcomes(a: np.ndarray, b: np.ndarray, tie_tolerance: float) -> np.ndarray:
    """Per-prompt outcome of a vs b: 1 = a wins, 0.5 = tie (|a - b| <= tie_tolerance), 0 = a loses."""
    diff = a - b
    return np.where(np.abs(diff) <= tie_tolerance, 0.5, (diff > 0).astype(float))


def mean_with_ci(x: object, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, float | int]:
    """Mean of per-prompt values with a seeded percentile-bootstrap CI over prompts.

    Returns ``{"mean", "low", "high", "n"}``; the interval has coverage ``1 - alpha``.
    """
    check_bootstrap_args(n_boot, alpha)
    v = as_vector(x, "x")
    low, high = bootstrap_mean_ci(v, n_boot, alpha, seed)
    return {"mean": float(v.mean()), "low": low, "high": high, "n": int(v.size)}
