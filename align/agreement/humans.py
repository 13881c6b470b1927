"""A reward model against the humans: accuracy and kappa against their majority, each annotator and the
reliable panel, beside the humans' own leave-one-out range."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from align.agreement.gate import (
    _json_float,
)
from align.agreement.labels import (
    LabelMatrix,
    _as_matrix,
    _vector,
)
from align.agreement.stats import (
    _loo_majorities,
    _plurality,
    _sign_counts,
    cohen_kappa,
)


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
