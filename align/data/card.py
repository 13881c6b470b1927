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

import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.data.card_facts import (  # the facts half; re-exported: align.data.card.<name> as before
    _CLOSE,
    _FRONT,
    _OPEN,
    _SECTION,
    CARD_SCHEMA,
    DEFAULT_UNRELIABLE_BELOW,
    FRONT_MATTER_ORDER,
    GENERATED_FRONT_MATTER,
    HUMAN_SECTIONS,
    ROUND,
    SIZE_CATEGORIES,
    STAT_KEYS,
    TINY_TOKENIZER_NAME,
    Record,
    build_card_facts,
    card_hash_for,
    content_hash,
    facts_hash,
    length_stats,
    size_category,
    summarise_agreement,
    token_facts,
    unreliable_annotators,
)
from align.data.spec import DataError

logger = logging.getLogger(__name__)


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
    tags = {
        "preference": ["align", "preference", "human-feedback"],
        "unpaired": ["align", "unpaired-feedback", "kto", "human-feedback"],
    }.get(facts["kind"], ["align", "sft"])
    defaults: dict[str, Any] = {
        "license": "unknown",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "pretty_name": facts["name"],
        "tags": tags,
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
    """The generated "Computed facts" section as Markdown, its parts in the order a reader sees them."""
    lines = [
        "## Computed facts",
        "",
        "<!-- generated by `align data card`: this section is rewritten on every run -->",
        "",
        f"Card hash: `{card_hash}` (sha256 of the facts in the `.json` beside this file; stage manifests record it).",
        f"Content hash of the kept records: `{facts['content_sha256']}` (sha256 of their canonical JSON, by id).",
        "",
    ]
    lines += _rows_section(facts["rows"])
    lines += _sources_section(facts["sources"])
    lines += ["", "### Conversation turns", ""]
    lines += _table(["user turns", "records"], [[k, v] for k, v in facts["turns"].items()])
    lines += _tokens_section(facts["tokens"])
    if "labels" in facts:
        lines += _label_balance_section(facts["labels"])
    lines += _duplicates_split_section(facts["duplicates"], facts["split"], facts["preprocessing"])
    lines += ["", "### Annotator agreement", ""]
    lines += _agreement_section(facts["agreement"])
    return "\n".join(lines) + "\n"


def _rows_section(rows: Mapping[str, Any]) -> list[str]:
    lines = ["### Rows", ""]
    table = [["in", rows["in"]], ["kept", rows["kept"]]]
    table += [[f"dropped: {reason}", count] for reason, count in rows["dropped"].items()]
    lines += _table(["rows", "count"], table)
    limit = rows["max_drop_fraction"]
    verdict = "" if limit is None else f" (limit {limit:.1%}: {'within' if rows['within_limit'] else 'OVER'})"
    lines += ["", f"Dropped {rows['dropped_total']} of {rows['in']} rows ({rows['drop_fraction']:.1%}){verdict}."]
    if rows["examples"]:
        shown = "; ".join(f"{k}: {', '.join(v)}" for k, v in rows["examples"].items())
        lines.append(f"Example ids: {shown}.")
    return lines


def _sources_section(sources: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = ["", "### Sources", ""]
    src_rows = []
    for s in sources:
        files = "<br>".join(f"`{f['path']}` sha256 `{f['sha256']}`" for f in s["files"]) or "-"
        src_rows.append(
            [s["name"], s["role"], s["kind"], s["format"], s["rows_read"], s["rows_taken"], s["kept"], files]
        )
    return lines + _table(["source", "role", "kind", "format", "read", "taken", "kept", "files"], src_rows)


def _tokens_section(tokens: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "### Token lengths",
        "",
        f"Tokenizer: {tokens['tokenizer']}. Prompt: {tokens['prompt_rendering']}; responses: "
        f"{tokens['response_rendering']}"
        + (f"; conversation: {tokens['conversation_rendering']}." if "conversation_rendering" in tokens else "."),
        "",
    ]
    fields = [
        k
        for k in ("prompt", "chosen", "rejected", "desirable", "undesirable", "response", "conversation")
        if k in tokens
    ]
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
    return lines


def _label_balance_section(labels: Mapping[str, Any]) -> list[str]:
    """Unpaired feedback: desirable and undesirable rows per split."""
    lines = ["", "### Label balance", ""]
    lines += _table(
        ["split", "desirable", "undesirable", "desirable share"],
        [
            [k, labels[k]["desirable"], labels[k]["undesirable"], _fmt(labels[k]["desirable_share"])]
            for k in ("all", "train", "eval")
        ],
    )
    return lines + [
        "",
        f"Labels the annotators' aggregate changed from the row's own: {labels['relabelled_by_agreement']}. KTO "
        "weighs desirable and undesirable losses (training.desirable_weight / undesirable_weight); its paper "
        "suggests weighted counts within a factor 1 to 4/3 of each other.",
    ]


def _duplicates_split_section(dup: Mapping[str, Any], split: Mapping[str, Any], pre: Mapping[str, Any]) -> list[str]:
    lines = [
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
    return lines + [f"- {k}: `{json.dumps(v, sort_keys=True)}`" for k, v in pre.items()]


def _agreement_section(agreement: Mapping[str, Any] | None) -> list[str]:
    if agreement is None:
        return ["The records carry no annotator labels."]
    head = agreement["headline"]
    lines = [
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
        (f"Krippendorff alpha ({agreement['krippendorff_alpha'].get('level', 'nominal')})", "krippendorff_alpha"),
    ):
        figure = agreement[key]
        figures.append([label, _fmt(figure["value"]), _ci(figure["ci95"]), figure.get("band", "-")])
    lines += _table(["statistic", "value", "95% CI", "Landis-Koch band"], figures)
    lines += [
        "",
        f"Fleiss' kappa uses the {agreement['fleiss_kappa']['items']} items with the most common number of labels.",
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
    return lines


def render_card(facts: Mapping[str, Any], card_hash: str, existing: CardText | None = None) -> str:
    """The whole ``.md``: front matter, human sections (kept from ``existing``), computed facts."""
    import yaml

    existing = existing or CardText()
    front = _front_matter(facts, existing.front_matter)
    front_text = yaml.safe_dump(front, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)
    rows = facts["rows"]
    what = {"preference": "preference pairs", "unpaired": "rated responses (unpaired feedback)"}.get(
        facts["kind"], "SFT conversations"
    )
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


__all__ = [
    "CARD_SCHEMA",
    "CardText",
    "DEFAULT_UNRELIABLE_BELOW",
    "FRONT_MATTER_ORDER",
    "GENERATED_FRONT_MATTER",
    "HUMAN_SECTIONS",
    "ROUND",
    "Record",
    "SIZE_CATEGORIES",
    "STAT_KEYS",
    "TINY_TOKENIZER_NAME",
    "build_card_facts",
    "card_hash_for",
    "card_paths",
    "content_hash",
    "facts_hash",
    "length_stats",
    "parse_card",
    "render_card",
    "render_facts",
    "size_category",
    "summarise_agreement",
    "todo_sections",
    "token_facts",
    "unreliable_annotators",
    "write_card",
]
