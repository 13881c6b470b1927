"""Agreement statistics: Cohen, Fleiss, Krippendorff, percent agreement, bootstrap intervals, and the
per-annotator views (pairwise and leave-one-out kappa) and vote aggregation built on them."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from align.agreement.labels import (
    LEVELS,
    WEIGHTS,
    AgreementWarning,
    LabelMatrix,
    _as_matrix,
    _categories,
    _counts,
    _num,
    _vector,
    _warn,
)


def cohen_kappa(
    a: Sequence[Any], b: Sequence[Any], *, labels: Sequence[float] | None = None, weights: str | None = None
) -> float:
    """Cohen's kappa between two annotators' labels on the same items (1 = perfect, 0 = chance level).

    Items where either label is missing are left out. ``weights`` is None (nominal), ``"linear"`` or
    ``"quadratic"`` (ordinal scales: disagreement weight |i - j| or (i - j)^2, where i, j are positions in the
    sorted ``labels``; pass the full scale, e.g. -3..3, so positions are scale steps). ``labels`` defaults to the
    values seen. Undefined (NaN + :class:`AgreementWarning`) without shared items or when chance disagreement is
    zero (both annotators use one and the same category throughout).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}.")
    va, vb = _vector(a, "first annotator's labels"), _vector(b, "second annotator's labels")
    if len(va) != len(vb):
        raise ValueError(f"the two annotators label different numbers of items ({len(va)} vs {len(vb)}).")
    if len(va) == 0:
        raise ValueError("cohen_kappa needs at least one item.")
    both = ~np.isnan(va) & ~np.isnan(vb)
    if not both.any():
        _warn("Cohen's kappa is undefined: the two annotators have no labelled item in common.")
        return math.nan
    va, vb = va[both], vb[both]
    cats = _categories(np.concatenate([va, vb]), labels, "cohen_kappa")
    k = len(cats)
    ia, ib = np.searchsorted(cats, va), np.searchsorted(cats, vb)
    observed = np.bincount(ia * k + ib, minlength=k * k).reshape(k, k).astype(float)
    observed /= observed.sum()
    expected = np.outer(observed.sum(1), observed.sum(0))
    pos = np.arange(k)
    if weights is None:
        w = (pos[:, None] != pos[None, :]).astype(float)
    elif weights == "linear":
        w = np.abs(pos[:, None] - pos[None, :]).astype(float)
    else:
        w = ((pos[:, None] - pos[None, :]) ** 2).astype(float)
    exp_dis = float((w * expected).sum())
    if exp_dis <= 1e-15:
        _warn(
            "Cohen's kappa is undefined: both annotators use a single category "
            f"({[_num(c) for c in np.unique(np.concatenate([va, vb]))]}), so chance agreement is 1."
        )
        return math.nan
    return 1.0 - float((w * observed).sum()) / exp_dis


def fleiss_kappa(table: Any) -> float:
    """Fleiss' kappa from an items x categories count table (cell = number of raters putting the item there).

    Every row must sum to the same number of raters n (else ``ValueError``; build the table with
    :func:`fleiss_table`). Undefined (NaN + warning) when n < 2 or when a single category is used.
    """
    t = np.asarray(table, dtype=float)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"a Fleiss table must be a non-empty items x categories array, got shape {t.shape}.")
    if np.isnan(t).any() or (t < 0).any() or (t != np.round(t)).any():
        raise ValueError("a Fleiss table holds non-negative whole counts (raters per item and category).")
    sums = t.sum(1)
    if (sums != sums[0]).any():
        bad = int(np.flatnonzero(sums != sums[0])[0])
        raise ValueError(
            f"Fleiss' kappa needs the same number of raters on every item: item 0 has {_num(sums[0])}, item {bad} "
            f"has {_num(sums[bad])}; build the table with fleiss_table() (keeps items with the modal count) "
            "or use krippendorff_alpha(), which allows missing labels."
        )
    n = sums[0]
    if n < 2:
        _warn(f"Fleiss' kappa is undefined: items have {_num(n)} rater(s); agreement needs at least two.")
        return math.nan
    p_item = ((t * t).sum(1) - n) / (n * (n - 1))
    p_cat = t.sum(0) / t.sum()
    p_bar, p_e = float(p_item.mean()), float((p_cat**2).sum())
    if p_e >= 1.0 - 1e-15:
        _warn("Fleiss' kappa is undefined: all ratings fall in a single category, so chance agreement is 1.")
        return math.nan
    return (p_bar - p_e) / (1.0 - p_e)


def _modal_rater_count(n_labels: np.ndarray) -> int | None:
    """The most common number of labels among items with at least two (ties -> the larger count)."""
    eligible = n_labels[n_labels >= 2]
    if eligible.size == 0:
        return None
    values, freq = np.unique(eligible, return_counts=True)
    return int(values[freq == freq.max()].max())


