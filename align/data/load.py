"""Top level of the data layer: sources -> checked records -> train/eval split, with every row accounted for.

Each input row taken from a source is either kept or counted by reason in the ``DropReport``; rows a mixture
weight or ``max_rows`` leaves out are visible as ``rows_read`` vs ``rows_taken`` in ``sources``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.formats import (
    PREFERENCE,
    SFT,
    UNPAIRED,
    annotations_from_table,
    attach_annotations,
    convert_rows,
    row_id,
)
from align.data.records import PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.sources import read_source, read_table_file, source_name, subsample_indices
from align.data.spec import PREFERENCE_FORMATS, DataConfig, DataError, SourceSpec
from align.data.split import count_leakage, split_by_prompt
from align.data.validate import (
    DropReport,
    SkippedRow,
    check_drop_fraction,
    check_preference_record,
    check_sft_record,
    filter_records,
)

logger = logging.getLogger(__name__)


@dataclass
class PreferenceData:
    """Preference records split into train and eval, with the drop report and per-source provenance."""

    train: list[PreferenceRecord]
    eval: list[PreferenceRecord]
    report: DropReport
    leakage: dict[str, Any]
    sources: list[dict[str, Any]]


@dataclass
class SFTData:
    """SFT records split into train and eval, with the drop report and per-source provenance."""

    train: list[SFTRecord]
    eval: list[SFTRecord]
    report: DropReport
    leakage: dict[str, Any]
    sources: list[dict[str, Any]]


@dataclass
class UnpairedData:
    """Unpaired feedback records split into train and eval (a pair's two rows always on one side), with the drop
    report (a pair read with ``data.unpair`` counts as two rows) and per-source provenance."""

    train: list[UnpairedRecord]
    eval: list[UnpairedRecord]
    report: DropReport
    leakage: dict[str, Any]
    sources: list[dict[str, Any]]


def load_preferences(cfg: DataConfig) -> PreferenceData:
    """Read, convert, check, dedupe and split preference data as ``cfg`` says."""
    return PreferenceData(*_load(cfg, PREFERENCE))


def load_sft(cfg: DataConfig) -> SFTData:
    """Read, convert, check, dedupe and split SFT data (preference sources give prompt + chosen)."""
    return SFTData(*_load(cfg, SFT))


def load_unpaired(cfg: DataConfig) -> UnpairedData:
    """Read, convert, check, dedupe and split unpaired feedback; with ``cfg.unpair``, preference pairs too, each as
    two rows (chosen -> label true, rejected -> label false) split as one prompt."""
    return UnpairedData(*_load(cfg, UNPAIRED))


def unpair_record(pair: PreferenceRecord) -> tuple[UnpairedRecord, UnpairedRecord]:
    """A preference pair as two unpaired rows: its chosen response desirable, its rejected one undesirable.

    Both rows keep the pair's annotations (positive = the chosen side preferred) and name the pair in ``meta``, so
    the agreement gate can vote on the pair once and relabel (or drop) both rows together."""
    rows = []
    for side, completion, label in (("chosen", pair.chosen, True), ("rejected", pair.rejected, False)):
        rows.append(
            UnpairedRecord(
                id=f"{pair.id}:{side}",
                prompt=list(pair.prompt),
                completion=list(completion),
                label=label,
                source=pair.source,
                annotations=None if pair.annotations is None else dict(pair.annotations),
                meta={**pair.meta, "pair_id": pair.id, "pair_side": side},
            )
        )
    return rows[0], rows[1]


def _per_response(pairs: DropReport) -> DropReport:
    """A pair-level drop report counted in unpaired rows: every pair read, kept or dropped is two rows."""
    return DropReport(
        total=2 * pairs.total,
        kept=2 * pairs.kept,
        dropped={reason: 2 * n for reason, n in pairs.dropped.items()},
        examples={reason: list(ids) for reason, ids in pairs.examples.items()},
    )


def unique_source_names(specs: Iterable[SourceSpec]) -> list[str]:
    """Source names, with ``-2``, ``-3`` ... appended where two sources would share one (ids must not clash)."""
    names: list[str] = []
    counts: Counter[str] = Counter()
    for spec in specs:
        base = source_name(spec)
        counts[base] += 1
        names.append(base if counts[base] == 1 else f"{base}-{counts[base]}")
    return names


def _with_system(record: PreferenceRecord | SFTRecord | UnpairedRecord, system_prompt: str) -> None:
    messages = record.prompt if isinstance(record, (PreferenceRecord, UnpairedRecord)) else record.messages
    if not messages or messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})


def load_source(
    spec: SourceSpec, name: str, kind: str, cfg: DataConfig, seen: set[str]
) -> tuple[list[PreferenceRecord | SFTRecord], dict[str, Any], DropReport]:
    """One source -> (kept records, provenance summary, its drop report)."""
    raw = read_source(spec, name)
    if not raw.rows:
        raise DataError(f"source '{name}' ({spec.path or spec.plugin}) has no rows")
    indices = subsample_indices(len(raw.rows), spec.weight, cfg.split_seed, name)
    items, ids, fmt = convert_rows(raw.rows, raw.locations, indices, spec, name, kind, unpair=cfg.unpair)
    if spec.annotations is not None and kind in (PREFERENCE, UNPAIRED):
        table_path = Path(spec.annotations["path"]).expanduser()
        where = f"annotation table {table_path}"
        rows, locations = read_table_file(table_path, (spec.annotations["item"], spec.annotations["annotator"]))
        labels = annotations_from_table(rows, locations, spec.annotations, spec.label_map, where)
        id_column = spec.columns.get("id", "id")
        known = {
            r.id if isinstance(r, (PreferenceRecord, SFTRecord, UnpairedRecord)) else row_id(r, i, name, id_column)
            for i, r in enumerate(raw.rows)
        }
        attach_annotations(items, labels, known, where)
    if cfg.system_prompt:
        for item in items:
            if not isinstance(item, SkippedRow):
                _with_system(item, cfg.system_prompt)
    report = DropReport()
    kept = filter_records(items, ids, report, dedupe=cfg.dedupe, seen=seen)
    assert report.total == len(indices), (report.total, len(indices))
    from_pairs = kind == UNPAIRED and (
        fmt in PREFERENCE_FORMATS or any(isinstance(r, PreferenceRecord) for r in items)
    )
    if from_pairs:
        if any(isinstance(r, UnpairedRecord) for r in items):
            raise DataError(
                f"source '{name}' returned both PreferenceRecord and UnpairedRecord instances; return one kind per "
                "source (give the pairs and the unpaired rows as two sources)"
            )
        # data.unpair: pairs were checked (and dropped) as pairs; each kept pair becomes two rows, and the report is
        # counted in rows from here on, so later drops (agreement, tokenization) subtract single rows.
        kept = [row for pair in kept for row in unpair_record(pair)]
        report = _per_response(report)
    summary: dict[str, Any] = {
        "name": name,
        "path": spec.path,
        "plugin": spec.plugin,
        "kind": raw.kind,
        "format": fmt,
        "split": spec.split,
        "revision": spec.revision,
        "weight": spec.weight,
        "rows_read": len(raw.rows),
        "rows_taken": len(indices),
        "sha256": raw.files[0]["sha256"] if len(raw.files) == 1 else None,
        "files": raw.files,
        "report": report.to_dict(),
    }
    if kind == UNPAIRED:
        summary["unpaired_from_pairs"] = from_pairs  # then every row read is counted as two
    logger.info(
        "source '%s': format %s, %d rows read, %d taken, %d kept, dropped %s",
        name, fmt, len(raw.rows), len(indices), report.kept, report.dropped or "none",
    )  # fmt: skip
    check_drop_fraction(report, cfg.max_drop_fraction, what=f"source '{name}'")
    return kept, summary, report


def _check_unique_ids(records: Iterable[PreferenceRecord | SFTRecord | UnpairedRecord]) -> None:
    where: dict[str, str] = {}
    for record in records:
        if record.id in where:
            raise DataError(
                f"record id {record.id!r} appears twice (sources '{where[record.id]}' and '{record.source}'); ids "
                "must be unique. Fix the id column, map another one (columns: {id: <column>}), or set "
                "columns: {id: null} to generate ids as <source>-<row index>"
            )
        where[record.id] = record.source


def _load(cfg: DataConfig, kind: str) -> tuple[list, list, DropReport, dict[str, Any], list[dict[str, Any]]]:
    if not cfg.sources:
        raise DataError("data.sources is empty: add at least one source, e.g. sources: [{path: builtin:bundled}]")
    if cfg.unpair and kind != UNPAIRED:
        raise DataError(
            f"data.unpair reads preference pairs as unpaired rows for the kto stage, but this stage reads {kind} data; "
            "remove it (in a pipeline recipe, set it in the kto section: kto: {data: {unpair: true}})"
        )
    names = unique_source_names([*cfg.sources, *cfg.eval_sources])
    report = DropReport()
    summaries: list[dict[str, Any]] = []

    def read_all(specs: list[SourceSpec], specs_names: list[str], role: str) -> list:
        seen: set[str] = set()
        records: list = []
        for spec, name in zip(specs, specs_names):
            kept, summary, source_report = load_source(spec, name, kind, cfg, seen)
            summaries.append({**summary, "role": role})
            report.merge(source_report)
            records += kept
        return records

    train = read_all(cfg.sources, names[: len(cfg.sources)], "train")
    if cfg.eval_sources:
        held_out = read_all(cfg.eval_sources, names[len(cfg.sources) :], "eval")
        leakage = count_leakage(train, held_out)
        if leakage["count"]:
            shown = "; ".join(
                f"eval {e['eval_id']!r} = train {e['train_id']!r}: {e['prompt']!r}" for e in leakage["examples"]
            )
            message = f"{leakage['count']} eval prompt(s) also appear in the training sources, e.g. {shown}"
            if cfg.leakage == "error":
                raise DataError(
                    f"{message}. Remove them from one side, or set data.leakage: warn to train anyway "
                    "(eval scores will then overstate generalisation)"
                )
            logger.warning("%s; eval scores will overstate generalisation", message)
    else:
        train, held_out = split_by_prompt(train, cfg.eval_fraction, cfg.split_seed)
        leakage = count_leakage(train, held_out)
        assert leakage["count"] == 0, leakage  # the prompt-hash split cannot leak
        if cfg.eval_fraction > 0 and not held_out:
            logger.warning(
                "the eval split is empty (%d records, eval_fraction %.2f); raise eval_fraction or give eval_sources",
                len(train), cfg.eval_fraction,
            )  # fmt: skip
    _check_unique_ids([*train, *held_out])
    report.check()
    return train, held_out, report, leakage, summaries


def read_records_jsonl(path: str | Path) -> list[PreferenceRecord | SFTRecord]:
    """Canonical records from JSONL (one ``to_dict()`` per line; ``messages`` marks an SFT record)."""
    path = Path(path)
    records: list[PreferenceRecord | SFTRecord] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                d = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(d, dict):
                raise DataError(f"{where}: expected a JSON object, found {type(d).__name__}")
            try:
                record = SFTRecord.from_dict(d) if "messages" in d else PreferenceRecord.from_dict(d)
            except (KeyError, TypeError) as exc:
                raise DataError(
                    f"{where}: not a canonical record (missing or mistyped {exc}); expected keys id, prompt, "
                    f"chosen, rejected (or id, messages); found {', '.join(d) or '(none)'}"
                ) from exc
            if isinstance(record, SFTRecord):
                records.append(check_sft_record(record, where))
            else:
                records.append(check_preference_record(record, where))
    return records


def write_records_jsonl(records: Iterable[PreferenceRecord | SFTRecord], path: str | Path) -> int:
    """Write records as canonical JSONL, atomically (a reader never sees half a file); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
