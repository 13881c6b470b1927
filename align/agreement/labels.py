"""Label matrices and labels: the data conventions (see ``align.agreement``), input conversion, label maps."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

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
