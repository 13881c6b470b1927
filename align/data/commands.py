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

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.formats import PREFERENCE, SFT
from align.data.records import PreferenceRecord, SFTRecord
from align.data.spec import PREFERENCE_FORMATS, SFT_FORMATS, DataConfig, DataError, SourceSpec
from align.data.split import count_leakage, split_by_prompt
from align.data.validate import DropReport, drop_table

Record = PreferenceRecord | SFTRecord
RECIPE_SUFFIXES = (".yaml", ".yml")
DEFAULT_CARD_DIR = "data_cards"
DEFAULT_BOOTSTRAP = 1000
SHOWN_RECORDS = 3
SHOWN_CHARS = 100


@dataclass
class Target:
    """What SOURCE names: the data config to load, the recipe's agreement section (if any), and a default name."""

    ref: str
    data: DataConfig
    agreement: Any  # AgreementConfig | None
    kind: str
    name: str


@dataclass
class Loaded:
    """A target loaded as a stage loads it; every input row is kept or counted in ``report``."""

    records: list[Record]  # every record the loader kept, before agreement aggregation, in input order
    train: list[Record]  # the splits after agreement aggregation (what a stage trains and evaluates on)
    eval: list[Record]
    report: DropReport
    leakage: dict[str, Any]
    sources: list[dict[str, Any]]
    agreement_summary: dict[str, Any] | None  # what the recipe's agreement section did (None: not applied)

    @property
    def kept(self) -> list[Record]:
        """The records left after agreement aggregation, in input order."""
        order = {r.id: i for i, r in enumerate(self.records)}
        return sorted([*self.train, *self.eval], key=lambda r: order.get(r.id, len(order)))


def _arg(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, default)
    return default if value is None else value


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _emit(obj: Any) -> None:
    from align.cli import emit

    emit(json.dumps(obj, indent=2, ensure_ascii=False))


def _out(text: str) -> None:
    from align.cli import emit

    emit(text)


# ---------------------------------------------------------------------------------------------------------------
# Resolving SOURCE and loading it
# ---------------------------------------------------------------------------------------------------------------


def _agreement_config(section: Any, where: str) -> Any:
    from align.agreement import AgreementConfig
    from align.config import build_dataclass

    if section is None:
        return None
    if not isinstance(section, dict):
        raise DataError(f"{where}: the agreement section must be a mapping of options, found {section!r}")
    return build_dataclass(AgreementConfig, section, "agreement")


def infer_kind(spec: SourceSpec) -> str:
    """``"sft"`` or ``"preference"`` for a source, from its format or, with ``auto``, its first row's columns.

    With ``auto`` the source is read once more than the load itself reads it (cheap for local files; a hub dataset
    comes from the datasets cache the second time). ``--sft`` skips this, and is needed to train SFT on preference
    rows (prompt + chosen), which look like preference data.
    """
    if spec.format in SFT_FORMATS:
        return SFT
    if spec.format in PREFERENCE_FORMATS:
        return PREFERENCE
    from align.data.sources import read_source

    rows = read_source(spec).rows
    first = rows[0] if rows else None
    if isinstance(first, SFTRecord):
        return SFT
    if not isinstance(first, dict):
        return PREFERENCE  # records, or nothing the loader will accept: it explains the problem
    has = {f for f in ("prompt", "chosen", "rejected", "messages", "completion") if spec.columns.get(f, f) in first}
    if {"chosen", "rejected"} <= has:
        return PREFERENCE
    if "messages" in has or {"prompt", "completion"} <= has:
        return SFT
    return PREFERENCE


