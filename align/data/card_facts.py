"""A data card's facts: what ``align data card`` computes from the loaded data (counts, drops, lengths, sources,
agreement) and hashes; ``align.data.card`` renders them into the card's Markdown and JSON."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from align.agreement import landis_koch_band
from align.data.records import Message, PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.split import prompt_key, record_prompt
from align.data.validate import DUPLICATE, DropReport
from align.models import tiny_tokenizer

logger = logging.getLogger(__name__)

Record = PreferenceRecord | SFTRecord | UnpairedRecord

CARD_SCHEMA = 1
TINY_TOKENIZER_NAME = "align.models.tiny_tokenizer() (the committed tiny byte-level BPE, align/assets/tiny-tokenizer)"
DEFAULT_UNRELIABLE_BELOW = 0.2
ROUND = 6  # decimals kept for floats in the facts, so platform noise in the last bits does not change the card

#: (key, heading, placeholder) of the human-written datasheet sections, in card order.
HUMAN_SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("motivation", "Motivation", "TODO: why was this dataset made, by whom, and for which task?"),
    (
        "composition",
        "Composition",
        "TODO: what is one record; what do the prompts and responses cover (domains, languages); what is missing?",
    ),
    (
        "collection",
        "Collection and annotation",
        "TODO: how were the prompts and responses produced, and who chose the preferred response (raters, "
        "guidelines, tooling, pay)?",
    ),
    (
        "preprocessing",
        "Preprocessing",
        "TODO: cleaning or filtering done before align reads the data (align's own checks are listed under "
        "Computed facts).",
    ),
    ("uses", "Uses", "TODO: what the data is meant for, and what it should not be used for."),
    ("known_issues", "Known issues and limitations", "TODO: biases, errors, gaps and risks a user should know about."),
    ("distribution", "Distribution", "TODO: licence, where the data is published, and any terms of use."),
    (
        "maintenance",
        "Maintenance",
        "TODO: who maintains the data, how to report problems, and how versions are tracked.",
    ),
)
#: Front-matter keys the card generates on every run; the others are the person's once the card exists.
GENERATED_FRONT_MATTER = ("size_categories",)
FRONT_MATTER_ORDER = ("license", "language", "task_categories", "size_categories", "pretty_name", "tags")
# The Hugging Face Hub's size buckets: (upper bound, label).
SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)

_FRONT = re.compile(r"\A---\n(.*?\n)?---\n", re.S)
_OPEN = re.compile(r"<!-- human:([A-Za-z0-9_-]+) -->")
_CLOSE = re.compile(r"<!-- /human:([A-Za-z0-9_-]+) -->")
_SECTION = re.compile(r"<!-- human:([A-Za-z0-9_-]+) -->\n(.*?)<!-- /human:\1 -->", re.S)


# ---------------------------------------------------------------------------------------------------------------
# Facts
# ---------------------------------------------------------------------------------------------------------------


def _round(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return round(float(x), ROUND)


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` rows."""
    for upper, label in SIZE_CATEGORIES:
        if n < upper:
            return label
    return "n>1B"


STAT_KEYS = ("min", "median", "p90", "max", "mean")


def length_stats(lengths: Sequence[int]) -> dict[str, float | int | None]:
    """min / median / p90 / max / mean of token lengths (p90 interpolated linearly, numpy's default)."""
    import numpy as np

    if not lengths:
        return dict.fromkeys(STAT_KEYS)
    values = np.asarray(lengths, dtype=float)
    return {
        "min": int(values.min()),
        "median": round(float(np.median(values)), 1),
        "p90": round(float(np.percentile(values, 90)), 1),
        "max": int(values.max()),
        "mean": round(float(values.mean()), 1),
    }


def _user_turns(record: Record) -> int:
    messages = record.prompt if isinstance(record, (PreferenceRecord, UnpairedRecord)) else record.messages
    return sum(m["role"] == "user" for m in messages)


def _joined(messages: Sequence[Message]) -> str:
    return "\n".join(m["content"] for m in messages)


