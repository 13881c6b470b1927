"""Data cards: computed facts about a dataset plus datasheet sections written by people, as Markdown and JSON.

A card is two files in one directory (``data_cards/`` by default):

- ``<name>.json``: the computed facts (rows in / kept / dropped by reason, turns, token lengths, duplicates,
  split and leakage, annotator agreement, source files with sha256, a content hash of the kept records) and
  ``card_hash``, the sha256 of those facts. Stages record the hash in their manifests (:func:`card_hash_for`),
  so a run says which data it saw.
- ``<name>.md``: a Hugging Face dataset card: YAML front matter, the datasheet sections (Motivation,
  Composition, ...) whose bodies people write between ``<!-- human:KEY -->`` and ``<!-- /human:KEY -->``, and
  the generated "Computed facts".

Regenerating reads the existing ``.md`` first and keeps the human sections and the person-edited front-matter
keys; everything else is rewritten. Facts carry no timestamps and JSON keys are sorted, so regenerating from the
same data gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.agreement import landis_koch_band
from align.data.records import Message, PreferenceRecord, SFTRecord
from align.data.spec import DataError
from align.data.split import prompt_key, record_prompt
from align.data.validate import DUPLICATE, DropReport
from align.models import tiny_tokenizer

logger = logging.getLogger(__name__)

Record = PreferenceRecord | SFTRecord

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
    messages = record.prompt if isinstance(record, PreferenceRecord) else record.messages
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
    """Token-length distributions of prompt / chosen / rejected (or prompt / response / conversation for SFT)."""
    prompt_texts, rendering = _render(tokenizer, [record_prompt(r) for r in records], add_generation_prompt=True)
    out: dict[str, Any] = {
        "tokenizer": tokenizer_name,
        "prompt_rendering": rendering,
        "response_rendering": "reply text alone, no special tokens",
        "prompt": length_stats(_token_lengths(tokenizer, prompt_texts)),
    }
    prefs = [r for r in records if isinstance(r, PreferenceRecord)]
    sfts = [r for r in records if isinstance(r, SFTRecord)]
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
    if sfts:
        out["response"] = length_stats(_token_lengths(tokenizer, [r.messages[-1]["content"] for r in sfts]))
        texts, out["conversation_rendering"] = _render(tokenizer, [r.messages for r in sfts], False)
        out["conversation"] = length_stats(_token_lengths(tokenizer, texts))
    return out


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
        "krippendorff_alpha": figure("krippendorff_alpha"),
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


@dataclass
class CardText:
    """What a person owns in an existing ``.md``: front matter and human section bodies (key -> text)."""

    front_matter: dict[str, Any] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)


def parse_card(text: str, where: str = "data card") -> CardText:
    """Read the front matter and the human sections of a card's Markdown.

    Raises DataError when a human section has no closing marker (regenerating would lose its text) or appears
    twice, or when the front matter is not a YAML mapping.
    """
    import yaml

    text = text.replace("\r\n", "\n")
    front: dict[str, Any] = {}
    match = _FRONT.match(text)
    if match:
        try:
            loaded = yaml.safe_load(match.group(1) or "") or {}
        except yaml.YAMLError as exc:
            raise DataError(f"{where}: the YAML front matter does not parse ({exc}); fix it or delete it") from None
        if not isinstance(loaded, dict):
            raise DataError(f"{where}: the YAML front matter must be a mapping, found {type(loaded).__name__}")
        front = loaded
    opened = _OPEN.findall(text)
    closed = _CLOSE.findall(text)
    for key in dict.fromkeys(opened):
        if opened.count(key) > 1:
            raise DataError(f"{where}: human section '{key}' appears {opened.count(key)} times; keep one")
        if key not in closed:
            raise DataError(
                f"{where}: human section '{key}' has no closing marker '<!-- /human:{key} -->'; add it after the "
                "section's text so regenerating keeps that text"
            )
    for key in closed:
        if key not in opened:
            raise DataError(f"{where}: closing marker '<!-- /human:{key} -->' has no opening '<!-- human:{key} -->'")
    sections = {}
    for m in _SECTION.finditer(text):
        body = m.group(2)
        sections[m.group(1)] = body[:-1] if body.endswith("\n") else body
    missing = [k for k in opened if k not in sections]
    if missing:
        raise DataError(
            f"{where}: human section '{missing[0]}' is malformed; the opening marker must be on a line of its own"
        )
    return CardText(front, sections)


def _front_matter(facts: Mapping[str, Any], existing: Mapping[str, Any]) -> dict[str, Any]:
    preference = facts["kind"] == "preference"
    defaults: dict[str, Any] = {
        "license": "unknown",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "pretty_name": facts["name"],
        "tags": ["align", "preference", "human-feedback"] if preference else ["align", "sft"],
    }
    merged = {**defaults, **{k: v for k, v in existing.items() if k not in GENERATED_FRONT_MATTER}}
    merged["size_categories"] = [size_category(facts["rows"]["kept"])]
    ordered = {k: merged[k] for k in FRONT_MATTER_ORDER if k in merged}
    ordered.update({k: merged[k] for k in sorted(merged, key=str) if k not in ordered})
    return ordered


def _human_block(key: str, body: str) -> str:
    inner = f"{body}\n" if body else ""
    return f"<!-- human:{key} -->\n{inner}<!-- /human:{key} -->"


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _ci(pair: Sequence[Any] | None) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return "n/a"
    return f"[{pair[0]:.3f}, {pair[1]:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_facts(facts: Mapping[str, Any], card_hash: str) -> str:
    """The generated "Computed facts" section as Markdown."""
    rows = facts["rows"]
    lines = [
        "## Computed facts",
        "",
        "<!-- generated by `align data card`: this section is rewritten on every run -->",
        "",
        f"Card hash: `{card_hash}` (sha256 of the facts in the `.json` beside this file; stage manifests record it).",
        f"Content hash of the kept records: `{facts['content_sha256']}` (sha256 of their canonical JSON, by id).",
        "",
        "### Rows",
        "",
    ]
    table = [["in", rows["in"]], ["kept", rows["kept"]]]
    table += [[f"dropped: {reason}", count] for reason, count in rows["dropped"].items()]
    lines += _table(["rows", "count"], table)
    limit = rows["max_drop_fraction"]
    verdict = "" if limit is None else f" (limit {limit:.1%}: {'within' if rows['within_limit'] else 'OVER'})"
    lines += ["", f"Dropped {rows['dropped_total']} of {rows['in']} rows ({rows['drop_fraction']:.1%}){verdict}."]
    if rows["examples"]:
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in rows["examples"].items())
        lines.append(f"Example ids: {shown}.")

    lines += ["", "### Sources", ""]
    src_rows = []
    for s in facts["sources"]:
        files = "<br>".join(f"`{f['path']}` sha256 `{f['sha256']}`" for f in s["files"]) or "-"
        src_rows.append(
            [s["name"], s["role"], s["kind"], s["format"], s["rows_read"], s["rows_taken"], s["kept"], files]
        )
    lines += _table(["source", "role", "kind", "format", "read", "taken", "kept", "files"], src_rows)

    lines += ["", "### Conversation turns", ""]
    lines += _table(["user turns", "records"], [[k, v] for k, v in facts["turns"].items()])

    tokens = facts["tokens"]
    lines += [
        "",
        "### Token lengths",
        "",
        f"Tokenizer: {tokens['tokenizer']}. Prompt: {tokens['prompt_rendering']}; responses: "
        f"{tokens['response_rendering']}"
        + (f"; conversation: {tokens['conversation_rendering']}." if "conversation_rendering" in tokens else "."),
        "",
    ]
    fields = [k for k in ("prompt", "chosen", "rejected", "response", "conversation") if k in tokens]
    lines += _table(
        ["text", "min", "median", "p90", "max", "mean"],
        [[k, *("n/a" if tokens[k][s] is None else f"{tokens[k][s]:g}" for s in STAT_KEYS)] for k in fields],
    )
    ratio = tokens.get("chosen_vs_rejected")
    if ratio:
        lines += [
            "",
            f"Chosen vs rejected: mean length ratio {_fmt(ratio['mean_ratio'])} (chosen / rejected); chosen longer "
            f"in {ratio['chosen_longer']} pairs, rejected longer in {ratio['rejected_longer']}, equal in "
            f"{ratio['equal']}.",
        ]

    dup = facts["duplicates"]
    split = facts["split"]
    pre = facts["preprocessing"]
    lines += [
        "",
        "### Duplicates",
        "",
        f"Exact duplicates dropped: {dup['dropped_exact']}. Prompts shared by more than one kept record: "
        f"{dup['prompts_repeated']} ({dup['records_sharing_a_prompt']} records).",
        "",
        "### Split",
        "",
        f"Train {split['train']}, eval {split['eval']} ({pre.get('split_method', 'split')}; eval_fraction "
        f"{pre.get('eval_fraction')}, seed {pre.get('split_seed')}). Prompts in both splits (leakage): "
        f"{split['leakage']}.",
        "",
        "### Preprocessing settings",
        "",
    ]
    lines += [f"- {k}: `{json.dumps(v, sort_keys=True)}`" for k, v in pre.items()]

    lines += ["", "### Annotator agreement", ""]
    agreement = facts["agreement"]
    if agreement is None:
        lines.append("The records carry no annotator labels.")
    else:
        head = agreement["headline"]
        lines += [
            f"{agreement['n_items']} labelled items, {agreement['n_annotators']} annotators, labels "
            f"{', '.join(str(x) for x in agreement['labels'])}. Headline: {head['metric']} = {_fmt(head['value'])} "
            f"({head['band'] or 'not chance-corrected'}). Intervals: 95% percentile bootstrap, "
            f"{agreement['bootstrap']} resamples of items, seed {agreement['seed']}.",
            "",
        ]
        figures = []
        for label, key in (
            ("percent agreement", "percent_agreement"),
            ("Fleiss kappa", "fleiss_kappa"),
            ("Krippendorff alpha (nominal)", "krippendorff_alpha"),
        ):
            figure = agreement[key]
            figures.append([label, _fmt(figure["value"]), _ci(figure["ci95"]), figure.get("band", "-")])
        lines += _table(["statistic", "value", "95% CI", "Landis-Koch band"], figures)
        lines += [
            "",
            f"Fleiss' kappa uses the {agreement['fleiss_kappa']['items']} items with the most common number of "
            "labels.",
            "",
        ]
        per = [
            [name, a["labelled"], _fmt(a["labelled_share"]), _fmt(a["leave_one_out_kappa"]), a["band"],
             "unreliable" if name in agreement["unreliable"] else ""]
            for name, a in agreement["per_annotator"].items()
        ]  # fmt: skip
        lines += _table(["annotator", "labelled", "share", "leave-one-out kappa", "band", "flag"], per)
        flagged = ", ".join(agreement["unreliable"]) or "none"
        lines += [
            "",
            f"Leave-one-out kappa compares an annotator with the majority of the others. Unreliable (below "
            f"{agreement['unreliable_below']}): {flagged}.",
        ]
    return "\n".join(lines) + "\n"


def render_card(facts: Mapping[str, Any], card_hash: str, existing: CardText | None = None) -> str:
    """The whole ``.md``: front matter, human sections (kept from ``existing``), computed facts."""
    import yaml

    existing = existing or CardText()
    front = _front_matter(facts, existing.front_matter)
    front_text = yaml.safe_dump(front, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    rows = facts["rows"]
    what = "preference pairs" if facts["kind"] == "preference" else "SFT conversations"
    regenerate = f"align data card {facts['source']} --name {facts['name']}" if facts["source"] else "align data card"
    parts = [
        f"---\n{front_text}---",
        f"# {front.get('pretty_name') or facts['name']}",
        "<!-- This card is generated by `align data card`. Write only between the `human:` markers (and in the "
        "front matter, except size_categories): everything else is rewritten on every run. -->",
        f"{rows['kept']} {what} kept of {rows['in']} rows from {len(facts['sources'])} source(s). Regenerate with "
        f"`{regenerate}`.",
    ]
    known = {key for key, _, _ in HUMAN_SECTIONS}
    for key, heading, placeholder in HUMAN_SECTIONS:
        body = existing.sections.get(key, placeholder)
        parts.append(f"## {heading}\n\n{_human_block(key, body)}")
    for key, body in existing.sections.items():  # sections a person added, or from an older card: kept as they are
        if key not in known:
            parts.append(f"## {key.replace('_', ' ').capitalize()}\n\n{_human_block(key, body)}")
    parts.append(render_facts(facts, card_hash).rstrip("\n"))
    return "\n\n".join(parts) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def card_paths(out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """``(<out_dir>/<name>.md, <out_dir>/<name>.json)``."""
    out_dir = Path(out_dir)
    return out_dir / f"{name}.md", out_dir / f"{name}.json"


def todo_sections(md_path: str | Path) -> list[str]:
    """Keys of the human sections that still hold the placeholder text (start with "TODO")."""
    card = parse_card(Path(md_path).read_text(encoding="utf-8"), str(md_path))
    return [k for k, body in card.sections.items() if body.lstrip().startswith("TODO")]


def write_card(facts: Mapping[str, Any], out_dir: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.json`` under ``out_dir``, keeping the human parts of an existing ``.md``.

    Returns ``(md_path, json_path)``. The ``.json`` is the facts plus ``card_hash``; both files are written
    atomically, and the same facts give byte-identical files.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise DataError(f"card name {name!r} must be a plain file name: letters, digits, '.', '_' and '-'")
    if "card_hash" in facts:
        raise ValueError("facts must not contain 'card_hash'; write_card adds it")
    md_path, json_path = card_paths(out_dir, name)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    existing = parse_card(md_path.read_text(encoding="utf-8"), str(md_path)) if md_path.is_file() else None
    digest = facts_hash(facts)
    body = json.dumps({**facts, "card_hash": digest}, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    _write_atomic(json_path, body + "\n")
    _write_atomic(md_path, render_card(facts, digest, existing))
    return md_path, json_path