def resolve_target(args: Any) -> Target:
    """SOURCE plus options -> what to load. A ``.yaml`` is a recipe (its ``data:`` and ``agreement:`` sections)."""
    from align.data.sources import source_name

    ref = str(args.source)
    fmt = _arg(args, "format", "auto")
    if ref.endswith(RECIPE_SUFFIXES):
        from align.config import read_yaml

        recipe = read_yaml(ref)
        if fmt != "auto":
            raise DataError(
                f"--format applies to a single source; for the recipe {ref} set `format:` on its data sources"
            )
        section = recipe.get("data")
        if not isinstance(section, dict):
            raise DataError(
                f"recipe {ref} has no data section to read; add e.g. data: {{sources: [{{path: builtin:bundled}}]}}"
            )
        data = DataConfig.from_dict(section)
        agreement = _agreement_config(recipe.get("agreement"), ref)
        path = Path(ref)
        name = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    else:
        spec = SourceSpec(path=ref, format=fmt)
        data = DataConfig(sources=[spec])
        agreement = None
        name = source_name(spec)
    changes: dict[str, Any] = {}
    if _arg(args, "eval_fraction") is not None:
        changes["eval_fraction"] = args.eval_fraction
    if _arg(args, "seed") is not None:
        changes["split_seed"] = args.seed
    if _arg(args, "max_drop_fraction") is not None:
        changes["max_drop_fraction"] = args.max_drop_fraction
    if changes:
        try:
            data = dataclasses.replace(data, **changes)
        except DataError as exc:  # name the option, not the recipe key
            raise DataError(f"{exc} (from the command-line options)") from None
    if not data.sources:
        raise DataError(f"{ref}: data.sources is empty; add at least one source")
    kind = SFT if _arg(args, "sft", False) else infer_kind(data.sources[0])
    return Target(ref, data, agreement, kind, _arg(args, "name", name))


def load_target(target: Target, *, apply_agreement: bool = True, strict_gate: bool = False) -> Loaded:
    """Load as a stage does, but without stopping on the drop limit (callers check it and report).

    The split is taken after loading everything, so ``records`` keeps the input order. When the target has an
    agreement section and ``apply_agreement``, votes orient pairs and drop ties etc. in each split, as
    ``align.data.prepare`` does; ``strict_gate=False`` turns a failing agreement gate into a warning.
    """
    from align.data.load import load_preferences, load_sft

    cfg = target.data
    loader = load_sft if target.kind == SFT else load_preferences
    if cfg.eval_sources:
        loaded = loader(dataclasses.replace(cfg, max_drop_fraction=1.0))
        records = [*loaded.train, *loaded.eval]
        train, held_out, leakage = list(loaded.train), list(loaded.eval), loaded.leakage
    else:
        loaded = loader(dataclasses.replace(cfg, max_drop_fraction=1.0, eval_fraction=0.0))
        records = list(loaded.train)
        train, held_out = split_by_prompt(records, cfg.eval_fraction, cfg.split_seed)
        leakage = count_leakage(train, held_out)
    report = loaded.report
    summary = None
    if apply_agreement and target.agreement is not None and target.kind == PREFERENCE:
        from align.data.prepare import apply_agreement_to_records

        agreement_cfg = dataclasses.replace(target.agreement, bootstrap=0)  # votes do not need intervals
        if not strict_gate:
            agreement_cfg = dataclasses.replace(agreement_cfg, on_fail="warn")
        train, summary = apply_agreement_to_records(train, agreement_cfg, report)
        held_out, _ = apply_agreement_to_records(held_out, agreement_cfg, report)
        report.check()
    return Loaded(records, list(train), list(held_out), report, leakage, list(loaded.sources), summary)


def drop_limit_problems(loaded: Loaded, limit: float) -> list[str]:
    """Why the data fails the drop limit (per source, as the loader checks, and overall): empty when it passes."""
    problems = []
    for source in loaded.sources:
        rep = source["report"]
        share = (rep["total"] - rep["kept"]) / rep["total"] if rep["total"] else 0.0
        if rep["kept"] == 0 or share > limit:
            problems.append(
                f"source '{source['name']}': {rep['total'] - rep['kept']} of {rep['total']} rows dropped "
                f"({share:.1%}), more than max_drop_fraction = {limit:.1%}"
            )
    report = loaded.report
    share = report.n_dropped / report.total if report.total else 0.0
    same_as_source = len(loaded.sources) == 1 and loaded.sources[0]["report"]["kept"] == report.kept
    if (report.kept == 0 or share > limit) and not (same_as_source and problems):
        problems.append(
            f"overall (agreement drops included): {report.n_dropped} of {report.total} rows dropped ({share:.1%}), "
            f"more than max_drop_fraction = {limit:.1%}"
        )
    return problems


