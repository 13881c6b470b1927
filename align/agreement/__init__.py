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

Single-response ratings (unpaired feedback: each annotator rates one response, on a scale or as thumbs up / down) go
through :func:`apply_rating_agreement`, which reads every rating relative to ``agreement.rating_threshold`` and then
applies the same gate and votes (see ``align.agreement.ratings``).

Why hand-written: the library depends on ``numpy`` only. ``sklearn``, ``statsmodels`` and ``krippendorff``
implement these statistics too and serve as test oracles, but they are dev-only dependencies, and none of them
handles missing labels, the undefined cases and the preference conventions above the way this pipeline needs.
"""

from align.agreement.gate import (
    RATING_LABELS,
    AgreementConfig,
    AgreementOutcome,
    agreement_report,
    apply_agreement,
    format_report,
)
from align.agreement.humans import model_vs_humans
from align.agreement.labels import (
    LEVELS,
    METRICS,
    PAIRWISE_CONVENTION,
    WEIGHTS,
    AgreementWarning,
    LabelMatrix,
    annotations_by_annotator,
    map_labels,
    scores_to_preference,
)
from align.agreement.ratings import apply_rating_agreement
from align.agreement.stats import (
    BootstrapInterval,
    ItemVote,
    aggregate,
    bootstrap_ci,
    cohen_kappa,
    fleiss_kappa,
    fleiss_table,
    krippendorff_alpha,
    landis_koch_band,
    leave_one_out_kappa,
    pairwise_kappa,
    percent_agreement,
)
from align.errors import AgreementGateError

__all__ = [
    "LEVELS",
    "RATING_LABELS",
    "WEIGHTS",
    "LabelMatrix",
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
    "apply_rating_agreement",
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
