"""The agreement report, the recipe's ``agreement`` section and the gate that applies it to a dataset."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from align.agreement.labels import (
    LEVELS,
    METRICS,
    AgreementWarning,
    LabelMatrix,
    _as_matrix,
    _num,
    _warn,
)
from align.agreement.stats import (
    ItemVote,
    _check_pair_names,
    _fleiss_from_matrix,
    _fleiss_table,
    _pair_key,
    aggregate,
    bootstrap_ci,
    cohen_kappa,
    krippendorff_alpha,
    landis_koch_band,
    leave_one_out_kappa,
    percent_agreement,
)
from align.errors import AgreementGateError

RATING_LABELS = ("vote", "mean", "median")  # how an unpaired response's label comes from its ratings


def _json_float(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _headline_value(metric: str, values: Mapping[str, Any]) -> float:
    if metric == "cohen_kappa_mean":
        pair = [v for v in values["cohen_kappa_pairwise"].values() if v is not None and not math.isnan(v)]
        return float(np.mean(pair)) if pair else math.nan
    v = values[metric]
    return math.nan if v is None else float(v)


def agreement_report(
    annotations: LabelMatrix,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    metric: str = "fleiss_kappa",
    level: str = "nominal",
) -> dict[str, Any]:
    """All agreement figures for annotator -> labels, JSON-serialisable (NaN -> None).

    Keys: ``n_items``, ``n_annotators``, ``annotators``, ``labels`` (sorted distinct values),
    ``percent_agreement``, ``cohen_kappa_pairwise`` ("a|b" -> kappa), ``fleiss_kappa`` (on items with the modal
    number of raters), ``fleiss_items`` (how many items that is), ``krippendorff_alpha`` (at ``level``: nominal
    for labels and thumbs, ordinal or interval for rating scales; ``alpha_level`` names it unless nominal),
    ``per_annotator`` (leave-one-out kappa), ``headline`` ({"metric", "value"}, ``metric`` being one of
    :data:`METRICS`), ``band`` (Landis-Koch band of the headline; None for percent agreement, which is not
    chance-corrected), and ``ci``: 95% percentile-bootstrap ``[low, high]`` for ``percent_agreement``,
    ``fleiss_kappa``, ``krippendorff_alpha`` and ``"cohen_kappa:a|b"`` per pair (``n_boot=0`` skips the
    bootstrap: every interval is ``[None, None]``).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}.")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")
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
        "krippendorff_alpha": krippendorff_alpha(m, level),
    }
    statistics: dict[str, Callable[[np.ndarray], float]] = {
        "percent_agreement": percent_agreement,
        "fleiss_kappa": _fleiss_from_matrix,
        "krippendorff_alpha": lambda x: krippendorff_alpha(x, level),
    }
    for i, j in pairs:
        statistics[f"cohen_kappa:{_pair_key(names[i], names[j])}"] = lambda x, i=i, j=j: cohen_kappa(x[i], x[j])
    ci: dict[str, list[float | None]] = {}
    for key, stat in statistics.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            low, high = bootstrap_ci(stat, m, n_boot=n_boot, seed=seed) if n_boot else (math.nan, math.nan)
        for w in caught:  # bootstrap_ci cannot know which statistic it resampled: name it, or the user cannot act
            if issubclass(w.category, AgreementWarning):
                _warn(f"{key}: {w.message}")
            else:
                warnings.warn(w.message, w.category, stacklevel=2)
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
    if level != "nominal":
        report["alpha_level"] = level
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
    (0 = none). ``seed``: bootstrap seed. ``level``: Krippendorff's alpha's level of measurement (nominal for
    pairwise labels and thumbs up / down; ordinal or interval for rating scales).

    Unpaired feedback (one response, each annotator's rating of it; :mod:`align.agreement.ratings`):
    ``rating_threshold``: a rating above it says desirable, below it undesirable, equal to it neither (the default 0
    suits thumbs coded +1 / -1; use e.g. 3 on a 1..5 scale). ``rating_label``: how a response's label comes from
    its ratings: ``vote`` (each rating votes by its side of the threshold, aggregated as pairs' votes are),
    ``mean`` or ``median`` (the aggregate rating against the threshold; equal to it is a tie).
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
    level: str = "nominal"
    rating_threshold: float = 0.0
    rating_label: str = "vote"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"agreement.metric must be one of {METRICS}, got {self.metric!r}.")
        if self.level not in LEVELS:
            raise ValueError(
                f"agreement.level must be one of {LEVELS} (Krippendorff's alpha's level of measurement), got "
                f"{self.level!r}."
            )
        v = self.rating_threshold
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"agreement.rating_threshold must be a finite number, got {v!r}.")
        if self.rating_label not in RATING_LABELS:
            raise ValueError(f"agreement.rating_label must be one of {RATING_LABELS}, got {self.rating_label!r}.")
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
    whether it met ``min`` (None when there is no gate). ``messages``: what the gate had to say, each once (see
    :func:`apply_agreement`).
    """

    report: dict[str, Any]
    votes: list[ItemVote]
    dropped_annotators: dict[str, float] = field(default_factory=dict)
    drop_reasons: Counter = field(default_factory=Counter)
    gate_value: float | None = None
    gate_passed: bool | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def n_kept(self) -> int:
        return sum(v.kept for v in self.votes)

    @property
    def n_flipped(self) -> int:
        return sum(v.kept and v.orientation == -1 for v in self.votes)


def apply_agreement(annotations: LabelMatrix, cfg: AgreementConfig, *, warn: bool = True) -> AgreementOutcome:
    """Measure agreement, drop unreliable annotators, gate, and vote every item, as the recipe says.

    Order: annotators whose leave-one-out kappa is below ``cfg.drop_annotators_below`` are dropped (an undefined
    kappa is not grounds for dropping); the report is computed on the remaining panel; the gate compares its
    headline ``cfg.metric`` with ``cfg.min`` (an undefined value fails); items are aggregated on that panel.

    What the gate has to say (annotators dropped, a failed gate under ``on_fail: warn``, statistics undefined on
    these labels) is collected in :attr:`AgreementOutcome.messages`, each once, and also emitted as
    :class:`AgreementWarning` unless ``warn=False`` (the data layer says them itself, once per process).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AgreementWarning)
        outcome = _apply_agreement(annotations, cfg)
    for w in caught:
        if not issubclass(w.category, AgreementWarning):
            warnings.warn(w.message, w.category, stacklevel=2)
        elif str(w.message) not in outcome.messages:
            outcome.messages.append(str(w.message))
    if warn:
        for message in outcome.messages:
            warnings.warn(message, AgreementWarning, stacklevel=2)
    return outcome


def _apply_agreement(annotations: LabelMatrix, cfg: AgreementConfig) -> AgreementOutcome:
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
                f"dropping annotators with leave-one-out kappa below agreement.drop_annotators_below = "
                f"{cfg.drop_annotators_below}: {', '.join(f'{n} ({k:.3f})' for n, k in dropped.items())}; their "
                "labels count in no split's votes"
            )
    keep = [i for i, n in enumerate(names) if n not in dropped]
    kept_names = [names[i] for i in keep]
    panel = {n: m[i] for i, n in zip(keep, kept_names, strict=True)}
    report = agreement_report(panel, n_boot=cfg.bootstrap, seed=cfg.seed, metric=cfg.metric, level=cfg.level)
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
