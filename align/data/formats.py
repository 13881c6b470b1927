"""Detect a source's row format and convert rows to canonical records.

Prompts are split from responses at turn level only: the prompt is whole messages, never a character prefix
(a character common prefix turns "Assistant: blue" / "Assistant: black" into a prompt ending in "bl").
Schema faults raise ``DataError`` naming the row; harmless bad rows become ``SkippedRow`` results to be counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from align.agreement import scores_to_preference
from align.data.records import Message, PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.spec import (
    FEEDBACK_LABELS,
    PREFERENCE_FORMATS,
    SFT_FORMATS,
    UNPAIRED_FORMATS,
    DataError,
    SourceSpec,
)
from align.data.validate import (
    EMPTY_RESPONSE,
    PROMPT_MISMATCH,
    SkippedRow,
    check_conversation_roles,
    check_messages,
    check_preference_record,
    check_prompt_roles,
    check_response,
    check_sft_record,
    check_unpaired_record,
)

PREFERENCE = "preference"
SFT = "sft"
UNPAIRED = "unpaired"  # one response with a thumbs up or down (KTO)
KINDS = (PREFERENCE, SFT, UNPAIRED)

REQUIRED: dict[str, tuple[str, ...]] = {
    "hh-rlhf": ("chosen", "rejected"),
    "pcr": ("prompt", "chosen", "rejected"),
    "conversational": ("prompt", "chosen", "rejected"),
    "implicit-prompt": ("chosen", "rejected"),
    "sft-messages": ("messages",),
    "prompt-completion": ("prompt", "completion"),
    "unpaired": ("prompt", "completion"),  # and `label`, unless annotator ratings decide it
    "unpaired-messages": ("messages",),
}
FORMAT_HELP = {
    "hh-rlhf": 'chosen, rejected (text transcripts with "\\n\\nHuman:" / "\\n\\nAssistant:" turns)',
    "pcr": "prompt, chosen, rejected (strings)",
    "conversational": "prompt, chosen, rejected (message lists)",
    "implicit-prompt": "chosen, rejected (whole conversations as message lists, sharing the prompt turns)",
    "sft-messages": "messages (a conversation ending with an assistant turn; SFT)",
    "prompt-completion": "prompt, completion (strings or message lists; SFT)",
    "unpaired": "prompt, completion, label (true = desirable, false = undesirable; unpaired feedback for kto)",
    "unpaired-messages": "messages, label (the last assistant turn is the rated response; kto)",
}
# Canonical fields read from same-named columns unless ``columns:`` maps them elsewhere.
DEFAULT_FIELDS = ("id", "prompt", "chosen", "rejected", "messages", "completion", "margin", "system", "label")
ANNOTATOR_COLUMN = re.compile(r"^(rater|annotator)_", re.IGNORECASE)
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_MAPPING_EXAMPLE = "columns: {prompt: question, chosen: good, rejected: bad}"
_UNPAIRED_MAPPING_EXAMPLE = "columns: {prompt: question, completion: answer, label: thumbs_up}"
# What a row's `label` may say, case-insensitively (JSON booleans and the numbers 1 / 0 too).
FEEDBACK_TRUE = ("true", "yes", "1", "up", "thumbs_up", "good", "desirable", "positive")
FEEDBACK_FALSE = ("false", "no", "0", "down", "thumbs_down", "bad", "undesirable", "negative")


def _formats_table() -> str:
    return "\n".join(f"  {name:<18} {FORMAT_HELP[name]}" for name in REQUIRED)


def _found(keys: Sequence[Any]) -> str:
    return ", ".join(map(str, keys)) or "(none)"


def _unpaired_format(has: set[str], unpair: bool, source: str, found_columns: Sequence[str]) -> str | None:
    """An unpaired stage's format from the fields a row has; None when the row holds pairs and ``unpair`` is on."""
    if {"chosen", "rejected"} <= has:
        if unpair:
            return None
        raise DataError(
            f"source '{source}' holds preference pairs (chosen, rejected), but this stage reads unpaired feedback "
            "(prompt, completion, label). Set data.unpair: true to read each pair as two rows (chosen -> label true, "
            "rejected -> label false), or give a source of unpaired rows."
        )
    if {"prompt", "completion"} <= has:
        return "unpaired"
    if "messages" in has:
        return "unpaired-messages"
    raise DataError(
        f"cannot detect the format of source '{source}': no unpaired format's columns are all present.\n  found "
        f"columns: {_found(found_columns)}\nUnpaired formats and the columns they need:\n"
        + "\n".join(f"  {name:<18} {FORMAT_HELP[name]}" for name in UNPAIRED_FORMATS)
        + f"\nMap your columns in the recipe, e.g. {_UNPAIRED_MAPPING_EXAMPLE}, or set `format:` on the source."
    )


