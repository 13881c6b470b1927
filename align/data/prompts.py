"""Prompts for on-policy stages (PPO rollouts, comparisons): prompt-only rows, or the prompt part of any source.

A source may hold:

- prompt-only rows ``{"id", "prompt"}`` where ``prompt`` is a string (one user turn) or a message list ending with
  a user turn (``builtin:bundled-eval-prompts`` has this shape), with an optional ``checks`` mapping (the objective
  checks of :mod:`align.eval.checks`, carried on :attr:`PromptRecord.checks`); a plugin may also yield
  :class:`PromptRecord`;
- preference or SFT rows in any format the data layer reads: they go through :func:`align.data.load.load_source`
  (format detection, schema checks, counted drops) and give their prompt (the preference prompt, or an SFT
  conversation before its last reply).

Prompts are deduplicated by :func:`align.data.split.prompt_key` (preference data repeats a prompt across pairs, so
these repeats are reported as ``duplicate_prompts`` and do not count toward ``max_drop_fraction``) and split into
train/eval by the same prompt hash as every other stage, so a prompt held out from SFT/RM/DPO stays held out here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from align.data.load import load_source, unique_source_names
from align.data.records import Message, PreferenceRecord, SFTRecord
from align.data.sources import read_source, subsample_indices
from align.data.spec import DataConfig, DataError, SourceSpec
from align.data.split import count_leakage, prompt_key, record_prompt, split_by_prompt
from align.data.validate import EMPTY_PROMPT, DropReport, check_drop_fraction, check_messages, check_prompt_roles

# Columns that make a row more than a prompt (it then goes through the preference/SFT converters).
RESPONSE_FIELDS = ("chosen", "rejected", "completion", "messages")


@dataclass
class PromptRecord:
    """One prompt: messages ending with a user turn (an optional system message first), and the prompt-only row's
    ``checks`` mapping when it has one (schema in :mod:`align.eval.checks`, validated where the checks run)."""

    id: str
    prompt: list[Message]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.checks is None:
            del out["checks"]  # rows without checks keep the shape they always had
        return out


@dataclass
class PromptReport:
    """What :func:`load_prompts` read: the held-out prompts, drops by reason, and per-source provenance."""

    eval: list[PromptRecord]
    drops: DropReport
    sources: list[dict[str, Any]]
    leakage: dict[str, Any]
    duplicate_prompts: int = 0
    n_train: int = 0

    def manifest_info(self, train: list[PromptRecord]) -> dict[str, Any]:
        """The manifest's ``data`` entry (same keys as the other stages' ``Prepared.manifest_info``)."""
        return {
            "fingerprint": prompts_fingerprint(train + self.eval),
            "train": len(train),
            "eval": len(self.eval),
            "drops": self.drops.to_dict(),
            "duplicate_prompts": self.duplicate_prompts,
            "sources": self.sources,
        }


def prompts_fingerprint(prompts: list[PromptRecord]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        # checks change what a comparison reports, so they count; prompts without them hash as they always did
        item = [p.id, p.prompt] if p.checks is None else [p.id, p.prompt, p.checks]
        h.update(json.dumps(item, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _column(spec: SourceSpec, name: str) -> str:
    col = spec.columns.get(name, name)
    return name if col is None else col


def is_prompt_only(row: Any, spec: SourceSpec) -> bool:
    """True for a row with a prompt column and none of the response columns (after ``columns:`` mapping)."""
    if isinstance(row, PromptRecord):
        return True
    if not isinstance(row, dict):
        return False
    return _column(spec, "prompt") in row and not any(_column(spec, f) in row for f in RESPONSE_FIELDS)


def _prompt_messages(value: Any, where: str) -> list[Message] | None:
    """A prompt cell -> messages (None for an empty prompt, which is a counted drop)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = check_messages(value, where, "prompt")
    check_prompt_roles(messages, where)
    if not messages[-1]["content"].strip():
        return None
    return messages