def _fleiss_table(matrix: np.ndarray, categories: Sequence[float] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(table on items with the modal rater count, categories, number of items left out)."""
    cats = _categories(matrix, categories, "fleiss_table")
    if cats.size == 0:
        return np.zeros((0, 0)), cats, matrix.shape[1]
    counts = _counts(matrix, cats)
    n_labels = counts.sum(1)
    modal = _modal_rater_count(n_labels)
    if modal is None:
        return np.zeros((0, len(cats))), cats, matrix.shape[1]
    keep = n_labels == modal
    return counts[keep], cats, int((~keep).sum())


def fleiss_table(matrix: LabelMatrix, categories: Sequence[float] | None = None) -> tuple[np.ndarray, list[float]]:
    """Items x categories count table for :func:`fleiss_kappa` from an annotators x items label matrix.

    Fleiss' kappa needs the same number of raters on every item, so only items with the *modal* number of labels
    (among items with at least two; ties go to the larger count) are kept; the others are left out with an
    :class:`AgreementWarning` saying how many. ``categories`` defaults to the distinct labels seen.
    """
    m, _ = _as_matrix(matrix)
    table, cats, left_out = _fleiss_table(m, categories)
    if left_out:
        n = _num(table.sum(1)[0]) if table.shape[0] else 0
        _warn(
            f"fleiss_table: kept {table.shape[0]} of {m.shape[1]} items (those with {n} labels); left out "
            f"{left_out} with a different number of labels. krippendorff_alpha() uses every item."
        )
    return table, [_num(c) for c in cats]


def _fleiss_from_matrix(matrix: np.ndarray) -> float:
    table, _, _ = _fleiss_table(matrix, None)
    if table.shape[0] == 0:
        _warn("Fleiss' kappa is undefined: no item has two or more labels.")
        return math.nan
    return fleiss_kappa(table)


def _delta2(cats: np.ndarray, n_c: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's squared difference function between every pair of values."""
    c, k = cats[:, None], cats[None, :]
    if level == "nominal":
        return (c != k).astype(float)
    if level == "interval":
        return (c - k) ** 2
    if level == "ratio":
        total = c + k
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(total == 0, 0.0, ((c - k) / np.where(total == 0, 1.0, total)) ** 2)
    # ordinal: (sum of marginals from c to k, minus half of the two end marginals)^2
    cum = np.cumsum(n_c)
    pos = np.arange(len(cats))
    i, j = np.minimum.outer(pos, pos), np.maximum.outer(pos, pos)
    between = cum[j] - cum[i] + n_c[i]
    return (between - (n_c[i] + n_c[j]) / 2.0) ** 2


def krippendorff_alpha(matrix: LabelMatrix, level: str = "nominal") -> float:
    """Krippendorff's alpha (annotators x items, missing labels allowed) at level nominal/ordinal/interval/ratio.

    Coincidence-matrix formulation: each item with m >= 2 labels adds its ordered pairs of labels from different
    annotators, weighted 1/(m - 1); alpha = 1 - observed / expected disagreement. Ratio level needs non-negative
    values. Undefined (NaN + warning) when no item has two labels or only one value occurs.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
    m, _ = _as_matrix(matrix)
    cats = _categories(m, None, "krippendorff_alpha")
    if level == "ratio" and (cats < 0).any():
        raise ValueError(
            f"ratio-level alpha needs non-negative values, got {_num(cats[0])}; use level='interval' for signed "
            "preference labels."
        )
    if cats.size == 0:
        _warn("Krippendorff's alpha is undefined: there are no labels.")
        return math.nan
    counts = _counts(m, cats)
    per_item = counts.sum(1)
    pairable = per_item >= 2
    if not pairable.any():
        _warn("Krippendorff's alpha is undefined: no item has labels from two or more annotators.")
        return math.nan
    counts, per_item = counts[pairable], per_item[pairable]
    weighted = counts / (per_item - 1.0)[:, None]
    coincidences = weighted.T @ counts - np.diag(weighted.sum(0))
    n_c = coincidences.sum(1)
    n = n_c.sum()
    d2 = _delta2(cats, n_c, level)
    expected = float((np.outer(n_c, n_c) * d2).sum())
    if expected <= 1e-15 * max(n * n, 1.0):
        _warn(
            "Krippendorff's alpha is undefined: the pairable labels show no variation "
            f"(values {[_num(c) for c in cats[n_c > 0]]}), so expected disagreement is 0."
        )
        return math.nan
    return 1.0 - (n - 1.0) * float((coincidences * d2).sum()) / expected


def percent_agreement(matrix: LabelMatrix) -> float:
    """Mean over items with >= 2 labels of the fraction of rater pairs that give the same label (not chance-corrected)."""
    m, _ = _as_matrix(matrix)
    cats = _categories(m, None, "percent_agreement")
    if cats.size == 0:
        _warn("percent agreement is undefined: there are no labels.")
        return math.nan
    counts = _counts(m, cats)
    per_item = counts.sum(1)
    ok = per_item >= 2
    if not ok.any():
        _warn("percent agreement is undefined: no item has labels from two or more annotators.")
        return math.nan
    counts, per_item = counts[ok], per_item[ok]
    return float(((counts * (counts - 1)).sum(1) / (per_item * (per_item - 1))).mean())


def landis_koch_band(value: float | None) -> str:
    """Landis & Koch (1977) band of a kappa-like value.

    Bands (upper bounds inclusive, as in their table 0.00-0.20, 0.21-0.40, ...): < 0 "poor"; 0 to 0.20 "slight";
    above 0.20 to 0.40 "fair"; to 0.60 "moderate"; to 0.80 "substantial"; above 0.80 to 1.0 "almost perfect".
    So exactly 0.20 is "slight", 0.40 "fair", 0.60 "moderate", 0.80 "substantial", 1.0 "almost perfect". A 1e-9
    tolerance absorbs floating-point noise at the bounds. None/NaN -> "undefined"; above 1 -> ``ValueError``.
    """
    if value is None or math.isnan(value):
        return "undefined"
    v = float(value)
    if v > 1.0 + 1e-9 or math.isinf(v):
        raise ValueError(f"a kappa-like value is at most 1, got {v}.")
    if v < 0.0:
        return "poor"
    for upper, band in ((0.20, "slight"), (0.40, "fair"), (0.60, "moderate"), (0.80, "substantial")):
        if v <= upper + 1e-9:
            return band
    return "almost perfect"


class BootstrapInterval(tuple):
    """``(low, high)`` that also carries ``n_boot`` and ``n_undefined`` (resamples where the statistic was NaN)."""

    n_boot: int
    n_undefined: int

    def __new__(cls, low: float, high: float, n_boot: int = 0, n_undefined: int = 0) -> BootstrapInterval:
        obj = super().__new__(cls, (float(low), float(high)))
        obj.n_boot, obj.n_undefined = n_boot, n_undefined
        return obj

    @property
    def low(self) -> float:
        return self[0]

    @property
    def high(self) -> float:
        return self[1]


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    matrix: LabelMatrix,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    max_undefined: float = 0.1,
) -> BootstrapInterval:
    """Percentile bootstrap interval of ``statistic(matrix)``, resampling items (columns) with replacement.

    Seeded (same seed, same interval). Resamples where the statistic is NaN (its warnings are silenced) are skipped
    and counted in ``.n_undefined``; when more than ``max_undefined`` of them are, the interval is (nan, nan) with
    a warning, since a percentile interval over the defined ones alone would be biased.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r} (0.05 gives a 95% interval).")
    m, _ = _as_matrix(matrix)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, m.shape[1], size=(n_boot, m.shape[1]))
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AgreementWarning)
        for b in range(n_boot):
            values[b] = statistic(m[:, idx[b]])
    defined = values[~np.isnan(values)]
    n_undefined = n_boot - defined.size
    if n_undefined > max_undefined * n_boot or defined.size == 0:
        _warn(
            f"bootstrap interval undefined: the statistic was undefined on {n_undefined} of {n_boot} resamples "
            f"(more than {max_undefined:.0%})."
        )
        return BootstrapInterval(math.nan, math.nan, n_boot, n_undefined)
    low, high = np.quantile(defined, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapInterval(float(low), float(high), n_boot, n_undefined)


def _pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


def _check_pair_names(names: Sequence[str]) -> None:
    bad = [n for n in names if "|" in n]
    if bad:
        raise ValueError(f"annotator names {bad} contain '|', which separates names in pair keys; rename them.")


def pairwise_kappa(matrix: LabelMatrix, names: Sequence[str] | None = None) -> dict[str, float]:
    """Cohen's kappa for every pair of annotators, on the items both labelled; keys ``"a|b"`` in row order.

    ``names`` names the rows of an array (or selects/orders the annotators of a mapping; default: its keys).
    """
    m, nm = _as_matrix(matrix, names)
    _check_pair_names(nm)
    return {_pair_key(nm[i], nm[j]): cohen_kappa(m[i], m[j]) for i in range(len(nm)) for j in range(i + 1, len(nm))}


def _sign_counts(signs: np.ndarray) -> np.ndarray:
    """Items x 3 counts of (-1, 0, +1) votes from an annotators x items sign matrix (NaN ignored)."""
    return np.stack([(signs == v).sum(0) for v in (-1.0, 0.0, 1.0)], axis=1).astype(float)


def _plurality(counts: np.ndarray) -> np.ndarray:
    """Winning sign per item from (-1, 0, +1) counts; NaN with no votes or a shared top count."""
    top = counts.max(1)
    n_top = (counts == top[:, None]).sum(1)
    winner = np.array([-1.0, 0.0, 1.0])[counts.argmax(1)]
    return np.where((top == 0) | (n_top > 1), np.nan, winner)


def _loo_majorities(signs: np.ndarray) -> np.ndarray:
    """Row i: the majority sign of every other annotator, per item (NaN where undefined)."""
    total = _sign_counts(signs)
    out = np.empty_like(signs)
    for i in range(signs.shape[0]):
        own = _sign_counts(signs[i : i + 1])
        out[i] = _plurality(total - own)
    return out


def leave_one_out_kappa(matrix: LabelMatrix, names: Sequence[str] | None = None) -> dict[str, float]:
    """Each annotator's Cohen kappa against the majority vote of the *other* annotators, on preference direction.

    Both sides use the sign of the labels (so ordinal scales compare direction). Items the annotator did not label,
    or where the others have no majority (no labels or a shared top count), are left out. An unreliable or
    adversarial annotator has a kappa near or below zero while reliable ones sit well above.
    """
    m, nm = _as_matrix(matrix, names)
    signs = np.sign(m)
    majorities = _loo_majorities(signs)
    out: dict[str, float] = {}
    for i, n in enumerate(nm):
        if not (~np.isnan(signs[i]) & ~np.isnan(majorities[i])).any():
            _warn(f"leave-one-out kappa for {n!r} is undefined: no item with its label and a majority of the others.")
            out[n] = math.nan
            continue
        out[n] = cohen_kappa(signs[i], majorities[i])
    return out


@dataclass(frozen=True)
class ItemVote:
    """The humans' verdict on one item.

    ``orientation``: +1 keep the pair as read, -1 flip it (the humans prefer the ``rejected`` side), 0 tie.
    ``agreement``: fraction of the item's labellers voting with the winning side (the top count over n).
    ``margin``: ``orientation * (n_for - n_against) / n`` in [0, 1], i.e. the vote split in the oriented pair
    (0 for ties). ``drop_reason``: None (kept), ``"no_labels"``, ``"tie"``, or ``"low_agreement"``.
    """

    orientation: int
    agreement: float
    margin: float
    n_votes: int
    drop_reason: str | None = None

    @property
    def kept(self) -> bool:
        return self.drop_reason is None


def aggregate(
    matrix: LabelMatrix, *, rule: str = "majority", min_item_agreement: float = 0.0, ties: str = "drop"
) -> list[ItemVote]:
    """Vote each item (sign of every label) and decide whether to keep it and which way round.

    The winner is the plurality among -1/0/+1 votes; a shared top count is a tie (orientation 0). ``rule``:
    ``"majority"``, or ``"unanimous"`` (every vote on the winning side, i.e. agreement 1). Drop reasons, first
    match wins: ``"no_labels"``; ``"tie"`` (orientation 0 and ``ties="drop"``); ``"low_agreement"`` (agreement
    below ``min_item_agreement``, or not unanimous under ``rule="unanimous"``). With ``ties="keep"`` a tie is kept
    (orientation 0, margin 0) if its agreement passes.
    """
    if rule not in ("majority", "unanimous"):
        raise ValueError(f"rule must be 'majority' or 'unanimous', got {rule!r}.")
    if ties not in ("drop", "keep"):
        raise ValueError(f"ties must be 'drop' or 'keep', got {ties!r}.")
    if not 0.0 <= min_item_agreement <= 1.0:
        raise ValueError(f"min_item_agreement is a fraction of votes in [0, 1], got {min_item_agreement!r}.")
    m, _ = _as_matrix(matrix)
    counts = _sign_counts(np.sign(m))
    winners = _plurality(counts)
    needed = 1.0 if rule == "unanimous" else min_item_agreement
    votes: list[ItemVote] = []
    for (n_against, n_tie, n_for), win in zip(counts, winners, strict=True):
        n = int(n_against + n_tie + n_for)
        if n == 0:
            votes.append(ItemVote(0, math.nan, 0.0, 0, "no_labels"))
            continue
        orientation = 0 if math.isnan(win) else int(win)
        agreement = float(max(n_against, n_tie, n_for)) / n
        margin = float(orientation * (n_for - n_against)) / n
        reason = None
        if orientation == 0 and ties == "drop":
            reason = "tie"
        elif agreement < needed - 1e-12:
            reason = "low_agreement"
        votes.append(ItemVote(orientation, agreement, margin, n, reason))
    return votes