def detect_format(
    fields_present: dict[str, Any], kind: str, source: str, found_columns: Sequence[str], unpair: bool = False
) -> str:
    """Pick a format from the canonical fields a row has (after ``columns:`` mapping) and their types.

    ``unpair``: an unpaired stage reads preference pairs too (each as two rows); otherwise pairs are an error there.
    """
    has = set(fields_present)
    if kind == UNPAIRED:
        fmt = _unpaired_format(has, unpair, source, found_columns)
        if fmt is not None:
            return fmt
    if {"chosen", "rejected"} <= has:
        chosen = fields_present["chosen"]
        if "prompt" in has:
            return "conversational" if isinstance(fields_present["prompt"], list) else "pcr"
        return "implicit-prompt" if isinstance(chosen, list) else "hh-rlhf"
    if kind == SFT and "messages" in has:
        return "sft-messages"
    if kind == SFT and {"prompt", "completion"} <= has:
        if "label" in has:
            # Unpaired feedback read as SFT would teach the thumbs-down answers as well as the good ones.
            raise DataError(
                f"source '{source}' has prompt, completion and label columns: it looks like unpaired feedback (thumbs "
                "up / down), and SFT would learn the undesirable completions too. Train on it with the kto stage, or, "
                "if the label column means something else, set `format: prompt-completion` on the source."
            )
        return "prompt-completion"
    looks_sft = "messages" in has or {"prompt", "completion"} <= has
    if kind == PREFERENCE and looks_sft and "label" in has:
        reason = (
            "it looks like unpaired feedback (prompt, completion, label) for the kto stage, but a preference stage "
            "needs chosen and rejected responses"
        )
    elif kind == PREFERENCE and looks_sft:
        reason = "it looks like SFT data, but a preference stage needs chosen and rejected responses"
    else:
        reason = "no format's required columns are all present"
    raise DataError(
        f"cannot detect the format of source '{source}': {reason}.\n  found columns: {_found(found_columns)}\n"
        f"Formats and the columns they need:\n{_formats_table()}\n"
        f"Map your columns in the recipe, e.g. {_MAPPING_EXAMPLE}, or set `format:` on the source."
    )


def parse_hh_transcript(text: str, where: str, field_name: str) -> list[Message]:
    """Split an hh-rlhf transcript into user/assistant messages (content stripped of surrounding spaces)."""
    parts = _HH_TURN.split(text)
    if parts[0].strip():
        raise DataError(
            f"{where}: field '{field_name}' has text before its first Human:/Assistant: turn "
            f"({parts[0].strip()[:60]!r}); hh-rlhf transcripts are turns of '\\n\\nHuman: ...' and "
            "'\\n\\nAssistant: ...'. If the data has a separate prompt column, map it: columns: {prompt: <column>}"
        )
    messages = [
        {"role": _HH_ROLES[role], "content": content.strip()} for role, content in zip(parts[1::2], parts[2::2])
    ]
    if not any(m["role"] == "user" for m in messages):
        raise DataError(
            f"{where}: field '{field_name}' has no Human: turn; hh-rlhf transcripts look like "
            "'\\n\\nHuman: <question>\\n\\nAssistant: <reply>'. If this is a bare response with the prompt in "
            "another column, map it: columns: {prompt: <column>}"
        )
    if messages[-1]["role"] != "assistant":
        raise DataError(
            f"{where}: field '{field_name}' does not end with an Assistant: turn (found "
            f"[{', '.join(m['role'] for m in messages)}]); the final reply is the response being compared"
        )
    return messages