def _with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt and messages[0]["role"] != "system":
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _row_checks(value: Any, where: str) -> dict[str, Any] | None:
    """A prompt-only row's ``checks`` cell: absent/None, or a mapping (its keys are checked where the checks run)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DataError(
            f'{where}: \'checks\' must be a mapping such as {{"declines": false, "contains": ["Canberra"]}}, '
            f"found {type(value).__name__}"
        )
    return dict(value)


def _prompt_only_source(
    spec: SourceSpec, name: str, cfg: DataConfig, rows: list[Any], locations: list[str]
) -> tuple[list[PromptRecord], DropReport, str]:
    indices = subsample_indices(len(rows), spec.weight, cfg.split_seed, name)
    report = DropReport()
    out: list[PromptRecord] = []
    id_col = spec.columns.get("id", "id")
    for i in indices:
        row, where = rows[i], f"source '{name}' row {i} ({locations[i]})"
        report.add_rows(1)
        if isinstance(row, PromptRecord):
            rid, messages = row.id, _prompt_messages(row.prompt, where)
            checks = _row_checks(row.checks, where)
        elif isinstance(row, dict):
            value = row.get(id_col) if id_col else None
            rid = f"{name}-{i}" if value in (None, "") else str(value)
            messages = _prompt_messages(row.get(_column(spec, "prompt")), where)
            checks = _row_checks(row.get("checks"), where)
        else:
            raise DataError(
                f"{where}: a prompt row must be a mapping with a 'prompt' field, found {type(row).__name__}"
            )
        if messages is None:
            report.add_drop(EMPTY_PROMPT, rid)
            continue
        out.append(PromptRecord(rid, _with_system(messages, cfg.system_prompt), name, checks=checks))
    return out, report, "prompt-only"


def _records_source(
    spec: SourceSpec, name: str, cfg: DataConfig, seen: set[str]
) -> tuple[list[PromptRecord], DropReport, dict[str, Any]]:
    # SFT kind reads every format (preference rows give prompt + chosen); only the prompt is kept.
    kept, summary, report = load_source(spec, name, "sft", cfg, seen)
    return [PromptRecord(r.id, list(record_prompt(r)), r.source or name) for r in kept], report, summary


def _read(specs: list[SourceSpec], names: list[str], cfg: DataConfig, role: str):
    records: list[PromptRecord] = []
    report = DropReport()
    summaries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec, name in zip(specs, names):
        raw = read_source(spec, name)
        if not raw.rows:
            raise DataError(f"source '{name}' ({spec.path or spec.plugin}) has no rows")
        if is_prompt_only(raw.rows[0], spec):
            got, source_report, fmt = _prompt_only_source(spec, name, cfg, raw.rows, raw.locations)
            check_drop_fraction(source_report, cfg.max_drop_fraction, what=f"source '{name}'")
            summary = {"name": name, "path": spec.path, "plugin": spec.plugin, "kind": raw.kind, "format": fmt}
            summary.update(rows_read=len(raw.rows), rows_taken=source_report.total, files=raw.files)
        else:
            got, source_report, summary = _records_source(spec, name, cfg, seen)
        summaries.append({**summary, "role": role, "report": source_report.to_dict()})
        report.merge(source_report)
        records += got
    return records, report, summaries


def dedupe_prompts(prompts: list[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """The first record of each distinct prompt (by ``prompt_key``), and how many repeats were removed."""
    seen: set[str] = set()
    out: list[PromptRecord] = []
    for p in prompts:
        key = prompt_key(p.prompt)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out, len(prompts) - len(out)


def _as_split_record(p: PromptRecord) -> PreferenceRecord:
    # split_by_prompt / count_leakage read a record's prompt through record_prompt(); a preference record with no
    # responses carries exactly the prompt, so the split side is the one every other stage gives this prompt.
    return PreferenceRecord(id=p.id, prompt=p.prompt, chosen=[], rejected=[], source=p.source)


def split_prompts(
    prompts: list[PromptRecord], eval_fraction: float, seed: int
) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """(train, eval) by prompt hash, identical to ``align.data.split.split_by_prompt`` for the same prompts."""
    shims = [_as_split_record(p) for p in prompts]
    by_shim = {id(s): p for s, p in zip(shims, prompts)}
    train, held = split_by_prompt(shims, eval_fraction, seed)
    return [by_shim[id(s)] for s in train], [by_shim[id(s)] for s in held]


def load_prompts(cfg: DataConfig) -> tuple[list[PromptRecord], PromptReport]:
    """Train prompts (the data layer's train split) and a report holding the eval prompts, drops and sources."""
    if not cfg.sources:
        raise DataError(
            "data.sources is empty: add at least one prompt source, e.g. sources: [{path: builtin:bundled}]"
        )
    names = unique_source_names([*cfg.sources, *cfg.eval_sources])
    train, report, summaries = _read(cfg.sources, names[: len(cfg.sources)], cfg, "train")
    duplicates = 0
    if cfg.dedupe:
        train, duplicates = dedupe_prompts(train)
    if cfg.eval_sources:
        held, eval_report, eval_summaries = _read(cfg.eval_sources, names[len(cfg.sources) :], cfg, "eval")
        report.merge(eval_report)
        summaries += eval_summaries
        if cfg.dedupe:
            held, more = dedupe_prompts(held)
            duplicates += more
        leakage = count_leakage([_as_split_record(p) for p in train], [_as_split_record(p) for p in held])
        if leakage["count"] and cfg.leakage == "error":
            shown = "; ".join(f"eval {e['eval_id']!r} = train {e['train_id']!r}" for e in leakage["examples"])
            raise DataError(
                f"{leakage['count']} eval prompt(s) also appear in the training prompt sources ({shown}). Remove "
                "them from one side, or set data.leakage: warn"
            )
    else:
        train, held = split_prompts(train, cfg.eval_fraction, cfg.split_seed)
        leakage = {"count": 0, "examples": []}
    if not train:
        raise DataError("no training prompts are left after the split; add prompt sources or lower data.eval_fraction")
    report.check()
    out = PromptReport(held, report, summaries, leakage, duplicates, len(train))
    return train, out


def prompt_text(messages: list[Message]) -> str:
    """The last user message of a prompt: what programmatic reward functions receive as the prompt."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def records_to_prompts(records: list[PreferenceRecord | SFTRecord | PromptRecord]) -> list[PromptRecord]:
    """Prompts of already-loaded records (e.g. a comparison's eval split), in order, not deduplicated."""
    out = []
    for r in records:
        if isinstance(r, PromptRecord):
            out.append(r)
        else:
            out.append(PromptRecord(r.id, list(record_prompt(r)), r.source))
    return out
