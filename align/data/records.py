"""Canonical records every stage reads.

A preference record is TRL's conversational preference format plus provenance and labels:
``prompt`` is a list of ``{"role", "content"}`` messages ending with a user turn (an optional system message
first), ``chosen`` and ``rejected`` are one-message assistant lists.

Annotator labels are stored per annotator as a number in the orientation of the record *as read*:
positive = the ``chosen`` side is preferred, negative = the ``rejected`` side is preferred, ``0`` = tie,
``None`` = this annotator did not label the item. Pairwise labels use -1/0/1; ordinal scales keep their
value (e.g. -3..3). Aggregation (``align.data.prepare``) may swap a pair when the humans' majority prefers the
``rejected`` side; it then negates every label too (labels always refer to the record's current orientation) and
sets ``meta["flipped"] = True``.

An unpaired record is one response with a thumbs up or down (TRL's unpaired preference format, for KTO):
``completion`` is a one-message assistant list and ``label`` is True (desirable), False (undesirable) or None (not
given: the annotators' ratings decide it, ``align.data.prepare.prepare_unpaired``). Its annotations are each
annotator's rating of this one response (a score such as 1..5, or thumbs as +1/-1). A record made from a preference
pair (``data.unpair``) carries ``meta["pair_id"]`` and ``meta["pair_side"]`` (``"chosen"`` or ``"rejected"``) and the
pair's own labels as annotations (positive = the pair's ``chosen`` side preferred), so the pair's agreement gate can
decide both rows together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

Message = dict[str, str]

ROLES = ("system", "user", "assistant")


@dataclass
class PreferenceRecord:
    id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    source: str = ""
    margin: float | None = None
    annotations: dict[str, float | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreferenceRecord:
        return cls(
            id=str(d["id"]),
            prompt=list(d["prompt"]),
            chosen=list(d["chosen"]),
            rejected=list(d["rejected"]),
            source=d.get("source", "") or "",
            margin=d.get("margin"),
            annotations=d.get("annotations"),
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class SFTRecord:
    id: str
    messages: list[Message]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SFTRecord:
        return cls(
            id=str(d["id"]),
            messages=list(d["messages"]),
            source=d.get("source", "") or "",
            meta=dict(d.get("meta") or {}),
        )


@dataclass
class UnpairedRecord:
    id: str
    prompt: list[Message]
    completion: list[Message]
    label: bool | None
    source: str = ""
    annotations: dict[str, float | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnpairedRecord:
        return cls(
            id=str(d["id"]),
            prompt=list(d["prompt"]),
            completion=list(d["completion"]),
            label=d.get("label"),
            source=d.get("source", "") or "",
            annotations=d.get("annotations"),
            meta=dict(d.get("meta") or {}),
        )