def split_at_turns(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]] | None:
    """(prompt, chosen reply, rejected reply) from two whole conversations, split at a message boundary.

    The prompt is the longest run of equal leading messages that leaves each side at least one message; each
    side must then have exactly one assistant message left, otherwise None (the prompts differ).
    """
    limit = min(len(chosen), len(rejected)) - 1
    n = 0
    while n < limit and chosen[n] == rejected[n]:
        n += 1
    rest_c, rest_r = chosen[n:], rejected[n:]
    if len(rest_c) != 1 or len(rest_r) != 1 or rest_c[0]["role"] != "assistant" or rest_r[0]["role"] != "assistant":
        return None
    return chosen[:n], rest_c, rest_r


def label_value(value: Any, labels: dict[str, float], where: str, column: str) -> float | None:
    """An annotator label as a number: labels looked up in the convention, numbers passed through."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text in labels:
            return labels[text]
        folded = {v for k, v in labels.items() if k.lower() == text.lower()}
        if len(folded) == 1:
            return folded.pop()
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise DataError(
        f"{where}: annotator column '{column}' has unknown label {value!r}; known labels: "
        f"{', '.join(labels)} (numbers pass through). Add it to the source's `labels:`, e.g. labels: "
        f"{{{value}: 1}} for 'chosen preferred', -1 for 'rejected preferred', 0 for a tie"
    )


def _margin(value: Any, where: str) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise DataError(f"{where}: field 'margin' must be a number, found {type(value).__name__}: {value!r:.60}")


def feedback_label(value: Any, where: str, column: str) -> bool | None:
    """A row's thumbs up / down as True / False; None when empty (the annotators' ratings may decide it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            return None
        if text in FEEDBACK_TRUE:
            return True
        if text in FEEDBACK_FALSE:
            return False
    raise DataError(
        f"{where}: column '{column}' holds the feedback label, which must be true (desirable) or false (undesirable); "
        f"found {type(value).__name__}: {value!r:.60}. Accepted: true/false, 1/0, {'/'.join(FEEDBACK_TRUE[3:])} and "
        f"{'/'.join(FEEDBACK_FALSE[3:])}. If the column holds a score, list it as an annotator rating instead "
        "(columns: {annotators: [<column>]}) and set agreement.rating_threshold."
    )


def rating_value(value: Any, labels: dict[str, float], where: str, column: str) -> float | None:
    """One annotator's rating of one response: JSON booleans as thumbs (+1 / -1), else as ``label_value``."""
    if isinstance(value, bool):
        return 1.0 if value else -1.0
    return label_value(value, labels, where, column)


def _prompt_messages(value: Any, where: str, field_name: str) -> list[Message]:
    if value is None:
        value = ""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        return check_messages(value, where, field_name)
    raise DataError(
        f"{where}: field '{field_name}' must be a string or a list of messages, found "
        f"{type(value).__name__}: {value!r:.60}"
    )


def _reply_messages(value: Any, where: str, field_name: str) -> list[Message]:
    if value is None:
        value = ""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, list):
        messages = check_messages(value, where, field_name)
        check_response(messages, where, field_name)
        return messages
    raise DataError(
        f"{where}: field '{field_name}' must be a string or a list of messages, found "
        f"{type(value).__name__}: {value!r:.60}"
    )


def _message_list(value: Any, where: str, field_name: str, fmt: str) -> list[Message]:
    if not isinstance(value, list):
        hint = " (text transcripts are format hh-rlhf)" if isinstance(value, str) and fmt == "implicit-prompt" else ""
        raise DataError(
            f"{where}: format '{fmt}' needs field '{field_name}' as a list of messages, found "
            f"{type(value).__name__}: {value!r:.60}{hint}"
        )
    return check_messages(value, where, field_name)


def _with_system(messages: list[Message], system: str | None) -> list[Message]:
    if system and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def row_id(row: Any, index: int, source: str, id_column: str | None = "id") -> str:
    """The row's id column as text, else ``<source>-<index>``."""
    value = row.get(id_column) if isinstance(row, dict) and id_column else None
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return f"{source}-{index}"
    return str(value)


