"""Checking preference, SFT or unpaired data as a stage would load it: what SOURCE names, loading it with every row kept or
counted, the drop limit, annotator agreement and the data card's facts.

Library code: no argument parsing and no printing. ``align data`` (``align.commands.data``) prints these results,
and the pipeline's data stage calls ``check_data``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.agreement import METRICS, AgreementConfig, agreement_report, annotations_by_annotator
from align.config import build_dataclass, read_yaml
from align.data.card import (
    DEFAULT_UNRELIABLE_BELOW,
    TINY_TOKENIZER_NAME,
    build_card_facts,
    card_hash_for,
    summarise_agreement,
    write_card,
)
from align.data.formats import PREFERENCE, SFT, UNPAIRED
from align.data.load import load_preferences, load_sft, load_unpaired
from align.data.prepare import apply_agreement_to_splits, apply_agreement_to_unpaired
from align.data.records import PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.sources import read_source, source_name
from align.data.spec import PREFERENCE_FORMATS, SFT_FORMATS, UNPAIRED_FORMATS, DataConfig, DataError, SourceSpec
from align.data.split import count_leakage, split_by_prompt
from align.data.validate import DropReport
from align.models import load_tokenizer, resolve_model_path, tiny_tokenizer

Record = PreferenceRecord | SFTRecord | UnpairedRecord
RECIPE_SUFFIXES = (".yaml", ".yml")
DEFAULT_CARD_DIR = "data_cards"
DEFAULT_BOOTSTRAP = 1000


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


# ---------------------------------------------------------------------------------------------------------------
# Resolving SOURCE and loading it
# ---------------------------------------------------------------------------------------------------------------


def _agreement_config(section: Any, where: str) -> Any:
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
    if spec.format in UNPAIRED_FORMATS:
        return UNPAIRED
    rows = read_source(spec).rows
    first = rows[0] if rows else None
    if isinstance(first, SFTRecord):
        return SFT
    if isinstance(first, UnpairedRecord):
        return UNPAIRED
    if not isinstance(first, dict):
        return PREFERENCE  # records, or nothing the loader will accept: it explains the problem
    fields = ("prompt", "chosen", "rejected", "messages", "completion", "label")
    has = {f for f in fields if spec.columns.get(f, f) in first}
    if {"chosen", "rejected"} <= has:
        return PREFERENCE
    if "label" in has and ("messages" in has or {"prompt", "completion"} <= has):
        return UNPAIRED  # one response with a thumbs up or down (the kto stage's data)
    if "messages" in has or {"prompt", "completion"} <= has:
        return SFT
    return PREFERENCE


def resolve_target(
    source: str,
    *,
    format: str = "auto",
    eval_fraction: float | None = None,
    seed: int | None = None,
    max_drop_fraction: float | None = None,
    sft: bool = False,
    name: str | None = None,
) -> Target:
    """SOURCE plus options -> what to load. A ``.yaml`` is a recipe (its ``data:`` and ``agreement:`` sections)."""
    ref = str(source)
    fmt = format or "auto"
    if ref.endswith(RECIPE_SUFFIXES):
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
        default_name = f"{path.parent.name}-{path.stem}" if path.parent.name else path.stem
    else:
        spec = SourceSpec(path=ref, format=fmt)
        data = DataConfig(sources=[spec])
        agreement = None
        default_name = source_name(spec)
    changes: dict[str, Any] = {}
    if eval_fraction is not None:
        changes["eval_fraction"] = eval_fraction
    if seed is not None:
        changes["split_seed"] = seed
    if max_drop_fraction is not None:
        changes["max_drop_fraction"] = max_drop_fraction
    if changes:
        try:
            data = dataclasses.replace(data, **changes)
        except DataError as exc:  # name the option, not the recipe key
            raise DataError(f"{exc} (from the command-line options)") from None
    if not data.sources:
        raise DataError(f"{ref}: data.sources is empty; add at least one source")
    kind = SFT if sft else UNPAIRED if data.unpair else infer_kind(data.sources[0])
    return Target(ref, data, agreement, kind, name or default_name)


def load_target(target: Target, *, apply_agreement: bool = True, strict_gate: bool = False) -> Loaded:
    """Load as a stage does, but without stopping on the drop limit (callers check it and report).

    The split is taken after loading everything, so ``records`` keeps the input order. When the target has an
    agreement section and ``apply_agreement``, one gate over both splits orients pairs and drops ties etc., as
    ``align.data.prepare`` does; ``strict_gate=False`` turns a failing agreement gate into a warning.
    """
    cfg = target.data
    loader = {SFT: load_sft, UNPAIRED: load_unpaired}.get(target.kind, load_preferences)
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
        agreement_cfg = dataclasses.replace(target.agreement, bootstrap=0)  # votes do not need intervals
        if not strict_gate:
            agreement_cfg = dataclasses.replace(agreement_cfg, on_fail="warn")
        train, held_out, summary = apply_agreement_to_splits(train, held_out, agreement_cfg, report)
        report.check()
    elif apply_agreement and target.kind == UNPAIRED:
        # Unpaired rows rated by annotators get their label from the gate; without an agreement section they keep
        # the label they give (and rated rows without one are an error naming the fix).
        agreement_cfg = target.agreement
        if agreement_cfg is not None:
            agreement_cfg = dataclasses.replace(agreement_cfg, bootstrap=0)
            if not strict_gate:
                agreement_cfg = dataclasses.replace(agreement_cfg, on_fail="warn")
        train, summary = apply_agreement_to_unpaired(train, agreement_cfg, report)
        held_out, _ = apply_agreement_to_unpaired(held_out, agreement_cfg, report)
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


def split_facts(target: Target, loaded: Loaded) -> dict[str, Any]:
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


def agreement_settings(
    target: Target,
    *,
    metric: str | None = None,
    bootstrap: int | None = None,
    seed: int | None = None,
    unreliable_below: float | None = None,
) -> AgreementSettings:
    """Explicit options (the command line's) over the recipe's agreement section over the defaults."""
    cfg = target.agreement
    metric = metric if metric is not None else (cfg.metric if cfg else "fleiss_kappa")
    if metric not in METRICS:
        raise DataError(f"--agreement-metric must be one of {', '.join(METRICS)}, found {metric!r}")
    n_boot = bootstrap if bootstrap is not None else (cfg.bootstrap if cfg else DEFAULT_BOOTSTRAP)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise DataError(f"--agreement-bootstrap is a number of resamples >= 0 (0: no intervals), found {n_boot!r}")
    seed = seed if seed is not None else (cfg.seed if cfg else 0)
    recipe_below = cfg.drop_annotators_below if cfg and cfg.drop_annotators_below is not None else None
    below = unreliable_below if unreliable_below is not None else recipe_below
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
# The data card
# ---------------------------------------------------------------------------------------------------------------


def tokenizer_for(ref: str | None, log: Callable[[str], None] = print) -> tuple[Any, str]:
    """``(tokenizer, description)`` that measures lengths for a card: the model ``ref``'s, or the tiny one."""
    if not ref:
        return tiny_tokenizer(), TINY_TOKENIZER_NAME
    return load_tokenizer(resolve_model_path(ref, log=log)), ref


def card_facts(target: Target, settings: AgreementSettings | None, tokenizer: tuple[Any, str]) -> dict[str, Any]:
    """Load the target and compute its card facts (what ``align data card`` writes).

    ``settings``: how to measure agreement when the data has annotator labels (None: the recipe's or defaults).
    ``tokenizer``: ``(tokenizer, description)`` to measure lengths with.
    """
    loaded = load_target(target)
    agreement = None
    if target.kind == PREFERENCE and any(isinstance(r, PreferenceRecord) and r.annotations for r in loaded.records):
        settings = settings or agreement_settings(target)
        report, per_item = measure_agreement(loaded.records, target.ref, settings)
        agreement = summarise_agreement(
            report,
            per_item,
            unreliable_below=settings.unreliable_below,
            bootstrap=settings.bootstrap,
            seed=settings.seed,
        )
    if target.kind == UNPAIRED and loaded.agreement_summary is not None:
        # The gate's own figures (pairs voted as pairs, or each response's ratings), on the training split.
        settings = settings or agreement_settings(target)
        agreement = summarise_agreement(
            loaded.agreement_summary,
            loaded.agreement_summary["item_annotations"],
            unreliable_below=settings.unreliable_below,
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
            "splits": loaded.agreement_summary.get("splits"),
        }
    tok, tokenizer_name = tokenizer
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


def check_data(recipe_path: str | Path, out_dir: str | Path, name: str = "data") -> dict[str, Any]:
    """Validate a recipe's data as a stage loads it (the drop limit and the agreement gate enforced) and write its
    card into ``out_dir``: what the pipeline's data stage does. Returns the card's facts plus ``card_hash``;
    raises ``DataError`` when the data fails the drop limit."""
    target = resolve_target(str(recipe_path), name=name)
    loaded = load_target(target, strict_gate=True)
    problems = drop_limit_problems(loaded, target.data.max_drop_fraction)
    if problems:
        raise DataError(
            "; ".join(problems) + ". Fix: clean the data, fix the column mapping (`columns:` in the recipe), or "
            "allow more drops with data.max_drop_fraction."
        )
    facts = card_facts(target, None, tokenizer_for(None))
    _, json_path = write_card(facts, Path(out_dir), target.name)
    return {**facts, "card_hash": card_hash_for(json_path), "report": loaded.report.to_dict()}
