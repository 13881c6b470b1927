"""Data configuration: where preference/SFT rows come from and how they are checked and split.

Plain dataclasses validated in ``__post_init__`` so a bad recipe fails before any file is read.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from align.errors import DataError  # noqa: F401  (re-exported: importable here as before)

FORMATS = (
    "auto",
    "hh-rlhf",
    "pcr",
    "conversational",
    "implicit-prompt",
    "sft-messages",
    "prompt-completion",
    "unpaired",
    "unpaired-messages",
)
PREFERENCE_FORMATS = ("hh-rlhf", "pcr", "conversational", "implicit-prompt")
SFT_FORMATS = ("sft-messages", "prompt-completion")
UNPAIRED_FORMATS = ("unpaired", "unpaired-messages")

# Canonical fields a ``columns:`` mapping may point at a user column.
COLUMN_FIELDS = (
    "id",
    "prompt",
    "chosen",
    "rejected",
    "messages",
    "completion",
    "margin",
    "system",
    "label",
    "annotators",
    "annotator_scores",
)

DEFAULT_LABELS: dict[str, float] = {
    "chosen": 1.0,
    "rejected": -1.0,
    "tie": 0.0,
    "A": 1.0,
    "B": -1.0,
    "a": 1.0,
    "b": -1.0,
    "1": 1.0,
    "2": -1.0,
    "0": 0.0,
}

# Annotator ratings of one response (unpaired feedback) when the source sets no `labels:`: thumbs as +1 / -1, so with
# the default agreement.rating_threshold of 0 a rating's sign says which side of the threshold it is on.
FEEDBACK_LABELS: dict[str, float] = {
    "up": 1.0,
    "down": -1.0,
    "thumbs_up": 1.0,
    "thumbs_down": -1.0,
    "good": 1.0,
    "bad": -1.0,
    "desirable": 1.0,
    "undesirable": -1.0,
    "yes": 1.0,
    "no": -1.0,
    "true": 1.0,
    "false": -1.0,
}

ANNOTATION_TABLE_KEYS = ("path", "item", "annotator", "label")
LEAKAGE_MODES = ("error", "warn")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _from_dict(cls: type, d: Any, where: str) -> dict[str, Any]:
    """Check ``d`` is a mapping whose keys are fields of ``cls``; return it as a plain dict."""
    if not isinstance(d, dict):
        raise DataError(f"{where} must be a mapping of options, found {type(d).__name__}: {d!r}")
    valid = [f.name for f in fields(cls)]
    for key in d:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DataError(f"unknown key '{key}' in {where}{hint}; valid keys: {', '.join(valid)}")
    return dict(d)


@dataclass
class SourceSpec:
    """One data source: a local file or folder, a builtin sample, a datasets hub id, or a plugin."""

    path: str = field(
        default="",
        metadata={
            "help": "A .jsonl/.json/.csv/.parquet file, a folder of them, 'builtin:<name>' "
            "(bundled, bundled-sft, bundled-eval-prompts), or a datasets hub id. May be empty with `plugin`."
        },
    )
    name: str | None = field(default=None, metadata={"help": "datasets config name (hub datasets only)."})
    split: str = field(default="train", metadata={"help": "datasets split to read (hub datasets only)."})
    revision: str | None = field(default=None, metadata={"help": "datasets revision: branch, tag or commit."})
    format: str = field(
        default="auto",
        metadata={"help": f"Row format: {' | '.join(FORMATS)}. 'auto' detects it from the first row's columns."},
    )
    columns: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Canonical field -> your column, e.g. {prompt: question, chosen: good, rejected: bad}. "
            f"Fields: {', '.join(COLUMN_FIELDS)} (annotators takes a list of columns; id: null generates ids)."
        },
    )
    labels: dict[str, float] | None = field(
        default=None,
        metadata={
            "help": "Annotator label -> number (positive = chosen preferred, negative = rejected, 0 = tie). "
            "Default: chosen/A/a/1 -> 1, rejected/B/b/2 -> -1, tie/0 -> 0; numbers pass through. Unpaired "
            "feedback: each annotator's rating of the one response (default: up/good/yes -> 1, down/bad/no -> -1)."
        },
    )
    annotations: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "Long annotation table joined by item id: {path: file, item: column, annotator: column, "
            "label: column} (item/annotator/label default to those names)."
        },
    )
    weight: float = field(
        default=1.0,
        metadata={"help": "Fraction (0, 1] of this source's rows to take in a mixture (seeded, deterministic)."},
    )
    plugin: str | None = field(
        default=None,
        metadata={
            "help": "'module:function' or a name registered in the entry-point group 'align.datasets'; "
            "called with this SourceSpec, returns rows (dicts) or records."
        },
    )
    max_rows: int | None = field(default=None, metadata={"help": "Read at most this many rows (the first ones)."})

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise DataError(f"source path must be a string, found {type(self.path).__name__}: {self.path!r}")
        if not self.path and not self.plugin:
            raise DataError("a data source needs `path` (a file, folder, builtin:<name> or hub id) or `plugin`")
        if self.format not in FORMATS:
            raise DataError(
                f"source '{self.path}': unknown format '{self.format}'; use one of {', '.join(FORMATS)} "
                "(or 'auto' to detect it)"
            )
        if not _is_number(self.weight) or not 0 < self.weight <= 1:
            raise DataError(
                f"source '{self.path}': weight must be in (0, 1] (the fraction of rows to take), found {self.weight!r}"
            )
        if self.max_rows is not None and (
            not isinstance(self.max_rows, int) or isinstance(self.max_rows, bool) or self.max_rows < 1
        ):
            raise DataError(
                f"source '{self.path}': max_rows must be a positive integer or null, found {self.max_rows!r}"
            )
        self.columns = _check_columns(self.columns, self.path)
        if self.labels is not None:
            self.labels = _check_labels(self.labels, self.path)
        if self.annotations is not None:
            self.annotations = _check_annotation_table(self.annotations, self.path)
        if self.plugin is not None:
            module, sep, func = str(self.plugin).partition(":")
            if not module or (sep and not func):
                raise DataError(
                    f"source '{self.path}': plugin must be 'module:function' or an entry-point name, "
                    f"found {self.plugin!r}"
                )

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str, where: str = "data source") -> SourceSpec:
        """Build from a recipe mapping; a bare string is shorthand for ``{path: <string>}``."""
        if isinstance(d, str):
            return cls(path=d)
        return cls(**_from_dict(cls, d, where))

    @property
    def label_map(self) -> dict[str, float]:
        """The label convention in force for this source."""
        return dict(DEFAULT_LABELS) if self.labels is None else dict(self.labels)


def _check_columns(columns: Any, path: str) -> dict[str, Any]:
    if columns is None:
        return {}
    if not isinstance(columns, dict):
        raise DataError(f"source '{path}': columns must be a mapping like {{prompt: question}}, found {columns!r}")
    out: dict[str, Any] = {}
    for key, value in columns.items():
        if key not in COLUMN_FIELDS:
            raise DataError(
                f"source '{path}': columns has unknown field '{key}'. The mapping goes canonical field -> your "
                f"column, e.g. {{prompt: question, chosen: good}}; fields: {', '.join(COLUMN_FIELDS)}"
            )
        if key == "annotators":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
                raise DataError(
                    f"source '{path}': columns.annotators must be a list of column names, "
                    f"e.g. [rater_1, rater_2], found {value!r}"
                )
            out[key] = list(value)
        elif key == "annotator_scores":
            # Per-response scores: {annotator: [score column of `chosen`, score column of `rejected`]}; each
            # annotator's preference is the sign of the difference (align.agreement.scores_to_preference).
            ok = (
                isinstance(value, dict)
                and value
                and all(
                    isinstance(v, list) and len(v) == 2 and all(isinstance(c, str) and c for c in v)
                    for v in value.values()
                )
            )
            if not ok:
                raise DataError(
                    f"source '{path}': columns.annotator_scores maps each annotator to the two columns holding its "
                    f"scores of chosen and rejected, e.g. {{ann_1: [ann_1_score_a, ann_1_score_b]}}; found {value!r}"
                )
            out[key] = {str(k): list(v) for k, v in value.items()}
        elif key == "id" and value is None:
            out[key] = None  # `id: null`: ignore any id column and generate <source>-<row index> ids
        elif not isinstance(value, str) or not value:
            raise DataError(f"source '{path}': columns.{key} must be a column name (a string), found {value!r}")
        else:
            out[key] = value
    return out


def _check_labels(labels: Any, path: str) -> dict[str, float]:
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"source '{path}': labels must be a non-empty mapping label -> number, found {labels!r}")
    out: dict[str, float] = {}
    for key, value in labels.items():
        if not _is_number(value):
            raise DataError(
                f"source '{path}': label '{key}' must map to a number (1 = chosen preferred, -1 = rejected, "
                f"0 = tie), found {value!r}"
            )
        out[str(key)] = float(value)  # YAML reads `1: 1` with an int key; labels are matched as text
    return out


def _check_annotation_table(table: Any, path: str) -> dict[str, str]:
    if not isinstance(table, dict):
        raise DataError(
            f"source '{path}': annotations must be a mapping {{path: file, item: col, annotator: col, label: col}}"
        )
    unknown = [k for k in table if k not in ANNOTATION_TABLE_KEYS]
    if unknown:
        raise DataError(
            f"source '{path}': unknown key '{unknown[0]}' in annotations; "
            f"valid keys: {', '.join(ANNOTATION_TABLE_KEYS)}"
        )
    if not isinstance(table.get("path"), str) or not table["path"]:
        raise DataError(f"source '{path}': annotations.path must name the annotation table file")
    out = {key: str(table.get(key, key)) for key in ANNOTATION_TABLE_KEYS}
    out["path"] = table["path"]
    return out


def _sources(value: Any, where: str) -> list[SourceSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where} must be a list of sources, found {type(value).__name__}")
    return [v if isinstance(v, SourceSpec) else SourceSpec.from_dict(v, f"{where}[{i}]") for i, v in enumerate(value)]


@dataclass
class DataConfig:
    """Which sources to read, how to split them, and how strict to be about dropped rows."""

    sources: list[SourceSpec] = field(
        default_factory=list,
        metadata={"help": "Training sources (a list of source mappings or paths); at least one is needed to load."},
    )
    eval_sources: list[SourceSpec] = field(
        default_factory=list,
        metadata={"help": "User-provided eval sources; if empty, the eval split is taken by prompt hash."},
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Share of prompts held out for eval when no eval_sources are given, [0, 1)."}
    )
    split_seed: int = field(default=0, metadata={"help": "Seed of the prompt-hash split and of mixture sampling."})
    leakage: str = field(
        default="error",
        metadata={"help": "error | warn: what to do when a prompt is in both the training and the eval sources."},
    )
    max_drop_fraction: float = field(
        default=0.05,
        metadata={"help": "Largest share of a source's rows that may be dropped (empty, identical, ...), [0, 1]."},
    )
    dedupe: bool = field(default=True, metadata={"help": "Drop rows whose prompt + responses were seen before."})
    unpair: bool = field(
        default=False,
        metadata={
            "help": "Unpaired stages (kto): read each preference pair as two unpaired rows, the chosen response with "
            "label true and the rejected one with label false (a pair counts as two rows). Off: a preference source "
            "given to an unpaired stage is an error."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message prepended to every record that has none."}
    )

    def __post_init__(self) -> None:
        self.sources = _sources(self.sources, "data.sources")
        self.eval_sources = _sources(self.eval_sources, "data.eval_sources")
        if not _is_number(self.eval_fraction) or not 0 <= self.eval_fraction < 1:
            raise DataError(f"data.eval_fraction must be in [0, 1), found {self.eval_fraction!r}")
        if not isinstance(self.split_seed, int) or isinstance(self.split_seed, bool):
            raise DataError(f"data.split_seed must be an integer, found {self.split_seed!r}")
        if self.leakage not in LEAKAGE_MODES:
            raise DataError(f"data.leakage must be one of {', '.join(LEAKAGE_MODES)}, found {self.leakage!r}")
        if not _is_number(self.max_drop_fraction) or not 0 <= self.max_drop_fraction <= 1:
            raise DataError(f"data.max_drop_fraction must be in [0, 1], found {self.max_drop_fraction!r}")
        if not isinstance(self.dedupe, bool):
            raise DataError(f"data.dedupe must be true or false, found {self.dedupe!r}")
        if not isinstance(self.unpair, bool):
            raise DataError(f"data.unpair must be true or false, found {self.unpair!r}")
        if self.system_prompt is not None and not isinstance(self.system_prompt, str):
            raise DataError(f"data.system_prompt must be a string or null, found {self.system_prompt!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataConfig:
        """Build from a plain dict (parsed YAML); unknown keys are an error naming the key."""
        return cls(**_from_dict(cls, d, "data"))
