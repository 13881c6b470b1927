"""``align data`` actions: inspect, validate, convert, split, agreement and card.

``main(args)`` takes the CLI's parsed namespace (no argument parsing here), loads SOURCE through
``align.data.load`` exactly as a stage would, and prints results with ``align.cli.emit`` so ``--json`` output is
clean JSON on stdout (notes and warnings go to stderr). Mistakes a user can fix raise ``DataError``, which the CLI
turns into exit code 2; ``validate`` returns 1 when rows were dropped beyond the limit.

SOURCE is one source (a file, folder, ``builtin:<name>`` or hub id, read with ``--format``) or a recipe ``.yaml``,
whose ``data:`` section is used as a stage would use it, and whose ``agreement:`` section is applied by
``validate``, ``inspect``, ``convert``, ``split`` and ``card`` (votes may flip pairs and drop ties, counted).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from align.agreement import format_report, model_vs_humans
from align.commands.console import emit as _out
from align.commands.console import emit_json as _emit
from align.data import check
from align.data.card import card_hash_for, todo_sections, unreliable_annotators, write_card
from align.data.check import (
    DEFAULT_CARD_DIR,
    Loaded,
    Record,
    Target,
    drop_limit_problems,
    load_target,
    measure_agreement,
    split_facts,
)
from align.data.check import agreement_settings as _settings
from align.data.formats import SFT, UNPAIRED
from align.data.load import write_records_jsonl
from align.data.records import PreferenceRecord, UnpairedRecord
from align.data.spec import DataError
from align.data.split import split_by_prompt
from align.data.validate import DropReport, drop_table
from align.templates import Encoder, Skip

SHOWN_RECORDS = 3
SHOWN_CHARS = 100


def _arg(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------------------------


def _short(text: str, n: int = SHOWN_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def _truncated(record: Record, n: int = SHOWN_CHARS) -> dict[str, Any]:
    d = record.to_dict()
    for key in ("prompt", "chosen", "rejected", "messages", "completion"):
        if key in d:
            d[key] = [{"role": m["role"], "content": _short(m["content"], n)} for m in d[key]]
    return d


def _record_lines(record: Record) -> list[str]:
    lines = [f"  {record.id} (source {record.source})"]
    messages = record.prompt if isinstance(record, (PreferenceRecord, UnpairedRecord)) else record.messages
    lines += [f"    {m['role']:>9}: {_short(m['content'])}" for m in messages]
    if isinstance(record, UnpairedRecord):
        label = {True: "up", False: "down", None: "rated"}[record.label]  # where a role stands for the other turns
        lines.append(f"    {label:>9}: {_short(record.completion[0]['content'])}")
    if isinstance(record, PreferenceRecord):
        lines.append(f"    {'chosen':>9}: {_short(record.chosen[0]['content'])}")
        lines.append(f"    {'rejected':>9}: {_short(record.rejected[0]['content'])}")
        if record.annotations:
            labels = ", ".join(f"{k}={'-' if v is None else f'{v:g}'}" for k, v in record.annotations.items())
            lines.append(f"    {'labels':>9}: {labels}")
    return lines


def _counts_line(report: DropReport) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(report.dropped.items())) or "none"
    return f"{report.total} rows: {report.kept} kept, {report.n_dropped} dropped ({dropped})"


def _source_line(source: dict[str, Any]) -> str:
    rep = source["report"]
    where = source.get("path") or source.get("plugin")
    return (
        f"source '{source['name']}' ({where}, {source['role']}): {source['kind']}, format {source['format']}, "
        f"{source['rows_read']} rows read, {source['rows_taken']} taken, {rep['kept']} kept"
    )


# ---------------------------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------------------------


def cmd_inspect(args: Any, target: Target) -> int:
    loaded = load_target(target)
    records = loaded.kept
    report = loaded.report
    annotators = sorted({a for r in loaded.records if isinstance(r, PreferenceRecord) for a in r.annotations or {}})
    if _arg(args, "json", False):
        _emit(
            {
                "source": target.ref,
                "kind": target.kind,
                "sources": [
                    {k: s[k] for k in ("name", "path", "plugin", "kind", "format", "role", "rows_read", "rows_taken")}
                    | {"kept": s["report"]["kept"], "dropped": s["report"]["dropped"], "files": s["files"]}
                    for s in loaded.sources
                ],
                **report.to_dict(),
                "split": split_facts(target, loaded),
                "annotators": annotators,
                "records": [_truncated(r) for r in records[:SHOWN_RECORDS]],
            }
        )
        return 0
    lines = [f"{target.ref}: {target.kind} data"]
    lines += [_source_line(s) for s in loaded.sources]
    lines.append(_counts_line(report))
    if report.dropped:
        lines.append(drop_table(report))
    split = split_facts(target, loaded)
    lines.append(
        f"split: {split['train']} train / {split['eval']} eval (by {split['method']}, eval_fraction "
        f"{split['eval_fraction']}, seed {split['seed']}); prompts in both: {split['leakage']}"
    )
    if annotators:
        lines.append(f"annotators: {', '.join(annotators)} (`align data agreement {target.ref}` measures them)")
    if loaded.agreement_summary is not None:
        flipped = sum(bool(r.meta.get("flipped")) for r in records)
        lines.append(f"agreement section applied: {flipped} pairs flipped by the humans' vote")
    lines.append(f"first {min(SHOWN_RECORDS, len(records))} records:")
    for record in records[:SHOWN_RECORDS]:
        lines += _record_lines(record)
    _out("\n".join(lines))
    return 0


def cmd_validate(args: Any, target: Target) -> int:
    loaded = load_target(target, strict_gate=True)
    report = loaded.report
    problems = drop_limit_problems(loaded, target.data.max_drop_fraction)
    if _arg(args, "json", False):
        _emit(report.to_dict())
    else:
        lines = [_counts_line(report)]
        if len(loaded.sources) > 1:
            lines += [f"  {_source_line(s)}" for s in loaded.sources]
        if report.dropped:
            lines.append(drop_table(report))
        if not problems:
            lines.append(f"OK: within max_drop_fraction = {target.data.max_drop_fraction:.1%}")
        _out("\n".join(lines))
    for problem in problems:
        _note(f"align data validate: {problem}")
    if problems:
        _note(
            "Fix: clean the data, fix the column mapping (`columns:` in the recipe), or allow more drops with "
            "--max-drop-fraction (data.max_drop_fraction in a recipe)."
        )
        return 1
    return 0


def _limit_check_for_writers(args: Any, target: Target, loaded: Loaded, action: str) -> bool:
    """convert/split: refuse (False) over an explicit --max-drop-fraction; otherwise only warn."""
    problems = drop_limit_problems(loaded, target.data.max_drop_fraction)
    for problem in problems:
        _note(
            f"align data {action}: {'error' if _arg(args, 'max_drop_fraction') is not None else 'warning'}: {problem}"
        )
    return not (problems and _arg(args, "max_drop_fraction") is not None)


def _require_output(args: Any, action: str, example: str) -> Path:
    out = _arg(args, "output")
    if not out:
        raise DataError(f"align data {action} needs -o/--output, e.g. {example}")
    return Path(out)


def cmd_convert(args: Any, target: Target) -> int:

    out = _require_output(args, "convert", f"align data convert {target.ref} -o canonical.jsonl")
    if out.is_dir():
        raise DataError(f"-o {out} is a directory; convert writes one JSONL file, e.g. -o {out / 'canonical.jsonl'}")
    loaded = load_target(target)
    if not _limit_check_for_writers(args, target, loaded, "convert"):
        return 1
    n = write_records_jsonl(loaded.kept, out)
    report = loaded.report
    if _arg(args, "json", False):
        _emit({"output": str(out), "written": n, **report.to_dict()})
    else:
        _out(f"wrote {n} canonical {target.kind} records to {out}\n{_counts_line(report)}")
    return 0


def cmd_split(args: Any, target: Target) -> int:

    out = _require_output(args, "split", f"align data split {target.ref} -o data/split")
    if out.exists() and not out.is_dir():
        raise DataError(f"-o {out} is a file; split writes train.jsonl and eval.jsonl into a directory")
    loaded = load_target(target)
    if not _limit_check_for_writers(args, target, loaded, "split"):
        return 1
    train_path, eval_path = out / "train.jsonl", out / "eval.jsonl"
    n_train = write_records_jsonl(loaded.train, train_path)
    n_eval = write_records_jsonl(loaded.eval, eval_path)
    split = split_facts(target, loaded)
    if _arg(args, "json", False):
        _emit(
            {
                "train": {"path": str(train_path), "count": n_train},
                "eval": {"path": str(eval_path), "count": n_eval},
                **{k: split[k] for k in ("method", "eval_fraction", "seed", "leakage")},
                **loaded.report.to_dict(),
            }
        )
    else:
        _out(
            f"wrote {n_train} records to {train_path} and {n_eval} to {eval_path} (by {split['method']}, "
            f"eval_fraction {split['eval_fraction']}, seed {split['seed']}); prompts in both: {split['leakage']}\n"
            f"{_counts_line(loaded.report)}"
        )
    return 0


def cmd_agreement(args: Any, target: Target) -> int:

    if target.kind == SFT:
        raise DataError(f"{target.ref} is SFT data; annotator agreement needs preference rows with annotator labels")
    if target.kind == UNPAIRED:
        raise DataError(
            f"{target.ref} is unpaired feedback; its raters' agreement is measured by the gate: give a recipe with an "
            "agreement section (e.g. agreement: {rating_threshold: 3, level: interval}) to `align data card`, or "
            "run the kto stage, whose data card and manifest report it"
        )
    settings = agreement_settings(args, target)
    loaded = load_target(target, apply_agreement=False)
    report, _ = measure_agreement(loaded.records, target.ref, settings)
    unreliable = unreliable_annotators(report, settings.unreliable_below)
    if _arg(args, "model", None):
        return _model_vs_humans(args, loaded.records, target)
    if _arg(args, "json", False):
        _emit({**report, "unreliable_below": settings.unreliable_below, "unreliable": unreliable})
        return 0
    named = ", ".join(f"{n} ({report['per_annotator'][n]:.3f})" for n in unreliable)
    verdict = (
        f"unreliable (leave-one-out kappa below {settings.unreliable_below}): {named}"
        if unreliable
        else f"no annotator is unreliable (every leave-one-out kappa is at least {settings.unreliable_below})"
    )
    boot = f"{settings.bootstrap} bootstrap resamples, seed {settings.seed}" if settings.bootstrap else "no intervals"
    _out(f"{format_report(report)}\n\n{verdict}\n(95% intervals: {boot})")
    return 0


def _model_vs_humans(args: Any, records: list[Any], target: Target) -> int:
    """`align data agreement SRC --model RM`: the reward model's preferences against the human majority and each
    annotator (accuracy and kappa), beside the humans' own agreement ceiling. Uses the eval split unless --all."""

    # torch (via the reward-model loader) only for --model: the other data actions stay light
    from align.reward_models import score_sequences
    from align.runs import load_reward_model

    labelled = [r for r in records if isinstance(r, PreferenceRecord) and r.annotations]
    if not labelled:
        raise DataError(f"{target.ref} has no annotator labels to compare the model with")
    if not _arg(args, "all", False):
        fraction = target.data.eval_fraction if target.data.eval_fraction > 0 else 0.1
        _, labelled = split_by_prompt(labelled, fraction, target.data.split_seed)
    model, tok, _ = load_reward_model(args.model)  # rebuilt as trained: its weights.merged chain included
    enc = Encoder(tok)
    chosen, rejected, kept = [], [], []
    for r in labelled:
        try:
            row = enc.reward_pair(r.prompt, r.chosen, r.rejected)
        except Skip:
            continue
        chosen.append(row["chosen_ids"])
        rejected.append(row["rejected_ids"])
        kept.append(r)
    margins = [
        c - j
        for c, j in zip(
            score_sequences(model, chosen, tok.pad_token_id), score_sequences(model, rejected, tok.pad_token_id)
        )
    ]
    names = sorted({a for r in kept for a in r.annotations})
    result = model_vs_humans(margins, {a: [r.annotations.get(a) for r in kept] for a in names})
    result["model"] = str(args.model)
    result["split"] = "all" if _arg(args, "all", False) else "eval"
    if _arg(args, "json", False):
        _emit(result)
    else:
        maj = result["vs_majority"]
        _out(
            f"reward model {args.model} on {len(kept)} {result['split']} pairs: accuracy {maj['accuracy']:.3f}, "
            f"kappa {maj['kappa']:.3f} against the human majority\n{result['verdict']}"
        )
    return 0


