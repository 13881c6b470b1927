"""Row checks: schema errors stop the run (fault 1), bad-but-harmless rows are dropped and counted.

``DropReport`` is the one place drops are counted; other modules (length filtering, annotator agreement) add
their own reasons to the same report, so a data card can show every row's fate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from align.data.records import ROLES, Message, PreferenceRecord, SFTRecord, UnpairedRecord
from align.data.spec import DataError
from align.data.split import normalise_text, render_normalised

EMPTY_RESPONSE = "empty_response"
IDENTICAL_PAIR = "identical_pair"
PROMPT_MISMATCH = "prompt_mismatch"
DUPLICATE = "duplicate"
EMPTY_PROMPT = "empty_prompt"
NO_LABEL = "no_label"  # unpaired feedback with neither a label nor any annotator rating
MAX_EXAMPLES = 5

MESSAGE_HINT = "each message must be {role: system|user|assistant, content: <string>}"
ORDER_HINT = "an optional system message first, then user and assistant turns alternating"


@dataclass(frozen=True)
class SkippedRow:
    """A row that converts to no record, and why (one of the SKIP reasons)."""

    reason: str


@dataclass
class DropReport:
    """Counts of kept and dropped rows. Invariant: ``kept + sum(dropped.values()) == total``.

    Rows enter with ``add_rows`` (counted as kept); ``add_drop`` moves one counted row from kept to dropped,
    so a later stage can drop records it received as kept without touching ``total``.
    """

    total: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add_rows(self, n: int = 1) -> None:
        """Count ``n`` new rows, all kept until dropped."""
        self.total += n
        self.kept += n

    def add_drop(self, reason: str, row_id: str) -> None:
        """Move one counted row from kept to ``dropped[reason]``; keep its id as an example."""
        if self.kept <= 0:
            raise ValueError(
                f"cannot drop row {row_id!r} ({reason}): no kept rows left; count rows with add_rows() first"
            )
        self.kept -= 1
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < MAX_EXAMPLES:
            ids.append(str(row_id))
        self.check()

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def check(self) -> None:
        """Assert the invariant (an internal bug if it fails, never the user's)."""
        assert self.kept >= 0 and self.kept + self.n_dropped == self.total, self.to_dict()

    def merge(self, other: DropReport) -> DropReport:
        """Add ``other``'s counts into this report; returns self."""
        self.total += other.total
        self.kept += other.kept
        for reason, count in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + count
        for reason, ids in other.examples.items():
            mine = self.examples.setdefault(reason, [])
            mine.extend(ids[: MAX_EXAMPLES - len(mine)])
        self.check()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DropReport:
        report = cls(int(d["total"]), int(d["kept"]), dict(d.get("dropped", {})), dict(d.get("examples", {})))
        report.check()
        return report


# --- schema checks (ERROR) -------------------------------------------------------------------------------


def check_messages(value: Any, where: str, field_name: str) -> list[Message]:
    """A list of ``{role, content}`` dicts with known roles and string content; extra keys are dropped."""
    if not isinstance(value, list):
        raise DataError(
            f"{where}: field '{field_name}' must be a list of messages, found {type(value).__name__}; {MESSAGE_HINT}"
        )
    out: list[Message] = []
    for i, msg in enumerate(value):
        at = f"{where}: field '{field_name}' message {i}"
        if not isinstance(msg, dict):
            raise DataError(f"{at} must be a mapping, found {type(msg).__name__}: {msg!r:.80}; {MESSAGE_HINT}")
        missing = [k for k in ("role", "content") if k not in msg]
        if missing:
            raise DataError(
                f"{at} has no '{missing[0]}': expected keys role, content; found keys "
                f"{', '.join(map(str, msg)) or '(none)'}. {MESSAGE_HINT} (convert other chat styles, e.g. "
                "from/value, before loading or with a plugin)"
            )
        role, content = msg["role"], msg["content"]
        if role not in ROLES:
            raise DataError(f"{at} has unknown role {role!r}; roles are {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{at} ({role}) content must be a string, found {type(content).__name__}: {content!r:.80}")
        out.append({"role": role, "content": content})
    return out


def _roles(messages: Sequence[Message]) -> str:
    return ", ".join(m["role"] for m in messages) or "(none)"


def _check_alternation(messages: Sequence[Message], where: str, field_name: str, last: str) -> None:
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    if not body or [m["role"] for m in body] != expected or body[-1]["role"] != last:
        raise DataError(
            f"{where}: field '{field_name}' has roles out of order: found [{_roles(messages)}]; expected "
            f"{ORDER_HINT}, ending with {'a user' if last == 'user' else 'an assistant'} turn"
        )


def check_prompt_roles(prompt: Sequence[Message], where: str, field_name: str = "prompt") -> None:
    """A prompt: optional system, then user/assistant alternating, ending with a user turn."""
    _check_alternation(prompt, where, field_name, last="user")


def check_conversation_roles(messages: Sequence[Message], where: str, field_name: str = "messages") -> None:
    """An SFT conversation: optional system, then user/assistant alternating, ending with an assistant turn."""
    _check_alternation(messages, where, field_name, last="assistant")


def check_response(messages: Sequence[Message], where: str, field_name: str) -> None:
    """A response is exactly one assistant message."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise DataError(
            f"{where}: field '{field_name}' must be exactly one assistant message, found [{_roles(messages)}]; "
            "put earlier turns in the prompt"
        )


def check_preference_record(record: Any, where: str) -> PreferenceRecord:
    """Schema-check a record that did not come through format conversion (plugins, canonical JSONL)."""
    if not isinstance(record, PreferenceRecord):
        raise DataError(f"{where}: expected a PreferenceRecord, found {type(record).__name__}")
    record.prompt = check_messages(record.prompt, where, "prompt")
    record.chosen = check_messages(record.chosen, where, "chosen")
    record.rejected = check_messages(record.rejected, where, "rejected")
    check_prompt_roles(record.prompt, where)
    check_response(record.chosen, where, "chosen")
    check_response(record.rejected, where, "rejected")
    return record


def check_unpaired_record(record: Any, where: str) -> UnpairedRecord:
    """Schema-check an unpaired record that did not come through format conversion (plugins)."""
    if not isinstance(record, UnpairedRecord):
        raise DataError(f"{where}: expected an UnpairedRecord, found {type(record).__name__}")
    record.prompt = check_messages(record.prompt, where, "prompt")
    record.completion = check_messages(record.completion, where, "completion")
    check_prompt_roles(record.prompt, where)
    check_response(record.completion, where, "completion")
    if record.label is not None and not isinstance(record.label, bool):
        raise DataError(
            f"{where}: field 'label' must be true (desirable), false (undesirable) or null, found "
            f"{type(record.label).__name__}: {record.label!r:.60}"
        )
    return record


def check_sft_record(record: Any, where: str) -> SFTRecord:
    """Schema-check an SFT record that did not come through format conversion."""
    if not isinstance(record, SFTRecord):
        raise DataError(f"{where}: expected an SFTRecord, found {type(record).__name__}")
    record.messages = check_messages(record.messages, where, "messages")
    check_conversation_roles(record.messages, where)
    return record


# --- row filters (SKIP) ----------------------------------------------------------------------------------


def _blank(text: str) -> bool:
    return not text.strip()


def _last_user_blank(messages: Sequence[Message]) -> bool:
    users = [m for m in messages if m["role"] == "user"]
    return not users or _blank(users[-1]["content"])


def preference_skip_reason(record: PreferenceRecord) -> str | None:
    """Why a schema-valid preference record should be dropped (before dedupe), or None."""
    if _last_user_blank(record.prompt):
        return EMPTY_PROMPT
    replies = [m for m in record.prompt + record.chosen + record.rejected if m["role"] == "assistant"]
    if any(_blank(m["content"]) for m in replies):
        return EMPTY_RESPONSE
    if normalise_text(record.chosen[0]["content"]) == normalise_text(record.rejected[0]["content"]):
        return IDENTICAL_PAIR
    return None


def unpaired_skip_reason(record: UnpairedRecord) -> str | None:
    """Why a schema-valid unpaired record should be dropped (before dedupe), or None."""
    if _last_user_blank(record.prompt):
        return EMPTY_PROMPT
    if any(_blank(m["content"]) for m in record.prompt + record.completion if m["role"] == "assistant"):
        return EMPTY_RESPONSE
    if record.label is None and not any(v is not None for v in (record.annotations or {}).values()):
        return NO_LABEL
    return None


def sft_skip_reason(record: SFTRecord) -> str | None:
    """Why a schema-valid SFT record should be dropped (before dedupe), or None."""
    if any(_blank(m["content"]) for m in record.messages if m["role"] == "assistant"):
        return EMPTY_RESPONSE
    return None


def _dedupe_key(record: PreferenceRecord | SFTRecord | UnpairedRecord) -> str:
    """A digest of the whitespace-normalised record (a digest, so the seen-set stays small on big datasets)."""
    if isinstance(record, PreferenceRecord):
        text = "\x1d".join(render_normalised(m) for m in (record.prompt, record.chosen, record.rejected))
    elif isinstance(record, UnpairedRecord):
        # The label is part of the key: the same answer rated up by one user and down by another is two pieces of
        # feedback, not a duplicate.
        text = "\x1d".join([render_normalised(record.prompt), render_normalised(record.completion), str(record.label)])
    else:
        text = render_normalised(record.messages)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def filter_records(
    records: Iterable[PreferenceRecord | SFTRecord | UnpairedRecord | SkippedRow],
    ids: Iterable[str],
    report: DropReport,
    *,
    dedupe: bool,
    seen: set[str] | None = None,
) -> list[PreferenceRecord | SFTRecord | UnpairedRecord]:
    """Keep good records; count every row (records and ``SkippedRow`` results) in ``report``.

    ``ids`` gives each row's id (used for the examples of skipped rows). ``seen`` carries dedupe keys across
    calls so duplicates are found across sources.
    """
    seen = set() if seen is None else seen
    kept: list[PreferenceRecord | SFTRecord | UnpairedRecord] = []
    for item, row_id in zip(records, ids, strict=True):
        report.add_rows(1)
        if isinstance(item, SkippedRow):
            report.add_drop(item.reason, row_id)
            continue
        if isinstance(item, PreferenceRecord):
            reason = preference_skip_reason(item)
        elif isinstance(item, UnpairedRecord):
            reason = unpaired_skip_reason(item)
        else:
            reason = sft_skip_reason(item)
        if reason is None and dedupe:
            key = _dedupe_key(item)
            reason = DUPLICATE if key in seen else None
            seen.add(key)
        if reason is not None:
            report.add_drop(reason, row_id)
        else:
            kept.append(item)
    report.check()
    return kept


def drop_table(report: DropReport) -> str:
    """A plain-text table: reason, count, share of total, example ids."""
    lines = [f"  {'reason':<20} {'count':>6} {'share':>7}  examples"]
    for reason, count in sorted(report.dropped.items(), key=lambda kv: -kv[1]):
        share = count / report.total if report.total else 0.0
        ids = ", ".join(report.examples.get(reason, []))
        lines.append(f"  {reason:<20} {count:>6} {share:>7.1%}  {ids}")
    return "\n".join(lines)


def check_drop_fraction(report: DropReport, max_drop_fraction: float, what: str = "data") -> None:
    """Raise DataError when nothing is kept or more than ``max_drop_fraction`` of the rows were dropped."""
    report.check()
    fix = "Fix: clean the data, fix the column mapping (`columns:` in the recipe), or raise data.max_drop_fraction."
    if report.total == 0:
        raise DataError(f"{what}: no rows were read; check the path and that the file is not empty")
    if report.kept == 0:
        raise DataError(
            f"{what}: all {report.total} rows were dropped, nothing is left to train on.\n{drop_table(report)}\n{fix}"
        )
    share = report.n_dropped / report.total
    if share > max_drop_fraction:
        raise DataError(
            f"{what}: {report.n_dropped} of {report.total} rows dropped ({share:.1%}), more than "
            f"data.max_drop_fraction = {max_drop_fraction:.1%}.\n{drop_table(report)}\n{fix}"
        )