@dataclass
class Converter:
    """Converts one source's rows, all in one format, to records."""

    source: str
    fmt: str
    kind: str
    columns: dict[str, str | None]  # canonical field -> user column (id: None = generate ids)
    annotators: list[str] = field(default_factory=list)
    labels: dict[str, float] = field(default_factory=dict)
    annotator_scores: dict[str, list[str]] = field(default_factory=dict)

    @property
    def unpaired_rows(self) -> bool:
        """Rows of unpaired feedback (as opposed to pairs an unpaired stage will split in two)."""
        return self.kind == UNPAIRED and self.fmt in UNPAIRED_FORMATS

    def where(self, row: dict, index: int, location: str) -> str:
        rid = row.get(self.columns["id"]) if isinstance(row, dict) and self.columns["id"] else None
        id_part = f", id {rid!r}" if rid not in (None, "") else ""
        return f"source '{self.source}' row {index} ({location}{id_part})"

    def convert(
        self, row: Any, index: int, location: str
    ) -> PreferenceRecord | SFTRecord | UnpairedRecord | SkippedRow:
        """One raw row -> a record, or a ``SkippedRow``; raises DataError on schema faults."""
        if not isinstance(row, dict):
            raise DataError(
                f"source '{self.source}' row {index} ({location}): a row must be a JSON object / mapping, "
                f"found {type(row).__name__}: {row!r:.60}"
            )
        where = self.where(row, index, location)
        values = {f: row[c] for f, c in self.columns.items() if c is not None and c in row}
        required = REQUIRED[self.fmt]
        if self.kind == SFT and self.fmt in PREFERENCE_FORMATS:
            required = tuple(f for f in required if f != "rejected")
        missing = [f for f in required if f not in values]
        if self.unpaired_rows and "label" not in values and not self.annotators and "annotations" not in row:
            required = (*required, "label")  # no annotator ratings to decide it: the row must say
            missing = ["label"]
        if missing:
            mapped = {f: self.columns[f] for f in required}
            example = _UNPAIRED_MAPPING_EXAMPLE if self.unpaired_rows else _MAPPING_EXAMPLE
            raise DataError(
                f"{where}: missing field '{mapped[missing[0]]}' for format '{self.fmt}'.\n"
                f"  expected keys: {_found(list(mapped.values()))}\n  found keys: {_found(list(row))}\n"
                f"Fix: map your columns in the recipe, e.g. columns: {{{missing[0]}: <your column>}} "
                f"(like {example}), or set `format:` if the detected format is wrong."
            )
        rid = row_id(row, index, self.source, self.columns["id"])
        system = values.get("system")
        if system is not None and not isinstance(system, str):
            raise DataError(f"{where}: field 'system' must be a string, found {type(system).__name__}")
        meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
        if self.kind == SFT:
            result = self._sft(values, where)
            if isinstance(result, SkippedRow):
                return result
            return SFTRecord(id=rid, messages=_with_system(result, system), source=self.source, meta=dict(meta))
        if self.unpaired_rows:
            prompt, completion = self._unpaired(values, where)
            return UnpairedRecord(
                id=rid,
                prompt=_with_system(prompt, system),
                completion=completion,
                label=feedback_label(values["label"], where, str(self.columns["label"]))
                if "label" in values
                else None,
                source=self.source,
                annotations=self._annotations(row, where, rating_value),
                meta=dict(meta),
            )
        result = self._preference(values, where)
        if isinstance(result, SkippedRow):
            return result
        prompt, chosen, rejected = result
        return PreferenceRecord(
            id=rid,
            prompt=_with_system(prompt, system),
            chosen=chosen,
            rejected=rejected,
            source=self.source,
            margin=_margin(values.get("margin"), where),
            annotations=self._annotations(row, where),
            meta=dict(meta),
        )

    def _preference(self, v: dict[str, Any], where: str) -> tuple[list, list, list] | SkippedRow:
        if self.fmt == "hh-rlhf":
            texts = [v["chosen"], v["rejected"]]
            for name, text in zip(("chosen", "rejected"), texts):
                if text is not None and not isinstance(text, str):
                    raise DataError(
                        f"{where}: format 'hh-rlhf' needs field '{name}' as a text transcript, found "
                        f"{type(text).__name__}: {text!r:.60} (message lists are format implicit-prompt)"
                    )
            if any(not (t or "").strip() for t in texts):
                return SkippedRow(EMPTY_RESPONSE)
            chosen = parse_hh_transcript(v["chosen"], where, "chosen")
            rejected = parse_hh_transcript(v["rejected"], where, "rejected")
            return self._split(chosen, rejected, where)
        if self.fmt == "implicit-prompt":
            chosen = _message_list(v["chosen"], where, "chosen", self.fmt)
            rejected = _message_list(v["rejected"], where, "rejected", self.fmt)
            return self._split(chosen, rejected, where)
        # pcr and conversational: explicit prompt; strings and message lists are both accepted
        prompt = _prompt_messages(v["prompt"], where, "prompt")
        check_prompt_roles(prompt, where)
        return prompt, _reply_messages(v["chosen"], where, "chosen"), _reply_messages(v["rejected"], where, "rejected")

    @staticmethod
    def _split(chosen: list[Message], rejected: list[Message], where: str) -> tuple[list, list, list] | SkippedRow:
        parts = split_at_turns(chosen, rejected)
        if parts is None:
            return SkippedRow(PROMPT_MISMATCH)
        check_prompt_roles(parts[0], where)
        return parts

    def _unpaired(self, v: dict[str, Any], where: str) -> tuple[list[Message], list[Message]]:
        """(prompt, the one rated reply) of an unpaired row."""
        if self.fmt == "unpaired-messages":
            messages = _message_list(v["messages"], where, "messages", self.fmt)
            check_conversation_roles(messages, where, "messages")
            return messages[:-1], messages[-1:]
        prompt = _prompt_messages(v["prompt"], where, "prompt")
        check_prompt_roles(prompt, where)
        return prompt, _reply_messages(v["completion"], where, "completion")

    def _sft(self, v: dict[str, Any], where: str) -> list[Message] | SkippedRow:
        if self.fmt == "sft-messages":
            messages = _message_list(v["messages"], where, "messages", self.fmt)
        elif self.fmt == "prompt-completion":
            prompt = _prompt_messages(v["prompt"], where, "prompt")
            check_prompt_roles(prompt, where)
            completion = v["completion"]
            if completion is None or isinstance(completion, str):
                messages = prompt + [{"role": "assistant", "content": completion or ""}]
            else:
                messages = prompt + _message_list(completion, where, "completion", self.fmt)
        elif self.fmt == "hh-rlhf":
            text = v["chosen"]
            if text is not None and not isinstance(text, str):
                raise DataError(f"{where}: format 'hh-rlhf' needs field 'chosen' as a text transcript")
            if not (text or "").strip():
                return SkippedRow(EMPTY_RESPONSE)
            messages = parse_hh_transcript(text, where, "chosen")
        elif self.fmt == "implicit-prompt":
            messages = _message_list(v["chosen"], where, "chosen", self.fmt)
        else:  # pcr / conversational: prompt + the chosen reply
            prompt = _prompt_messages(v["prompt"], where, "prompt")
            check_prompt_roles(prompt, where)
            messages = prompt + _reply_messages(v["chosen"], where, "chosen")
        field_name = {"sft-messages": "messages", "prompt-completion": "completion"}.get(self.fmt, "chosen")
        check_conversation_roles(messages, where, field_name)
        return messages

    def _annotations(self, row: dict, where: str, value_of=label_value) -> dict[str, float | None] | None:
        if self.annotator_scores:
            out: dict[str, float | None] = {}
            for name, (col_a, col_b) in self.annotator_scores.items():
                a, b = (
                    _margin(row.get(col_a), f"{where}, column '{col_a}'"),
                    _margin(row.get(col_b), f"{where}, column '{col_b}'"),
                )
                out[name] = None if a is None or b is None else float(scores_to_preference(a, b))
            return out
        if self.annotators:
            return {c: value_of(row.get(c), self.labels, where, c) for c in self.annotators}
        given = row.get("annotations")
        if given is None:
            return None
        if not isinstance(given, dict):
            raise DataError(f"{where}: field 'annotations' must map annotator -> label, found {type(given).__name__}")
        return {str(k): value_of(v, self.labels, where, f"annotations.{k}") for k, v in given.items()}


