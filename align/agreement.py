"""Annotator agreement for preference labels: measure it, gate on it, aggregate votes, compare a reward model.

Data conventions
----------------
A *label matrix* is annotators x items: a float ``numpy`` array with NaN for "not labelled", or a
``dict[str, Sequence]`` annotator -> labels (``None`` or NaN for missing), all sequences as long as the number of
items. Labels are numbers in the orientation of the record *as read* (see ``align.data.records``): ``+1`` = the
``chosen`` response preferred, ``-1`` = the ``rejected`` one preferred, ``0`` = tie; ordinal scales keep their value
(e.g. -3..3). :func:`map_labels` turns raw label strings into numbers, :func:`scores_to_preference` turns
per-response scores into -1/0/+1, and :func:`annotations_by_annotator` turns per-record ``annotations`` dicts into
the annotator -> labels mapping.

*Voting* (:func:`aggregate`, :func:`leave_one_out_kappa`, :func:`model_vs_humans`) uses the preference direction
only: the sign of each label. The *majority* of a set of labels is the plurality of their signs among
{-1, 0, +1}; when two outcomes share the top count there is no majority and the item is left out (or, in
:func:`aggregate`, treated as a tie). A plurality of ``0`` votes is a valid majority ("the humans call it a tie").

Undefined and invalid cases
---------------------------
- Structurally invalid input raises ``ValueError`` naming the problem: no annotators or no items, a 1-D array where
  a matrix is expected, sequences of different lengths, non-numeric or infinite labels, Fleiss tables whose rows do
  not sum to the same number of raters, a label outside the ``labels``/``categories`` given.
- A statistic that is mathematically undefined on valid input returns NaN and emits an :class:`AgreementWarning`
  saying why. This covers: a single category in use (expected agreement 1, so chance correction divides by
  zero), fewer than two labels on every item, two annotators with no item in common, and ratio-level alpha on
  values that are all zero.
- :func:`landis_koch_band` maps NaN to ``"undefined"``; :func:`bootstrap_ci` skips resamples where the statistic is
  undefined, counts them, and returns ``(nan, nan)`` when more than ``max_undefined`` of them are.
- The agreement gate (:func:`apply_agreement`) treats an undefined value as a failed gate: agreement that cannot be
  measured cannot be vouched for.

Why hand-written: the library depends on ``numpy`` only. ``sklearn``, ``statsmodels`` and ``krippendorff``
implement these statistics too and serve as test oracles, but they are dev-only dependencies, and none of them
handles missing labels, the undefined cases and the preference conventions above the way this pipeline needs.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from align.errors import AgreementGateError  # noqa: F401  (re-exported: importable here as before)

__all__ = [
    "AgreementConfig",
    "AgreementGateError",
    "AgreementOutcome",
    "AgreementWarning",
    "BootstrapInterval",
    "ItemVote",
    "METRICS",
    "PAIRWISE_CONVENTION",
    "agreement_report",
    "aggregate",
    "annotations_by_annotator",
    "apply_agreement",
    "bootstrap_ci",
    "cohen_kappa",
    "fleiss_kappa",
    "fleiss_table",
    "format_report",
    "krippendorff_alpha",
    "landis_koch_band",
    "leave_one_out_kappa",
    "map_labels",
    "model_vs_humans",
    "pairwise_kappa",
    "percent_agreement",
    "scores_to_preference",
]

METRICS = ("fleiss_kappa", "krippendorff_alpha", "cohen_kappa_mean", "percent_agreement")
LEVELS = ("nominal", "ordinal", "interval", "ratio")
WEIGHTS = (None, "linear", "quadratic")

#: A ready-made convention for A/B preference labels, for :func:`map_labels` (keys compare case-insensitively).
PAIRWISE_CONVENTION: dict[str, float] = {
    "a": 1.0,
    "b": -1.0,
    "tie": 0.0,
    "chosen": 1.0,
    "rejected": -1.0,
    "1": 1.0,
    "-1": -1.0,
    "0": 0.0,
}

LabelMatrix = np.ndarray | Mapping[str, Sequence[Any]]


class AgreementWarning(UserWarning):
    """An agreement statistic is undefined (returned as NaN) or was computed on a subset of the data."""


# ---------------------------------------------------------------------------------------------------------------
# Input conversion
# ---------------------------------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    warnings.warn(message, AgreementWarning, stacklevel=3)


def _to_float(value: Any, where: str) -> float:
    """One label -> float (None/NaN -> NaN); strings are refused with a pointer to :func:`map_labels`."""
    if value is None:
        return math.nan
    if isinstance(value, (str, bytes)):
        raise ValueError(f"{where}: label {value!r} is not a number; convert raw labels first with map_labels().")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: label {value!r} is not a number (use None for a missing label).") from None
    if math.isinf(out):
        raise ValueError(f"{where}: label {value!r} is infinite; use None/NaN for a missing label.")
    return out


def _vector(values: Any, what: str) -> np.ndarray:
    """A 1-D sequence of labels -> float array with NaN for missing."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        arr = values.astype(float)
        if arr.ndim != 1:
            raise ValueError(f"{what} must be 1-D (one label per item), got shape {arr.shape}.")
        if np.isinf(arr).any():
            raise ValueError(f"{what} has an infinite label at item {int(np.flatnonzero(np.isinf(arr))[0])}.")
        return arr
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{what} must be a sequence of labels, got {type(values).__name__}.")
    return np.array([_to_float(v, f"{what}, item {i}") for i, v in enumerate(values)], dtype=float)


