"""Train/eval split by prompt hash, and leakage counting.

A record's side depends only on its own prompt and the seed, so every record with the same prompt lands on
the same side and adding rows never moves existing ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from align.data.records import Message, PreferenceRecord, SFTRecord, UnpairedRecord

Record = PreferenceRecord | SFTRecord | UnpairedRecord


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def render_normalised(messages: Sequence[Message]) -> str:
    """A canonical text rendering of messages: roles plus whitespace-collapsed content."""
    return "\x1e".join(f"{m['role']}\x1f{normalise_text(m['content'])}" for m in messages)


def prompt_key(prompt_messages: Sequence[Message]) -> str:
    """sha256 hex of the normalised prompt: equal for prompts that differ only in whitespace."""
    return hashlib.sha256(render_normalised(prompt_messages).encode("utf-8")).hexdigest()


def record_prompt(record: Record) -> list[Message]:
    """The prompt of a record: a preference or unpaired record's prompt, or an SFT conversation before its last
    reply. The rows an unpaired pair makes share their pair's prompt, so both land on the same side."""
    if isinstance(record, (PreferenceRecord, UnpairedRecord)):
        return record.prompt
    return record.messages[:-1]


def _eval_side(key: str, eval_fraction: float, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def split_by_prompt(records: Sequence[Record], eval_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split into (train, eval), about ``eval_fraction`` of prompts in eval, deterministic in ``seed``."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), found {eval_fraction!r}")
    train: list[Record] = []
    held_out: list[Record] = []
    for record in records:
        side = held_out if _eval_side(prompt_key(record_prompt(record)), eval_fraction, seed) else train
        side.append(record)
    return train, held_out


def count_leakage(train: Sequence[Record], eval_records: Sequence[Record], max_examples: int = 5) -> dict[str, Any]:
    """Prompts present in both splits: ``{"count": distinct prompts, "examples": [{train_id, eval_id, prompt}]}``."""
    train_ids: dict[str, str] = {}
    for record in train:
        train_ids.setdefault(prompt_key(record_prompt(record)), record.id)
    seen: set[str] = set()
    examples: list[dict[str, str]] = []
    for record in eval_records:
        prompt = record_prompt(record)
        key = prompt_key(prompt)
        if key in train_ids and key not in seen:
            seen.add(key)
            if len(examples) < max_examples:
                last_user = next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
                examples.append(
                    {"train_id": train_ids[key], "eval_id": record.id, "prompt": normalise_text(last_user)[:80]}
                )
    return {"count": len(seen), "examples": examples}