def make_converter(spec: SourceSpec, source: str, first_row: Any, kind: str, unpair: bool = False) -> Converter:
    """Resolve the column mapping and the format of a source from its first row.

    ``unpair``: an unpaired stage may read preference pairs (converted to PreferenceRecords, which the loader splits
    into two unpaired rows); without it, pairs given to an unpaired stage are an error."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, found {kind!r}")
    if not isinstance(first_row, dict):
        raise DataError(
            f"source '{source}' row 0: a row must be a JSON object / mapping, found {type(first_row).__name__}"
        )
    columns: dict[str, str | None] = {f: f for f in DEFAULT_FIELDS}
    for key, col in spec.columns.items():
        if key in ("annotators", "annotator_scores"):
            continue
        if col is None:  # only `id: null` passes spec validation: generate ids
            columns[key] = None
            continue
        if col not in first_row:
            raise DataError(
                f"source '{source}': columns maps {key} -> '{col}', but the data has no column '{col}'; "
                f"found columns: {_found(list(first_row))}"
            )
        columns[key] = col
    annotators = list(spec.columns.get("annotators", []))
    missing = [c for c in annotators if c not in first_row]
    if missing:
        raise DataError(
            f"source '{source}': columns.annotators names '{missing[0]}', which the data does not have; "
            f"found columns: {_found(list(first_row))}"
        )
    if not annotators:
        annotators = [c for c in first_row if isinstance(c, str) and ANNOTATOR_COLUMN.match(c)]
    fmt = spec.format
    if fmt == "auto":
        present = {f: first_row[c] for f, c in columns.items() if c in first_row}
        fmt = detect_format(present, kind, source, list(first_row), unpair=unpair)
    else:
        _check_format_fits(fmt, kind, source, unpair)
    scores = dict(spec.columns.get("annotator_scores", {}))
    if kind == UNPAIRED and fmt in UNPAIRED_FORMATS:
        if scores:
            raise DataError(
                f"source '{source}': columns.annotator_scores holds each annotator's scores of a pair's two "
                "responses; unpaired rows have one response, so list each annotator's rating column under "
                "columns.annotators"
            )
        labels = spec.label_map if spec.labels is not None else dict(FEEDBACK_LABELS)
        return Converter(source, fmt, kind, columns, annotators, labels)
    absent = [c for cols in scores.values() for c in cols if c not in first_row]
    if absent:
        raise DataError(
            f"source '{source}': columns.annotator_scores names '{absent[0]}', which the data does not have; "
            f"found columns: {_found(list(first_row))}"
        )
    return Converter(source, fmt, kind, columns, [] if scores else annotators, spec.label_map, scores)


def _check_format_fits(fmt: str, kind: str, source: str, unpair: bool) -> None:
    """An explicit ``format:`` must hold what the stage reads."""
    if kind == PREFERENCE and fmt in SFT_FORMATS:
        raise DataError(
            f"source '{source}': format '{fmt}' holds SFT data; a preference stage needs one of "
            f"{', '.join(PREFERENCE_FORMATS)}"
        )
    if kind != UNPAIRED and fmt in UNPAIRED_FORMATS:
        raise DataError(
            f"source '{source}': format '{fmt}' holds unpaired feedback (one response with a thumbs up or down); "
            "only the kto stage reads it"
        )
    if kind == UNPAIRED and fmt in SFT_FORMATS:
        raise DataError(
            f"source '{source}': format '{fmt}' holds SFT data; the kto stage needs unpaired feedback "
            f"({', '.join(UNPAIRED_FORMATS)}) or preference pairs with data.unpair: true"
        )
    if kind == UNPAIRED and fmt in PREFERENCE_FORMATS and not unpair:
        raise DataError(
            f"source '{source}': format '{fmt}' holds preference pairs; set data.unpair: true to read each pair as "
            "two unpaired rows (chosen -> label true, rejected -> label false)"
        )


def convert_rows(
    rows: Sequence[Any],
    locations: Sequence[str],
    indices: Sequence[int],
    spec: SourceSpec,
    source: str,
    kind: str,
    unpair: bool = False,
) -> tuple[list[PreferenceRecord | SFTRecord | UnpairedRecord | SkippedRow], list[str], str]:
    """Convert the rows at ``indices``: returns (records or skips, their ids, the format used).

    Records a plugin returns are schema-checked and passed through (tagged with ``source`` if untagged);
    dicts go through format detection (from the first dict row) and conversion. ``unpair``: see
    :func:`make_converter`.
    """
    converter: Converter | None = None
    items: list[PreferenceRecord | SFTRecord | UnpairedRecord | SkippedRow] = []
    ids: list[str] = []
    for index in indices:
        row, location = rows[index], locations[index]
        if isinstance(row, (PreferenceRecord, SFTRecord, UnpairedRecord)):
            where = f"source '{source}' {location} (id {row.id!r})"
            items.append(_pass_through(row, kind, source, where, unpair))
            ids.append(row.id)
            continue
        if converter is None:
            converter = make_converter(spec, source, row, kind, unpair)
        items.append(converter.convert(row, index, location))
        ids.append(row_id(row, index, source, converter.columns["id"]) if isinstance(row, dict) else str(index))
    return items, ids, converter.fmt if converter else "records"


def _pass_through(
    record: PreferenceRecord | SFTRecord | UnpairedRecord, kind: str, source: str, where: str, unpair: bool = False
) -> PreferenceRecord | SFTRecord | UnpairedRecord:
    record.source = record.source or source
    if kind == UNPAIRED:
        if isinstance(record, PreferenceRecord) and unpair:
            return check_preference_record(record, where)
        if not isinstance(record, UnpairedRecord):
            pairs = (
                " (or PreferenceRecord instances with data.unpair: true)"
                if isinstance(record, PreferenceRecord)
                else ""
            )
            raise DataError(f"{where}: the kto stage reads unpaired feedback; return UnpairedRecord instances{pairs}")
        return check_unpaired_record(record, where)
    if isinstance(record, UnpairedRecord):
        raise DataError(f"{where}: an UnpairedRecord holds unpaired feedback, which only the kto stage reads")
    if kind == PREFERENCE:
        if isinstance(record, SFTRecord):
            raise DataError(f"{where}: a preference stage got an SFTRecord; return PreferenceRecord instances")
        return check_preference_record(record, where)
    if isinstance(record, PreferenceRecord):  # SFT on preference data trains on prompt + chosen
        check_preference_record(record, where)
        record = SFTRecord(
            id=record.id, messages=record.prompt + record.chosen, source=record.source, meta=record.meta
        )
    return check_sft_record(record, where)


def annotations_from_table(
    rows: Sequence[Any], locations: Sequence[str], table: dict[str, str], labels: dict[str, float], where: str
) -> dict[str, dict[str, float | None]]:
    """Long annotation rows (item, annotator, label) -> ``{item id: {annotator: value}}``."""
    out: dict[str, dict[str, float | None]] = {}
    cols = (table["item"], table["annotator"], table["label"])
    for row, location in zip(rows, locations):
        at = f"{where} ({location})"
        if not isinstance(row, dict) or any(c not in row for c in cols):
            found = list(row) if isinstance(row, dict) else []
            raise DataError(
                f"{at}: annotation rows need columns {', '.join(cols)}; found {_found(found)}. Set them with "
                "annotations: {path: ..., item: <column>, annotator: <column>, label: <column>}"
            )
        item, annotator = row[cols[0]], row[cols[1]]
        if item is None or annotator is None:
            raise DataError(f"{at}: empty item or annotator")
        value = label_value(row[cols[2]], labels, at, cols[2])
        labelled = out.setdefault(str(item), {})
        if str(annotator) in labelled and labelled[str(annotator)] != value:
            raise DataError(f"{at}: annotator {annotator!r} labels item {item!r} twice with different labels")
        labelled[str(annotator)] = value
    return out


def attach_annotations(
    records: Sequence[PreferenceRecord | SFTRecord | UnpairedRecord | SkippedRow],
    labels_by_item: dict[str, dict[str, float | None]],
    known_ids: set[str],
    where: str,
) -> None:
    """Add table labels to records by id; labels for ids the source does not have are an error."""
    unknown = sorted(set(labels_by_item) - known_ids)
    if unknown:
        raise DataError(
            f"{where}: labels for {len(unknown)} item(s) the source does not have: {', '.join(unknown[:5])}"
            f"{' ...' if len(unknown) > 5 else ''}. Item ids must match the source's id column (or the generated "
            "ids <source>-<row index>)"
        )
    for record in records:
        if not isinstance(record, (PreferenceRecord, UnpairedRecord)) or record.id not in labels_by_item:
            continue
        merged = dict(record.annotations or {})
        for annotator, value in labels_by_item[record.id].items():
            if annotator in merged and merged[annotator] != value:
                raise DataError(
                    f"{where}: annotator {annotator!r} labels item {record.id!r} both in a column and in the table"
                )
            merged[annotator] = value
        record.annotations = merged