# ---------------------------------------------------------------------------------------------------------------
# Text helpers
# ---------------------------------------------------------------------------------------------------------------


def _short(text: str, n: int = SHOWN_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 3] + "..."


def _truncated(record: Record, n: int = SHOWN_CHARS) -> dict[str, Any]:
    d = record.to_dict()
    for key in ("prompt", "chosen", "rejected", "messages"):
        if key in d:
            d[key] = [{"role": m["role"], "content": _short(m["content"], n)} for m in d[key]]
    return d


def _record_lines(record: Record) -> list[str]:
    lines = [f"  {record.id} (source {record.source})"]
    messages = record.prompt if isinstance(record, PreferenceRecord) else record.messages
    lines += [f"    {m['role']:>9}: {_short(m['content'])}" for m in messages]
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


def _split_facts(target: Target, loaded: Loaded) -> dict[str, Any]:
    return {
        "train": len(loaded.train),
        "eval": len(loaded.eval),
        "method": "eval_sources" if target.data.eval_sources else "prompt hash",
        "eval_fraction": target.data.eval_fraction,
        "seed": target.data.split_seed,
        "leakage": loaded.leakage["count"],
    }


# ---------------------------------------------------------------------------------------------------------------
# Agreement
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AgreementSettings:
    """How to measure agreement: headline metric, bootstrap resamples and seed, the 'unreliable' threshold."""

    metric: str
    bootstrap: int
    seed: int
    unreliable_below: float


def agreement_settings(args: Any, target: Target) -> AgreementSettings:
    """Command-line options over the recipe's agreement section over the defaults."""
    from align.agreement import METRICS
    from align.data.card import DEFAULT_UNRELIABLE_BELOW

    cfg = target.agreement
    metric = _arg(args, "agreement_metric", cfg.metric if cfg else "fleiss_kappa")
    if metric not in METRICS:
        raise DataError(f"--agreement-metric must be one of {', '.join(METRICS)}, found {metric!r}")
    n_boot = _arg(args, "agreement_bootstrap", cfg.bootstrap if cfg else DEFAULT_BOOTSTRAP)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise DataError(f"--agreement-bootstrap is a number of resamples >= 0 (0: no intervals), found {n_boot!r}")
    seed = _arg(args, "seed", cfg.seed if cfg else 0)
    recipe_below = cfg.drop_annotators_below if cfg and cfg.drop_annotators_below is not None else None
    below = _arg(args, "agreement_unreliable_below", recipe_below)
    below = DEFAULT_UNRELIABLE_BELOW if below is None else below
    if not -1.0 <= below <= 1.0:
        raise DataError(f"--agreement-unreliable-below is a kappa in [-1, 1], found {below!r}")
    return AgreementSettings(metric, n_boot, seed, below)


def labelled_records(records: Sequence[Record], ref: str) -> list[PreferenceRecord]:
    """The preference records that carry at least one annotator label; DataError when there are none."""
    labelled = [
        r
        for r in records
        if isinstance(r, PreferenceRecord) and r.annotations and any(v is not None for v in r.annotations.values())
    ]
    if not labelled:
        what = "SFT data" if records and isinstance(records[0], SFTRecord) else "its records"
        raise DataError(
            f"{ref}: no annotator labels found in {what}. Agreement needs preference rows with annotator columns "
            "(named rater_* or annotator_*, or listed with columns: {annotators: [...]}) or a long annotation "
            "table (annotations: {path: ..., item: ..., annotator: ..., label: ...})"
        )
    return labelled