def agreement_settings(args: Any, target: Target) -> check.AgreementSettings:
    """Command-line options over the recipe's agreement section over the defaults."""
    return _settings(
        target,
        metric=_arg(args, "agreement_metric"),
        bootstrap=_arg(args, "agreement_bootstrap"),
        seed=_arg(args, "seed"),
        unreliable_below=_arg(args, "agreement_unreliable_below"),
    )


def resolve_target(args: Any) -> Target:
    """SOURCE plus the command-line options -> what to load (``align.data.check.resolve_target``)."""
    return check.resolve_target(
        str(args.source),
        format=_arg(args, "format", "auto"),
        eval_fraction=_arg(args, "eval_fraction"),
        seed=_arg(args, "seed"),
        max_drop_fraction=_arg(args, "max_drop_fraction"),
        sft=_arg(args, "sft", False),
        name=_arg(args, "name"),
    )


def card_facts(args: Any, target: Target, tokenizer: tuple[Any, str] | None = None) -> dict[str, Any]:
    """Load the target and compute its card facts (what ``align data card`` writes).

    ``tokenizer``: ``(tokenizer, description)`` to measure lengths with; default ``--tokenizer`` or the tiny one.
    """
    settings = None
    if target.agreement is not None or any(
        _arg(args, k) is not None
        for k in ("agreement_metric", "agreement_bootstrap", "seed", "agreement_unreliable_below")
    ):
        settings = agreement_settings(args, target)
    tok = tokenizer if tokenizer is not None else check.tokenizer_for(_arg(args, "tokenizer"), log=_note)
    return check.card_facts(target, settings, tok)


