"""From a recipe's data section to what a stage trains on: records -> agreement -> tokenized datasets.

Order (one direction): load + validate (``align.data.load``) -> annotator agreement gate and aggregation, once
over both splits, which may flip pairs and drops ties / low-agreement items (``align.agreement``) -> tokenization with the template guards
(``align.templates``), which drops ``truncated_to_empty`` / ``prefix_mismatch`` rows -> the drop-fraction check
over everything dropped. Every input row is kept or counted in one :class:`DropReport`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from typing import Any

from align.agreement import AgreementWarning, annotations_by_annotator, apply_agreement, apply_rating_agreement
from align.data.card import card_hash_for
from align.data.load import load_preferences, load_sft, load_unpaired
from align.data.records import PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.spec import DataError
from align.data.validate import check_drop_fraction
from align.templates import Skip


def records_fingerprint(records: list[Any]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@dataclass
class Prepared:
    train: list[Any]
    eval: list[Any]
    report: Any  # DropReport
    agreement: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    leakage: dict[str, Any] = field(default_factory=dict)

    def manifest_info(self) -> dict[str, Any]:
        return {
            "fingerprint": records_fingerprint(self.train + self.eval),
            "train": len(self.train),
            "eval": len(self.eval),
            "drops": self.report.to_dict(),
            "sources": self.sources,
            "agreement": _agreement_summary(self.agreement),
            "data_cards": data_card_hashes(self.sources),
        }


def data_card_hashes(sources: list[dict[str, Any]], cards_dir: str = "data_cards") -> dict[str, str]:
    """For each source that has a data card (``data_cards/<source name>.json``), the card's hash, so a manifest
    names the exact card its data was described by."""
    from pathlib import Path

    out = {}
    for src in sources:
        name = src.get("name")
        card = Path(cards_dir) / f"{name}.json"
        if name and card.is_file():
            h = card_hash_for(card)
            if h:
                out[name] = h
    return out


def _agreement_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    keys = (
        "n_items",
        "n_annotators",
        "percent_agreement",
        "fleiss_kappa",
        "krippendorff_alpha",
        "per_annotator",
        "band",
        "dropped_annotators",
        "alpha_level",
        "rating_threshold",
        "rating_label",
        "splits",
    )
    return {k: report.get(k) for k in keys if k in report}


# What the agreement gate said in this process. A pipeline loads the same preference data in several stages (data,
# rm, judge, pairs, compare); the gate then decides the same thing each time, and saying it once is enough (the
# manifests record it per stage). Python's own "once" warning filter is reset whenever a library edits the filters.
_SAID: set[str] = set()


def _say_once(messages: list[str]) -> None:
    for message in messages:
        if message not in _SAID:
            _SAID.add(message)
            warnings.warn(message, AgreementWarning, stacklevel=3)


def _apply_votes(
    records: list[PreferenceRecord], votes: dict[str, Any], cfg: Any, report: Any
) -> tuple[list[PreferenceRecord], dict[str, Any]]:
    """Orient and drop one split's records by the gate's votes; the split's counts (labelled, kept, flipped,
    dropped by reason)."""
    kept: list[PreferenceRecord] = []
    counts: dict[str, Any] = {"labelled": 0, "kept": 0, "flipped": 0, "dropped": {}}
    for r in records:
        vote = votes.get(r.id)
        if vote is None:
            kept.append(r)
            continue
        counts["labelled"] += 1
        if vote.drop_reason:
            report.add_drop(vote.drop_reason, r.id)
            counts["dropped"][vote.drop_reason] = counts["dropped"].get(vote.drop_reason, 0) + 1
            continue
        if vote.orientation < 0:
            # The humans' majority prefers the side read as "rejected": swap the pair and negate every label, so
            # labels keep meaning "+ = chosen preferred" in the record's new orientation.
            flipped = {a: (None if v is None else -v) for a, v in r.annotations.items()}
            r = PreferenceRecord(
                id=r.id,
                prompt=r.prompt,
                chosen=r.rejected,
                rejected=r.chosen,
                source=r.source,
                margin=r.margin,
                annotations=flipped,
                meta={**r.meta, "flipped": True},
            )
            counts["flipped"] += 1
        if getattr(cfg, "margin_from_votes", False) and r.margin is None:
            r.margin = float(vote.margin)
        counts["kept"] += 1
        kept.append(r)
    return kept, counts


def apply_agreement_to_splits(
    train: list[PreferenceRecord], evals: list[PreferenceRecord], cfg: Any, report: Any
) -> tuple[list, list, dict | None]:
    """The agreement gate once over both splits: one panel of annotators, one gate decision, one vote per item,
    then each split oriented and filtered by those votes (drops counted in ``report``).

    Gating each split alone let the small eval split fail the gate or drop another set of annotators than train
    (issue 15). The summary is the gate's report plus ``dropped_annotators`` and ``splits`` (each split's counts).
    """
    labelled = [r for r in [*train, *evals] if r.annotations]
    if not labelled or cfg is None:
        return train, evals, None
    names = sorted({a for r in labelled for a in r.annotations})
    annotations = {a: [r.annotations.get(a) for r in labelled] for a in names}
    outcome = apply_agreement(annotations, cfg, warn=False)
    _say_once(outcome.messages)
    votes = dict(zip((r.id for r in labelled), outcome.votes))
    train_kept, train_counts = _apply_votes(train, votes, cfg, report)
    eval_kept, eval_counts = _apply_votes(evals, votes, cfg, report)
    summary = dict(outcome.report)
    summary["dropped_annotators"] = list(outcome.dropped_annotators)
    summary["splits"] = {"train": train_counts, "eval": eval_counts}
    return train_kept, eval_kept, summary


def apply_agreement_to_records(records: list[PreferenceRecord], cfg: Any, report: Any) -> tuple[list, dict | None]:
    """Orient pairs by the humans' aggregated vote and drop what the agreement config drops (counted): the gate
    over one list of records (:func:`apply_agreement_to_splits` with an empty eval split)."""
    kept, _, summary = apply_agreement_to_splits(records, [], cfg, report)
    return kept, summary


def prepare_preferences(data_cfg: Any, agreement_cfg: Any = None) -> Prepared:
    loaded = load_preferences(data_cfg)
    report = loaded.report
    train, evals, agreement = apply_agreement_to_splits(loaded.train, loaded.eval, agreement_cfg, report)
    check_drop_fraction(report, data_cfg.max_drop_fraction)
    return Prepared(train, evals, report, agreement, loaded.sources, loaded.leakage)


def _rated(r: UnpairedRecord) -> bool:
    return bool(r.annotations) and any(v is not None for v in r.annotations.values())


def apply_agreement_to_unpaired(
    records: list[UnpairedRecord], cfg: Any, report: Any
) -> tuple[list[UnpairedRecord], dict | None]:
    """Label unpaired rows by their annotators and drop what the agreement config drops (counted per row).

    Rows made from a pair (``data.unpair``) are gated and voted as the pair: the same gate as DPO's on the pair's
    labels; when the humans prefer the pair's rejected side both rows' labels swap, and a dropped pair drops both
    rows. Rows rated on their own are gated on their ratings (:func:`align.agreement.apply_rating_agreement`) and
    take the label of the aggregate, replacing a label the row gave (``meta["relabelled"]`` when they differ).
    Without an agreement section the rows keep the labels they gave; a rated row without one is an error."""
    if cfg is None:
        unlabelled = [r.id for r in records if r.label is None]
        if unlabelled:
            raise DataError(
                f"{len(unlabelled)} unpaired row(s) carry annotator ratings but no label (e.g. {unlabelled[0]!r}); "
                "add an agreement section so their label comes from the ratings, e.g. agreement: "
                "{rating_threshold: 3, level: interval} for 1..5 scores (thumbs coded +1/-1 need no threshold)"
            )
        return records, None
    pair_items = [r for r in records if r.meta.get("pair_side") == "chosen" and _rated(r)]
    rated = [r for r in records if "pair_side" not in r.meta and _rated(r)]
    if pair_items and rated:
        raise DataError(
            "the data mixes annotated preference pairs (data.unpair) with rows rated on their own; the agreement gate "
            "measures one kind of label per run, so train on them in separate runs or drop one kind's annotator "
            "columns"
        )
    if not pair_items and not rated:
        return records, None
    if pair_items:
        outcome = apply_agreement(annotations_by_annotator([r.annotations for r in pair_items]), cfg)
        verdicts = {r.meta["pair_id"]: v for r, v in zip(pair_items, outcome.votes, strict=True)}
    else:
        outcome = apply_rating_agreement(annotations_by_annotator([r.annotations for r in rated]), cfg)
        verdicts = {r.id: v for r, v in zip(rated, outcome.votes, strict=True)}
    kept: list[UnpairedRecord] = []
    for r in records:
        from_pair = "pair_side" in r.meta
        vote = None
        if from_pair and pair_items:
            vote = verdicts.get(r.meta["pair_id"])
        elif not from_pair and rated:
            vote = verdicts.get(r.id)
        if vote is None:
            kept.append(r)
            continue
        if vote.drop_reason:
            report.add_drop(vote.drop_reason, r.id)
            continue
        if from_pair:
            # The pair's vote: +1 keeps chosen desirable, -1 means the humans prefer the side read as rejected.
            label = (r.meta["pair_side"] == "chosen") == (vote.orientation > 0)
            meta = {**r.meta, "flipped": True} if vote.orientation < 0 else r.meta
        else:
            label = vote.orientation > 0
            meta = {**r.meta, "relabelled": True} if r.label is not None and r.label != label else r.meta
        kept.append(UnpairedRecord(r.id, r.prompt, r.completion, label, r.source, r.annotations, meta))
    summary = dict(outcome.report)
    summary["dropped_annotators"] = list(outcome.dropped_annotators)
    summary["items"] = "pairs" if pair_items else "responses"
    # Each gated item's labels, for the data card's per-annotator coverage (manifests keep only the figures).
    summary["item_annotations"] = [r.annotations for r in (pair_items or rated)]
    return kept, summary


def prepare_unpaired(data_cfg: Any, agreement_cfg: Any = None) -> Prepared:
    """Unpaired feedback for KTO: load (pairs unpaired when ``data.unpair``), split by prompt, label and gate by the
    annotators, and check the drop limit."""
    loaded = load_unpaired(data_cfg)
    report = loaded.report
    train, agreement = apply_agreement_to_unpaired(loaded.train, agreement_cfg, report)
    evals, _ = apply_agreement_to_unpaired(loaded.eval, agreement_cfg, report)
    check_drop_fraction(report, data_cfg.max_drop_fraction)
    return Prepared(train, evals, report, agreement, loaded.sources, loaded.leakage)


def prepare_sft(data_cfg: Any) -> Prepared:
    loaded = load_sft(data_cfg)
    check_drop_fraction(loaded.report, data_cfg.max_drop_fraction)
    return Prepared(loaded.train, loaded.eval, loaded.report, None, loaded.sources, loaded.leakage)


def tokenize_records(records: list[Any], encode, report: Any) -> list[dict[str, Any]]:
    """Apply ``encode(record) -> dict`` to each record; rows the template guards reject are counted drops."""
    rows = []
    for r in records:
        try:
            rows.append(encode(r))
        except Skip as s:
            report.add_drop(s.reason, r.id)
    return rows


def sft_messages(r: Any) -> list[dict[str, str]]:
    """SFT data may be SFT records or preference records (prompt + chosen)."""
    if isinstance(r, SFTRecord):
        return r.messages
    return [*r.prompt, *r.chosen]
