"""The agreement gate on single-response ratings (unpaired feedback): each annotator rates one response (a score on
a scale, or a thumbs up / down), and the response's desirable / undesirable label comes from the aggregate.

The pairwise machinery applies once each rating is read relative to ``agreement.rating_threshold``: a rating above
the threshold is a vote for "desirable", below it a vote for "undesirable", on it a tie. So the ratings are shifted
by the threshold and passed to :func:`align.agreement.gate.apply_agreement`, which then

- measures agreement on the shifted ratings: Krippendorff's alpha at ``agreement.level`` (nominal for thumbs,
  ordinal or interval for scales), Fleiss' kappa, percent agreement and pairwise Cohen's kappa are all unchanged by
  a shift of every rating, so they are the ratings' own figures;
- judges each annotator by the leave-one-out kappa of their *votes* (the side of the threshold) against the
  majority of the others, drops the unreliable ones as the recipe says, and gates on the headline metric;
- votes each response: its label is the plurality side among the kept annotators (``rating_label: vote``), under
  the same ``aggregate`` / ``min_item_agreement`` rules as pairs; or (``mean`` / ``median``) the side of the
  threshold the kept annotators' mean or median rating falls on.

A response whose vote is a tie, or whose aggregate sits on the threshold, has no label and is dropped (``tie``):
unlike a tied pair it cannot be kept, since KTO needs a desirable or undesirable label.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from align.agreement.gate import AgreementConfig, AgreementOutcome, apply_agreement
from align.agreement.labels import LabelMatrix, _as_matrix, _num
from align.agreement.stats import ItemVote


def apply_rating_agreement(ratings: LabelMatrix, cfg: AgreementConfig) -> AgreementOutcome:
    """Gate and label single-response ratings (annotators x responses; None / NaN where an annotator did not rate).

    Returns the :class:`AgreementOutcome` of the shifted ratings, with ``report["labels"]`` the ratings as given
    and ``report["rating_threshold"]`` / ``report["rating_label"]`` recording the rule. Each vote's
    ``orientation`` is +1 (desirable) or -1 (undesirable) for a kept response; ties and undecided responses carry
    a ``drop_reason`` (``no_labels``, ``tie``, ``low_agreement``).
    """
    if cfg.level == "ratio":
        # A ratio scale has a true zero; shifting it by the threshold would change the statistic.
        raise ValueError(
            "agreement.level=ratio is not available for single-response ratings (they are compared with "
            "agreement.rating_threshold); use interval or ordinal."
        )
    m, names = _as_matrix(ratings)
    shifted = m - float(cfg.rating_threshold)
    # Ties cannot be kept for an unpaired row (it needs a label either way), so the vote always drops them.
    outcome = apply_agreement(dict(zip(names, shifted, strict=True)), replace(cfg, ties="drop"))
    outcome.report["labels"] = [_num(v) for v in np.unique(m[~np.isnan(m)])]
    outcome.report["rating_threshold"] = _num(float(cfg.rating_threshold))
    outcome.report["rating_label"] = cfg.rating_label
    if cfg.rating_label != "vote":
        keep = [i for i, n in enumerate(names) if n not in outcome.dropped_annotators]
        outcome.votes = _votes_by_aggregate(shifted[keep], cfg)
        outcome.drop_reasons.clear()
        outcome.drop_reasons.update(v.drop_reason for v in outcome.votes if v.drop_reason is not None)
    return outcome


def _votes_by_aggregate(shifted: np.ndarray, cfg: AgreementConfig) -> list[ItemVote]:
    """Each response's verdict from the mean or median of its (shifted) ratings: the side of zero it falls on.

    ``agreement`` and ``margin`` are those of the individual votes (sign of each rating), as :func:`aggregate`
    reports them, so ``min_item_agreement`` and ``aggregate: unanimous`` keep their meaning."""
    needed = 1.0 if cfg.aggregate == "unanimous" else cfg.min_item_agreement
    votes: list[ItemVote] = []
    for column in shifted.T:
        given = column[~np.isnan(column)]
        if given.size == 0:
            votes.append(ItemVote(0, math.nan, 0.0, 0, "no_labels"))
            continue
        centre = float(np.mean(given) if cfg.rating_label == "mean" else np.median(given))
        orientation = 0 if abs(centre) < 1e-12 else int(math.copysign(1, centre))
        signs = np.sign(given)
        agreement = float((signs == orientation).sum()) / given.size
        margin = float(orientation * ((signs > 0).sum() - (signs < 0).sum())) / given.size
        reason = None
        if orientation == 0:
            reason = "tie"
        elif agreement < needed - 1e-12:
            reason = "low_agreement"
        votes.append(ItemVote(orientation, agreement, margin, int(given.size), reason))
    return votes