def _as_matrix(data: LabelMatrix, names: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Label matrix (array or annotator -> labels mapping) -> (annotators x items float array, annotator names).

    With a mapping, ``names`` (optional) selects and orders the annotators; with an array it names the rows
    (default ``"0"``, ``"1"``, ...).
    """
    if isinstance(data, Mapping):
        keys = [str(k) for k in data]
        chosen = list(keys) if names is None else [str(n) for n in names]
        missing = [n for n in chosen if n not in keys]
        if missing:
            raise ValueError(f"annotators {missing} are not in the annotations (known: {keys}).")
        by_name = {str(k): v for k, v in data.items()}
        rows = [_vector(by_name[n], f"annotator {n!r}") for n in chosen]
        lengths = {n: len(r) for n, r in zip(chosen, rows, strict=True)}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"annotators label different numbers of items: {lengths}; every annotator needs one entry per "
                "item (None where they did not label it)."
            )
        matrix = np.vstack(rows) if rows else np.zeros((0, 0))
        names_out = chosen
    else:
        if isinstance(data, np.ndarray) and data.dtype.kind in "fiub":
            matrix = data.astype(float)
        else:
            # Row by row, so None means missing and a string label gets a precise message.
            if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
                raise ValueError(f"a label matrix must be annotators x items, got {type(data).__name__}.")
            rows = [_vector(r, f"annotator row {i}") for i, r in enumerate(data)]
            lengths = [len(r) for r in rows]
            if len(set(lengths)) > 1:
                raise ValueError(f"label matrix rows have different lengths {lengths}; pad with NaN/None.")
            matrix = np.vstack(rows) if rows else np.zeros((0, 0))
        if matrix.ndim != 2:
            raise ValueError(
                f"a label matrix must be 2-D (annotators x items), got shape {matrix.shape}; "
                "for two annotators' label vectors use cohen_kappa(a, b)."
            )
        if np.isinf(matrix).any():
            r, c = np.argwhere(np.isinf(matrix))[0]
            raise ValueError(f"label matrix has an infinite label (annotator row {r}, item {c}); use NaN for missing.")
        names_out = [str(i) for i in range(matrix.shape[0])] if names is None else [str(n) for n in names]
        if len(names_out) != matrix.shape[0]:
            raise ValueError(f"got {len(names_out)} names for a matrix with {matrix.shape[0]} annotator rows.")
    if len(set(names_out)) != len(names_out):
        dupes = sorted(n for n, c in Counter(names_out).items() if c > 1)
        raise ValueError(f"duplicate annotator names {dupes}.")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(
            f"empty label matrix (shape {matrix.shape}): agreement needs at least one annotator and one item."
        )
    return matrix, names_out


def annotations_by_annotator(per_item: Sequence[Mapping[str, Any] | None]) -> dict[str, list[float | None]]:
    """Per-record ``annotations`` dicts (annotator -> label or None) -> annotator -> one label per item.

    An annotator absent from a record's dict (or a record with ``annotations=None``) is missing (``None``) there.
    Annotators are ordered by first appearance.
    """
    names: dict[str, None] = {}
    for ann in per_item:
        for k in ann or {}:
            names.setdefault(str(k), None)
    out: dict[str, list[float | None]] = {n: [] for n in names}
    for i, ann in enumerate(per_item):
        ann = {str(k): v for k, v in (ann or {}).items()}
        for n in names:
            v = ann.get(n)
            out[n].append(None if v is None else _to_float(v, f"item {i}, annotator {n!r}"))
    return out


def _categories(values: np.ndarray, given: Sequence[float] | None, what: str) -> np.ndarray:
    """Sorted categories: the distinct non-missing values, or the given list (checked to cover the values)."""
    present = np.unique(values[~np.isnan(values)])
    if given is None:
        return present
    cats = np.array([_to_float(c, f"{what} category") for c in given], dtype=float)
    if np.isnan(cats).any() or len(np.unique(cats)) != len(cats):
        raise ValueError(f"{what} categories {list(given)} must be distinct numbers.")
    unknown = present[~np.isin(present, cats)]
    if unknown.size:
        raise ValueError(
            f"label {_num(unknown[0])} is not among the {what} categories {[_num(c) for c in np.sort(cats)]}; "
            "add it to the list or fix the label."
        )
    return np.sort(cats)


def _counts(matrix: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Items x categories count table from an annotators x items matrix (missing labels ignored)."""
    n_items = matrix.shape[1]
    mask = ~np.isnan(matrix)
    codes = np.searchsorted(cats, matrix[mask])
    items = np.broadcast_to(np.arange(n_items), matrix.shape)[mask]
    flat = np.bincount(items * len(cats) + codes, minlength=n_items * len(cats))
    return flat.reshape(n_items, len(cats)).astype(float)


def _num(x: float) -> float | int:
    """A float that is a whole number -> int (readable labels in reports)."""
    return int(x) if float(x).is_integer() else float(x)


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Label helpers
# ---------------------------------------------------------------------------------------------------------------


def scores_to_preference(scores_a: Any, scores_b: Any, *, tie_tolerance: float = 0.0) -> Any:
    """Per-response scores -> preference: +1 if ``a`` scores higher, -1 if ``b`` does, 0 if within the tolerance.

    Works elementwise on scalars or equal-shape arrays (e.g. annotators x items); a missing score (None/NaN) gives
    NaN. A scalar pair returns a float, otherwise a float array.
    """
    if tie_tolerance < 0 or math.isnan(tie_tolerance):
        raise ValueError(f"tie_tolerance must be >= 0, got {tie_tolerance!r}.")
    a = np.array(scores_a, dtype=object)
    b = np.array(scores_b, dtype=object)
    if a.shape != b.shape:
        raise ValueError(f"scores_a and scores_b have different shapes {a.shape} vs {b.shape}.")
    fa = np.vectorize(lambda v: _to_float(v, "scores_a"), otypes=[float])(a) if a.size else a.astype(float)
    fb = np.vectorize(lambda v: _to_float(v, "scores_b"), otypes=[float])(b) if b.size else b.astype(float)
    diff = fa - fb
    out = np.where(np.abs(diff) <= tie_tolerance, 0.0, np.sign(diff))
    out = np.where(np.isnan(diff), np.nan, out)
    return float(out) if out.ndim == 0 else out


def map_labels(values: Sequence[Any], convention: Mapping[str, float]) -> np.ndarray:
    """Raw labels ("A", "B", "tie", "chosen", "1", ...) -> numbers via ``convention`` (label -> value).

    Matching ignores case and surrounding spaces; numbers are matched by their text (``1`` -> ``"1"``).
    None, NaN and "" are missing (NaN). An unknown label is a ``ValueError`` naming it and listing the known ones.
    See :data:`PAIRWISE_CONVENTION` for A/B labels.
    """
    table: dict[str, float] = {}
    for key, val in convention.items():
        norm = str(key).strip().lower()
        if norm in table and table[norm] != float(val):
            raise ValueError(f"label convention maps {key!r} two ways (keys compare case-insensitively).")
        table[norm] = _to_float(val, f"label convention value for {key!r}")
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = math.nan
            continue
        if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and float(v).is_integer():
            key = str(int(v))
        else:
            key = str(v).strip().lower()
        if key == "":
            out[i] = math.nan
        elif key in table:
            out[i] = table[key]
        else:
            raise ValueError(
                f"unknown label {v!r} at position {i}; known labels: {sorted(convention, key=str)}. "
                "Add it to the label convention or fix the data."
            )
    return out


# ---------------------------------------------------------------------------------------------------------------
# Per-annotator views and voting
# ---------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------
# Report, config, gate
# ---------------------------------------------------------------------------------------------------------------


def _json_float(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _headline_value(metric: str, values: Mapping[str, Any]) -> float:
    if metric == "cohen_kappa_mean":
        pair = [v for v in values["cohen_kappa_pairwise"].values() if v is not None and not math.isnan(v)]
        return float(np.mean(pair)) if pair else math.nan
    v = values[metric]
    return math.nan if v is None else float(v)


def agreement_report(
    annotations: LabelMatrix, *, n_boot: int = 1000, seed: int = 0, metric: str = "fleiss_kappa"
) -> dict[str, Any]:
    """All agreement figures for annotator -> labels, JSON-serialisable (NaN -> None).

    Keys: ``n_items``, ``n_annotators``, ``annotators``, ``labels`` (sorted distinct values),
    ``percent_agreement``, ``cohen_kappa_pairwise`` ("a|b" -> kappa), ``fleiss_kappa`` (on items with the modal
    number of raters), ``fleiss_items`` (how many items that is), ``krippendorff_alpha`` (nominal),
    ``per_annotator`` (leave-one-out kappa), ``headline`` ({"metric", "value"}, ``metric`` being one of
    :data:`METRICS`), ``band`` (Landis-Koch band of the headline; None for percent agreement, which is not
    chance-corrected), and ``ci``: 95% percentile-bootstrap ``[low, high]`` for ``percent_agreement``,
    ``fleiss_kappa``, ``krippendorff_alpha`` and ``"cohen_kappa:a|b"`` per pair (``n_boot=0`` skips the
    bootstrap: every interval is ``[None, None]``).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be an int >= 0 (0 skips confidence intervals), got {n_boot!r}.")
    m, names = _as_matrix(annotations)
    _check_pair_names(names)
    fleiss_tab, _, _ = _fleiss_table(m, None)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    pair_kappa = {_pair_key(names[i], names[j]): cohen_kappa(m[i], m[j]) for i, j in pairs}
    point = {
        "percent_agreement": percent_agreement(m),
        "fleiss_kappa": _fleiss_from_matrix(m),
        "krippendorff_alpha": krippendorff_alpha(m, "nominal"),
    }
    statistics: dict[str, Callable[[np.ndarray], float]] = {
        "percent_agreement": percent_agreement,
        "fleiss_kappa": _fleiss_from_matrix,
        "krippendorff_alpha": krippendorff_alpha,
    }
    for i, j in pairs:
        statistics[f"cohen_kappa:{_pair_key(names[i], names[j])}"] = lambda x, i=i, j=j: cohen_kappa(x[i], x[j])
    ci: dict[str, list[float | None]] = {}
    for key, stat in statistics.items():
        low, high = bootstrap_ci(stat, m, n_boot=n_boot, seed=seed) if n_boot else (math.nan, math.nan)
        ci[key] = [_json_float(low), _json_float(high)]
    report: dict[str, Any] = {
        "n_items": int(m.shape[1]),
        "n_annotators": len(names),
        "annotators": list(names),
        "labels": [_num(v) for v in np.unique(m[~np.isnan(m)])],
        "percent_agreement": _json_float(point["percent_agreement"]),
        "cohen_kappa_pairwise": {k: _json_float(v) for k, v in pair_kappa.items()},
        "fleiss_kappa": _json_float(point["fleiss_kappa"]),
        "fleiss_items": int(fleiss_tab.shape[0]),
        "krippendorff_alpha": _json_float(point["krippendorff_alpha"]),
        "per_annotator": {k: _json_float(v) for k, v in leave_one_out_kappa(m, names).items()},
    }
    value = _headline_value(metric, report)
    report["headline"] = {"metric": metric, "value": _json_float(value)}
    report["band"] = None if metric == "percent_agreement" else landis_koch_band(value)
    report["ci"] = ci
    return report


def _fmt(x: float | None, width: int = 7) -> str:
    return f"{'n/a':>{width}}" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:>{width}.3f}"


def _fmt_ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return f"{'n/a':>16}"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]".rjust(16)


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of an :func:`agreement_report`."""
    ci = report.get("ci", {})
    labels = ", ".join(str(v) for v in report["labels"])
    head = report.get("headline", {})
    lines = [
        f"Annotator agreement: {report['n_items']} items, {report['n_annotators']} annotators "
        f"({', '.join(report['annotators'])}); labels: {labels}",
        f"Headline: {head.get('metric')} = {_fmt(head.get('value'), 0)} (Landis-Koch: {report.get('band') or 'n/a'})",
        "",
        f"{'metric':<22}{'value':>7}  {'95% CI':>16}  band",
    ]
    for key in ("percent_agreement", "fleiss_kappa", "krippendorff_alpha"):
        band = "" if key == "percent_agreement" else landis_koch_band(report[key])
        note = f"  (on {report['fleiss_items']} items with the modal rater count)" if key == "fleiss_kappa" else ""
        lines.append(f"{key:<22}{_fmt(report[key])}  {_fmt_ci(ci.get(key))}  {band}{note}")
    if report["cohen_kappa_pairwise"]:
        lines += ["", f"{'Cohen kappa, pair':<22}{'value':>7}  {'95% CI':>16}  band"]
        for pair, value in report["cohen_kappa_pairwise"].items():
            lines.append(
                f"{pair:<22}{_fmt(value)}  {_fmt_ci(ci.get(f'cohen_kappa:{pair}'))}  {landis_koch_band(value)}"
            )
    lines += ["", f"{'Leave-one-out kappa':<22}{'value':>7}  (annotator vs majority of the others)"]
    per = report["per_annotator"]
    defined = {k: v for k, v in per.items() if v is not None}
    lowest = min(defined, key=defined.get) if len(defined) > 1 else None
    for name, value in per.items():
        flag = "  <- lowest" if name == lowest else ""
        lines.append(f"{name:<22}{_fmt(value)}  {landis_koch_band(value)}{flag}")
    return "\n".join(lines)


@dataclass
class AgreementConfig:
    """The recipe's ``agreement`` section: which metric to gate on, how to treat annotators, how to vote.

    ``metric``: headline statistic (one of :data:`METRICS`). ``min``: gate threshold on it (None = no gate).
    ``on_fail``: ``"error"`` raises :class:`AgreementGateError`, ``"warn"`` warns and continues.
    ``drop_annotators_below``: drop annotators whose leave-one-out kappa is below this before aggregating.
    ``aggregate``/``min_item_agreement``/``ties``: passed to :func:`aggregate`. ``margin_from_votes``: the data
    layer sets each pair's margin from :attr:`ItemVote.margin`. ``bootstrap``: resamples for confidence intervals
    (0 = none). ``seed``: bootstrap seed.
    """

    metric: str = "fleiss_kappa"
    min: float | None = None
    on_fail: str = "warn"
    drop_annotators_below: float | None = None
    aggregate: str = "majority"
    min_item_agreement: float = 0.0
    ties: str = "drop"
    margin_from_votes: bool = False
    bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"agreement.metric must be one of {METRICS}, got {self.metric!r}.")
        for name in ("min", "drop_annotators_below"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0):
                raise ValueError(
                    f"agreement.{name} must be a number in [-1, 1] (kappa/alpha scale) or null to disable, got {v!r}."
                )
        if self.on_fail not in ("error", "warn"):
            raise ValueError(f"agreement.on_fail must be 'error' or 'warn', got {self.on_fail!r}.")
        if self.aggregate not in ("majority", "unanimous"):
            raise ValueError(f"agreement.aggregate must be 'majority' or 'unanimous', got {self.aggregate!r}.")
        v = self.min_item_agreement
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(
                f"agreement.min_item_agreement is the fraction of an item's votes on the winning side, in [0, 1]; "
                f"got {v!r} (e.g. 0.67 keeps items where at least two of three annotators agree)."
            )
        if self.ties not in ("drop", "keep"):
            raise ValueError(f"agreement.ties must be 'drop' or 'keep', got {self.ties!r}.")
        if not isinstance(self.margin_from_votes, bool):
            raise ValueError(f"agreement.margin_from_votes must be true or false, got {self.margin_from_votes!r}.")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise ValueError(
                f"agreement.bootstrap is the number of bootstrap resamples (0 disables intervals), got "
                f"{self.bootstrap!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"agreement.seed must be an int, got {self.seed!r}.")


@dataclass
class AgreementOutcome:
    """What :func:`apply_agreement` decided.

    ``report``: :func:`agreement_report` of the annotators kept (the panel the gate checked). ``votes``: one
    :class:`ItemVote` per item. ``dropped_annotators``: name -> leave-one-out kappa of those dropped.
    ``drop_reasons``: Counter of the items' drop reasons. ``gate_value``/``gate_passed``: the headline value and
    whether it met ``min`` (None when there is no gate).
    """

    report: dict[str, Any]
    votes: list[ItemVote]
    dropped_annotators: dict[str, float] = field(default_factory=dict)
    drop_reasons: Counter = field(default_factory=Counter)
    gate_value: float | None = None
    gate_passed: bool | None = None

    @property
    def n_kept(self) -> int:
        return sum(v.kept for v in self.votes)

    @property
    def n_flipped(self) -> int:
        return sum(v.kept and v.orientation == -1 for v in self.votes)


def apply_agreement(annotations: LabelMatrix, cfg: AgreementConfig) -> AgreementOutcome:
    """Measure agreement, drop unreliable annotators, gate, and vote every item, as the recipe says.

    Order: annotators whose leave-one-out kappa is below ``cfg.drop_annotators_below`` are dropped (an undefined
    kappa is not grounds for dropping); the report is computed on the remaining panel; the gate compares its
    headline ``cfg.metric`` with ``cfg.min`` (an undefined value fails); items are aggregated on that panel.
    """
    m, names = _as_matrix(annotations)
    dropped: dict[str, float] = {}
    if cfg.drop_annotators_below is not None:
        loo = leave_one_out_kappa(m, names)
        dropped = {n: k for n, k in loo.items() if not math.isnan(k) and k < cfg.drop_annotators_below}
        if len(dropped) == len(names):
            raise ValueError(
                f"every annotator's leave-one-out kappa is below agreement.drop_annotators_below="
                f"{cfg.drop_annotators_below} ({ {n: round(k, 3) for n, k in loo.items()} }); lower the threshold "
                "or set it to null."
            )
        if dropped:
            _warn(
                "dropping annotators with leave-one-out kappa below "
                f"{cfg.drop_annotators_below}: {', '.join(f'{n} ({k:.3f})' for n, k in dropped.items())}"
            )
    keep = [i for i, n in enumerate(names) if n not in dropped]
    kept_names = [names[i] for i in keep]
    panel = {n: m[i] for i, n in zip(keep, kept_names, strict=True)}
    report = agreement_report(panel, n_boot=cfg.bootstrap, seed=cfg.seed, metric=cfg.metric)
    value = report["headline"]["value"]
    gate_passed: bool | None = None
    if cfg.min is not None:
        gate_passed = value is not None and value >= cfg.min
        if not gate_passed:
            shown = "undefined" if value is None else f"{value:.3f}"
            message = (
                f"annotator agreement gate failed: {cfg.metric} = {shown} is below agreement.min = {cfg.min} "
                f"({len(kept_names)} annotators, {report['n_items']} items). Relabel or drop unreliable annotators "
                "(agreement.drop_annotators_below), lower agreement.min, choose another agreement.metric, or set "
                "agreement.on_fail: warn to continue anyway."
            )
            if cfg.on_fail == "error":
                raise AgreementGateError(message)
            _warn(message)
    votes = aggregate(m[keep], rule=cfg.aggregate, min_item_agreement=cfg.min_item_agreement, ties=cfg.ties)
    reasons = Counter(v.drop_reason for v in votes if v.drop_reason is not None)
    return AgreementOutcome(report, votes, dropped, reasons, value, gate_passed)


# ---------------------------------------------------------------------------------------------------------------
# Reward model vs humans
# ---------------------------------------------------------------------------------------------------------------


def _accuracy_kappa(pred: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    ok = ~np.isnan(pred) & ~np.isnan(ref)
    n = int(ok.sum())
    if n == 0:
        return {"accuracy": None, "kappa": None, "n_items": 0}
    kappa = cohen_kappa(pred[ok], ref[ok])
    return {"accuracy": float((pred[ok] == ref[ok]).mean()), "kappa": _json_float(kappa), "n_items": n}


def _range_summary(values: Iterable[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "min": None, "max": None}
    return {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v))}


def _panel_figures(pred: np.ndarray, signs: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """The model against one panel's majority, and the panel's leave-one-out ceiling (each vs the others)."""
    loo = _loo_majorities(signs)
    human = {n: _accuracy_kappa(signs[i], loo[i]) for i, n in enumerate(names)}
    return {
        "vs_majority": _accuracy_kappa(pred, _plurality(_sign_counts(signs))),
        "human_ceiling": {
            "kappa": _range_summary(h["kappa"] for h in human.values()),
            "accuracy": _range_summary(h["accuracy"] for h in human.values()),
            "per_annotator": human,
        },
    }


def _verdict(figures: Mapping[str, Any], whose: str) -> str:
    vs, rng = figures["vs_majority"], figures["human_ceiling"]["kappa"]
    if vs["kappa"] is None or rng["min"] is None:
        return "undefined: no items where both the model's kappa vs the majority and the human range are defined"
    kappa = vs["kappa"]
    where = "inside" if rng["min"] <= kappa <= rng["max"] else ("below" if kappa < rng["min"] else "above")
    return (
        f"model kappa vs {whose} majority {kappa:.3f} (accuracy {vs['accuracy']:.3f}) is {where} the "
        f"{whose} range {rng['min']:.3f}..{rng['max']:.3f} (mean leave-one-out kappa {rng['mean']:.3f})"
    )


def _left_out_note(left_out: Sequence[str], everyone: Mapping[str, Any], reason: str | None) -> str:
    if not left_out:
        return "no annotator left out"
    per = everyone["human_ceiling"]["per_annotator"]
    shown = ", ".join(
        f"{n} (leave-one-out kappa {'n/a' if per[n]['kappa'] is None else format(per[n]['kappa'], '.3f')} here)"
        for n in left_out
    )
    return f"left out {shown}" + (f": {reason}" if reason else "")


def model_vs_humans(
    model_pref: Sequence[Any],
    annotations: LabelMatrix,
    *,
    balance_seed: int | None = 0,
    annotators: Sequence[str] | None = None,
    left_out_reason: str | None = None,
) -> dict[str, Any]:
    """How a reward model's preferences compare with the humans', beside the humans' agreement with each other.

    ``model_pref``: one value per item, +1/-1 (0 tie) or a score difference ``r(chosen) - r(rejected)`` whose sign
    is used; None/NaN = no prediction. Compared with the human majority (plurality of label signs; items without
    one are left out) and with each annotator: accuracy (exact sign match) and Cohen kappa. The human ceiling is
    each annotator scored the same way against the majority of the *others* (leave-one-out): ``kappa`` and
    ``accuracy`` mean/min/max. The verdict places the model's kappa vs the majority inside, below or above the
    range of the annotators' leave-one-out kappas. ``balance_seed``: items are shown in a seeded random orientation
    first (None = as given), so data oriented by the majority does not collapse kappa. Returned dict is
    JSON-serialisable (NaN -> None).

    ``annotators``: the reliable panel (e.g. those the agreement gate kept); None = everyone. The top-level
    ``vs_majority``/``human_ceiling`` always cover every annotator; with a panel, ``reliable`` holds the same
    figures on the panel alone (its majority, its leave-one-out range), the verdict is made against it, and
    ``verdict_all_annotators`` keeps the everyone verdict. ``left_out_reason`` says why the others were left out.
    """
    m, names = _as_matrix(annotations)
    pred = np.sign(_vector(model_pref, "model_pref"))
    if len(pred) != m.shape[1]:
        raise ValueError(f"model_pref has {len(pred)} items but the annotations have {m.shape[1]}.")
    signs = np.sign(m)
    if balance_seed is not None:
        # Pairs that were oriented by the humans' majority (chosen = the side most preferred) carry almost only +1
        # labels, and kappa on a single category is 0 or undefined for the model and the humans alike. Showing each
        # item in a seeded random orientation (model and human signs flipped together) changes no accuracy and
        # makes kappa measure agreement again.
        flip = np.where(np.random.default_rng(balance_seed).random(len(pred)) < 0.5, -1.0, 1.0)
        pred, signs = pred * flip, signs * flip
    everyone = _panel_figures(pred, signs, names)
    out = {
        "n_items": int(m.shape[1]),
        **everyone,
        "vs_annotators": {n: _accuracy_kappa(pred, signs[i]) for i, n in enumerate(names)},
        "verdict": _verdict(everyone, "human"),
    }
    if annotators is None:
        return out
    panel = [str(a) for a in annotators]
    unknown = [a for a in panel if a not in names]
    if unknown or not panel:
        raise ValueError(f"annotators {unknown or panel} must name some of the annotations' annotators {names}.")
    rows = [names.index(a) for a in panel]
    left_out = [n for n in names if n not in panel]
    reliable = _panel_figures(pred, signs[rows], panel)
    note = _left_out_note(left_out, everyone, left_out_reason)
    out["reliable"] = {"annotators": panel, "left_out": left_out, "left_out_reason": left_out_reason, **reliable}
    out["verdict_all_annotators"] = out["verdict"]
    out["verdict"] = f"{_verdict(reliable, 'reliable human')}; {note}"
    return out