def cmd_card(args: Any, target: Target) -> int:

    facts = card_facts(args, target)
    out_dir = Path(_arg(args, "output", DEFAULT_CARD_DIR))
    md_path, json_path = write_card(facts, out_dir, target.name)
    card_hash = card_hash_for(json_path)
    if facts["rows"]["within_limit"] is False:
        _note(
            f"align data card: warning: {facts['rows']['dropped_total']} of {facts['rows']['in']} rows dropped, "
            f"more than max_drop_fraction = {target.data.max_drop_fraction:.1%} (a stage would stop)"
        )
    todo = todo_sections(md_path)
    if todo:
        _note(f"align data card: fill in the human sections of {md_path}: {', '.join(todo)}")
    if _arg(args, "json", False):
        _emit({"md": str(md_path), "json": str(json_path), "card_hash": card_hash})
    else:
        _out(f"wrote {md_path} and {json_path} (card_hash {card_hash})")
    return 0


ACTIONS = {
    "inspect": cmd_inspect,
    "validate": cmd_validate,
    "convert": cmd_convert,
    "split": cmd_split,
    "agreement": cmd_agreement,
    "card": cmd_card,
}


def main(args: Any) -> int:
    """Run one ``align data`` action from parsed arguments; returns the exit code."""
    action = _arg(args, "data_command")
    if action not in ACTIONS:
        _note(f"usage: align data {{{','.join(ACTIONS)}}} SOURCE [options]  (align data ACTION --help)")
        return 2
    return ACTIONS[action](args, resolve_target(args))