def _render(
    tokenizer: Any, conversations: Sequence[Sequence[Message]], add_generation_prompt: bool
) -> tuple[list[str], str]:
    """Texts as the model sees them (the tokenizer's chat template), or message contents joined by newlines.

    Falls back to joined contents for every conversation when there is no template or it refuses one of them
    (some templates reject a system turn), so all lengths in one distribution are measured the same way.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            texts = [
                tokenizer.apply_chat_template(list(c), tokenize=False, add_generation_prompt=add_generation_prompt)
                for c in conversations
            ]
            return texts, "chat template" + (" with the generation prompt" if add_generation_prompt else "")
        except Exception as exc:  # any template error: measure every conversation without the template instead
            logger.warning("the chat template failed on a conversation (%s); measuring without it", exc)
    return [_joined(c) for c in conversations], "message contents joined by newlines (no chat template)"


def _token_lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [len(x) for x in ids]


def token_facts(records: Sequence[Record], tokenizer: Any, tokenizer_name: str) -> dict[str, Any]:
    """Token-length distributions of prompt / chosen / rejected (prompt / response / conversation for SFT; prompt /
    desirable / undesirable completions for unpaired feedback)."""
    prompt_texts, rendering = _render(tokenizer, [record_prompt(r) for r in records], add_generation_prompt=True)
    out: dict[str, Any] = {
        "tokenizer": tokenizer_name,
        "prompt_rendering": rendering,
        "response_rendering": "reply text alone, no special tokens",
        "prompt": length_stats(_token_lengths(tokenizer, prompt_texts)),
    }
    prefs = [r for r in records if isinstance(r, PreferenceRecord)]
    sfts = [r for r in records if isinstance(r, SFTRecord)]
    unpaired = [r for r in records if isinstance(r, UnpairedRecord)]
    if prefs:
        chosen = _token_lengths(tokenizer, [_joined(r.chosen) for r in prefs])
        rejected = _token_lengths(tokenizer, [_joined(r.rejected) for r in prefs])
        out["chosen"] = length_stats(chosen)
        out["rejected"] = length_stats(rejected)
        out["chosen_vs_rejected"] = {
            "mean_ratio": _round(sum(chosen) / sum(rejected)) if sum(rejected) else None,
            "chosen_longer": sum(c > r for c, r in zip(chosen, rejected)),
            "rejected_longer": sum(c < r for c, r in zip(chosen, rejected)),
            "equal": sum(c == r for c, r in zip(chosen, rejected)),
        }
    if unpaired:
        for key, label in (("desirable", True), ("undesirable", False)):
            texts = [_joined(r.completion) for r in unpaired if r.label is label]
            out[key] = length_stats(_token_lengths(tokenizer, texts))
    if sfts:
        out["response"] = length_stats(_token_lengths(tokenizer, [r.messages[-1]["content"] for r in sfts]))
        texts, out["conversation_rendering"] = _render(tokenizer, [r.messages for r in sfts], False)
        out["conversation"] = length_stats(_token_lengths(tokenizer, texts))
    return out


def label_balance(records: Sequence[Record]) -> dict[str, Any]:
    """Label balance of unpaired records: desirable and undesirable counts and the desirable share (KTO weighs the
    two losses; its paper's Eq. 8 wants the weighted counts within a factor 1 to 4/3 of each other)."""
    desirable = sum(isinstance(r, UnpairedRecord) and r.label is True for r in records)
    undesirable = sum(isinstance(r, UnpairedRecord) and r.label is False for r in records)
    total = desirable + undesirable
    return {
        "desirable": desirable,
        "undesirable": undesirable,
        "desirable_share": _round(desirable / total) if total else None,
    }


def content_hash(records: Sequence[Record]) -> str:
    """sha256 of the records' canonical JSON, ordered by id: the same set of records gives the same hash,
    whatever the split or file order."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.id):
        digest.update(json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=True).encode("ascii"))
        digest.update(b"\n")
    return digest.hexdigest()


def unreliable_annotators(report: Mapping[str, Any], below: float = DEFAULT_UNRELIABLE_BELOW) -> list[str]:
    """Annotators whose leave-one-out kappa (vs the majority of the others) is below ``below``."""
    return [name for name, kappa in report["per_annotator"].items() if kappa is not None and kappa < below]


def summarise_agreement(
    report: Mapping[str, Any],
    per_item: Sequence[Mapping[str, Any] | None],
    *,
    unreliable_below: float = DEFAULT_UNRELIABLE_BELOW,
    bootstrap: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """The card's agreement block from an :func:`align.agreement.agreement_report` and the items it measured.

    ``per_item``: each item's ``annotations`` dict (annotator -> label or None), for each annotator's coverage.
    """
    ci = report.get("ci", {})
    n_items = len(per_item)
    labelled = Counter(str(a) for ann in per_item for a, v in (ann or {}).items() if v is not None)

    def figure(key: str, banded: bool = True) -> dict[str, Any]:
        value = report.get(key)
        low, high = ci.get(key, [None, None])
        out = {"value": _round(value), "ci95": [_round(low), _round(high)]}
        if banded:
            out["band"] = landis_koch_band(value)
        return out

    headline = report.get("headline", {})
    return {
        "n_items": report["n_items"],
        "n_annotators": report["n_annotators"],
        "labels": list(report["labels"]),
        "headline": {"metric": headline.get("metric"), "value": _round(headline.get("value")), "band": report["band"]},
        "percent_agreement": figure("percent_agreement", banded=False),
        "fleiss_kappa": {**figure("fleiss_kappa"), "items": report.get("fleiss_items")},
        "krippendorff_alpha": {
            **figure("krippendorff_alpha"),
            # only off the default, so cards of pairwise labels keep their facts (and hashes)
            **({"level": report["alpha_level"]} if report.get("alpha_level", "nominal") != "nominal" else {}),
        },
        "cohen_kappa_pairwise": {
            pair: {
                "value": _round(value),
                "ci95": [_round(x) for x in ci.get(f"cohen_kappa:{pair}", [None, None])],
            }
            for pair, value in report["cohen_kappa_pairwise"].items()
        },
        "per_annotator": {
            name: {
                "leave_one_out_kappa": _round(kappa),
                "band": landis_koch_band(kappa),
                "labelled": labelled.get(name, 0),
                "labelled_share": _round(labelled.get(name, 0) / n_items) if n_items else None,
            }
            for name, kappa in report["per_annotator"].items()
        },
        "unreliable_below": unreliable_below,
        "unreliable": unreliable_annotators(report, unreliable_below),
        "bootstrap": bootstrap,
        "seed": seed,
    }


def _source_facts(summary: Mapping[str, Any]) -> dict[str, Any]:
    report = summary.get("report") or {}
    files = []
    for f in summary.get("files") or []:
        path = f["path"]
        if summary.get("kind") == "builtin":
            path = _package_relative(path)
        files.append({"path": path, "sha256": f["sha256"]})
    out = {
        "name": summary.get("name"),
        "path": summary.get("path") or None,
        "plugin": summary.get("plugin"),
        "kind": summary.get("kind"),
        "format": summary.get("format"),
        "role": summary.get("role", "train"),
        "weight": summary.get("weight"),
        "rows_read": summary.get("rows_read"),
        "rows_taken": summary.get("rows_taken"),
        "kept": report.get("kept"),
        "dropped": dict(sorted((report.get("dropped") or {}).items())),
        "files": files,
    }
    if summary.get("revision"):
        out["revision"] = summary["revision"]
    return out


def _package_relative(path: str) -> str:
    """A packaged sample's path relative to the directory holding ``align/`` (the same on every machine)."""
    import align

    root = Path(align.__file__).resolve().parent.parent
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return Path(path).name


def build_card_facts(
    name: str,
    *,
    kind: str,
    train: Sequence[Record],
    eval_records: Sequence[Record],
    report: DropReport,
    sources: Sequence[Mapping[str, Any]],
    leakage: Mapping[str, Any],
    settings: Mapping[str, Any],
    agreement: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    tokenizer_name: str = TINY_TOKENIZER_NAME,
    source_ref: str = "",
) -> dict[str, Any]:
    """All computed facts of a card, JSON-safe and deterministic (no timestamps; keys sorted when written).

    ``train``/``eval_records``: the kept records of each split (after any agreement aggregation). ``report``: the
    drop report covering every input row. ``sources``: the loader's per-source summaries. ``leakage``:
    :func:`align.data.split.count_leakage` of the two splits. ``settings``: preprocessing settings to record
    (``eval_fraction``, ``split_seed``, ``max_drop_fraction``, ``dedupe``, ``split_method``, ...).
    ``agreement``: :func:`summarise_agreement` output, or None when the records carry no annotator labels.
    ``tokenizer``: anything called as ``tokenizer(texts, add_special_tokens=False)["input_ids"]`` (a
    ``transformers`` tokenizer); None loads the committed tiny tokenizer.
    """
    if tokenizer is None:
        tokenizer = tiny_tokenizer()
    records = [*train, *eval_records]
    report.check()
    turns = Counter(_user_turns(r) for r in records)
    prompt_counts = Counter(prompt_key(record_prompt(r)) for r in records)
    repeated = {k: c for k, c in prompt_counts.items() if c > 1}
    max_drop = settings.get("max_drop_fraction")
    share = report.n_dropped / report.total if report.total else 0.0
    flipped = sum(bool(r.meta.get("flipped")) for r in records)
    facts: dict[str, Any] = {
        "card_schema": CARD_SCHEMA,
        "name": name,
        "source": source_ref,
        "kind": kind,
        "rows": {
            "in": report.total,
            "kept": report.kept,
            "dropped": dict(sorted(report.dropped.items())),
            "dropped_total": report.n_dropped,
            "drop_fraction": _round(share),
            "max_drop_fraction": max_drop,
            "within_limit": None if max_drop is None else share <= max_drop,
            "examples": {k: list(v) for k, v in sorted(report.examples.items())},
        },
        "sources": [_source_facts(s) for s in sources],
        "turns": {str(k): turns[k] for k in sorted(turns)},
        "tokens": token_facts(records, tokenizer, tokenizer_name),
        "duplicates": {
            "dropped_exact": report.dropped.get(DUPLICATE, 0),
            "prompts_repeated": len(repeated),
            "records_sharing_a_prompt": sum(repeated.values()),
        },
        "split": {
            "train": len(train),
            "eval": len(eval_records),
            "leakage": int(leakage.get("count", 0)),
            "leakage_examples": list(leakage.get("examples", [])),
        },
        "preprocessing": dict(sorted({**settings, "flipped_by_agreement": flipped}.items())),
        "agreement": None if agreement is None else dict(agreement),
        "content_sha256": content_hash(records),
    }
    if any(isinstance(r, UnpairedRecord) for r in records):
        facts["labels"] = {
            "all": label_balance(records),
            "train": label_balance(train),
            "eval": label_balance(eval_records),
            "relabelled_by_agreement": sum(bool(r.meta.get("relabelled")) for r in records),
        }
    json.dumps(facts, allow_nan=False)  # fail here, not half-way through writing, if anything is not JSON-safe
    return facts


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def facts_hash(facts: Mapping[str, Any]) -> str:
    """sha256 of the facts' canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def card_hash_for(path: str | Path) -> str | None:
    """The ``card_hash`` of a card (its ``.json``, or the ``.md`` beside it), or None when there is no card.

    The hash is recomputed from the facts in the file; if someone edited them by hand so the stored hash no longer
    matches, a warning is logged and the hash of what is actually there is returned.
    """
    path = Path(path)
    json_path = path.with_suffix(".json") if path.suffix == ".md" else path
    if not json_path.is_file():
        return None
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        logger.warning("data card %s is unreadable (%s); no card hash recorded", json_path, exc)
        return None
    if not isinstance(data, dict):
        logger.warning("data card %s is not a JSON object; no card hash recorded", json_path)
        return None
    stored = data.pop("card_hash", None)
    actual = facts_hash(data)
    if stored != actual:
        logger.warning(
            "data card %s: stored card_hash %s does not match its facts (%s); regenerate it with `align data card`",
            json_path, stored, actual,
        )  # fmt: skip
    return actual