def measure_agreement(records: Sequence[Record], ref: str, settings: AgreementSettings) -> tuple[dict, list]:
    """The agreement report over every labelled record, and those records' annotation dicts."""
    from align.agreement import agreement_report, annotations_by_annotator

    labelled = labelled_records(records, ref)
    per_item = [r.annotations for r in labelled]
    try:
        report = agreement_report(
            annotations_by_annotator(per_item), n_boot=settings.bootstrap, seed=settings.seed, metric=settings.metric
        )
    except ValueError as exc:  # e.g. an annotator name with '|': say which data it came from
        raise DataError(f"{ref}: cannot measure agreement: {exc}") from None
    return report, per_item


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
                "split": _split_facts(target, loaded),
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
    split = _split_facts(target, loaded)
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
    from align.data.load import write_records_jsonl

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
    from align.data.load import write_records_jsonl

    out = _require_output(args, "split", f"align data split {target.ref} -o data/split")
    if out.exists() and not out.is_dir():
        raise DataError(f"-o {out} is a file; split writes train.jsonl and eval.jsonl into a directory")
    loaded = load_target(target)
    if not _limit_check_for_writers(args, target, loaded, "split"):
        return 1
    train_path, eval_path = out / "train.jsonl", out / "eval.jsonl"
    n_train = write_records_jsonl(loaded.train, train_path)
    n_eval = write_records_jsonl(loaded.eval, eval_path)
    split = _split_facts(target, loaded)
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
    from align.agreement import format_report
    from align.data.card import unreliable_annotators

    if target.kind == SFT:
        raise DataError(f"{target.ref} is SFT data; annotator agreement needs preference rows with annotator labels")
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
    from align.agreement import model_vs_humans
    from align.data.split import split_by_prompt
    from align.models import load_reward_model
    from align.reward_models import score_sequences
    from align.templates import Encoder, Skip

    labelled = [r for r in records if isinstance(r, PreferenceRecord) and r.annotations]
    if not labelled:
        raise DataError(f"{target.ref} has no annotator labels to compare the model with")
    if not _arg(args, "all", False):
        fraction = target.data.eval_fraction if target.data.eval_fraction > 0 else 0.1
        _, labelled = split_by_prompt(labelled, fraction, target.data.split_seed)
    model, tok = load_reward_model(args.model)
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


def _tokenizer(ref: str | None) -> tuple[Any, str]:
    from align.data.card import TINY_TOKENIZER_NAME

    if not ref:
        from align.models import tiny_tokenizer

        return tiny_tokenizer(), TINY_TOKENIZER_NAME
    from align.models import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path(ref, log=_note)), ref


def card_facts(args: Any, target: Target, tokenizer: tuple[Any, str] | None = None) -> dict[str, Any]:
    """Load the target and compute its card facts (what ``align data card`` writes).

    ``tokenizer``: ``(tokenizer, description)`` to measure lengths with; default ``--tokenizer`` or the tiny one.
    """
    from align.data.card import build_card_facts, summarise_agreement

    loaded = load_target(target)
    agreement = None
    if target.kind == PREFERENCE and any(isinstance(r, PreferenceRecord) and r.annotations for r in loaded.records):
        settings = agreement_settings(args, target)
        report, per_item = measure_agreement(loaded.records, target.ref, settings)
        agreement = summarise_agreement(
            report,
            per_item,
            unreliable_below=settings.unreliable_below,
            bootstrap=settings.bootstrap,
            seed=settings.seed,
        )
    cfg = target.data
    settings_facts: dict[str, Any] = {
        "split_method": "eval_sources" if cfg.eval_sources else "prompt hash",
        "eval_fraction": cfg.eval_fraction,
        "split_seed": cfg.split_seed,
        "dedupe": cfg.dedupe,
        "max_drop_fraction": cfg.max_drop_fraction,
        "leakage_mode": cfg.leakage,
        "system_prompt": cfg.system_prompt,
        "agreement_applied": None,
    }
    if loaded.agreement_summary is not None:
        settings_facts["agreement_applied"] = {
            **dataclasses.asdict(target.agreement),
            "dropped_annotators": loaded.agreement_summary.get("dropped_annotators", []),
        }
    tok, tokenizer_name = tokenizer if tokenizer is not None else _tokenizer(_arg(args, "tokenizer"))
    return build_card_facts(
        target.name,
        kind=target.kind,
        train=loaded.train,
        eval_records=loaded.eval,
        report=loaded.report,
        sources=loaded.sources,
        leakage=loaded.leakage,
        settings=settings_facts,
        agreement=agreement,
        tokenizer=tok,
        tokenizer_name=tokenizer_name,
        source_ref=target.ref,
    )


def cmd_card(args: Any, target: Target) -> int:
    from align.data.card import card_hash_for, todo_sections, write_card

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
