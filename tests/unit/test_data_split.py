"""Prompt-hash splits and leakage between user-given train and eval sources."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from align.data.load import load_preferences, load_sft
from align.data.records import PreferenceRecord, SFTRecord
from align.data.spec import DataConfig, DataError
from align.data.split import count_leakage, prompt_key, split_by_prompt


def _pair(rid: str, prompt: str, chosen: str = "Yes.", rejected: str = "No.") -> PreferenceRecord:
    return PreferenceRecord(
        id=rid,
        prompt=[{"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
    )


def _records(n: int, start: int = 0) -> list[PreferenceRecord]:
    return [_pair(f"r{i}", f"Question number {i}?") for i in range(start, start + n)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_key_ignores_whitespace_but_not_roles_or_words():
    base = [{"role": "user", "content": "Name a  river.\n"}]
    assert prompt_key(base) == prompt_key([{"role": "user", "content": " Name a river."}])
    assert prompt_key(base) != prompt_key([{"role": "system", "content": "Name a river."}])
    assert prompt_key(base) != prompt_key([{"role": "user", "content": "Name a lake."}])
    assert len(prompt_key(base)) == 64


def test_split_is_deterministic_and_about_the_requested_fraction():
    records = _records(2000)
    train, held_out = split_by_prompt(records, 0.1, seed=0)
    again_train, again_eval = split_by_prompt(records, 0.1, seed=0)
    assert [r.id for r in held_out] == [r.id for r in again_eval] and len(train) == len(again_train)
    assert len(train) + len(held_out) == 2000
    assert 150 <= len(held_out) <= 250  # binomial(2000, 0.1): mean 200, sd ~13
    _, other_seed = split_by_prompt(records, 0.1, seed=1)
    assert {r.id for r in other_seed} != {r.id for r in held_out}


def test_every_record_with_the_same_prompt_lands_on_the_same_side():
    records = [_pair(f"{p}-{k}", f"Shared prompt {p}", chosen=f"Answer {k}.") for p in range(200) for k in range(3)]
    train, held_out = split_by_prompt(records, 0.3, seed=7)
    assert held_out and train
    train_prompts = {r.prompt[0]["content"] for r in train}
    assert not any(r.prompt[0]["content"] in train_prompts for r in held_out)
    assert count_leakage(train, held_out) == {"count": 0, "examples": []}


def test_adding_rows_never_moves_existing_records():
    old = _records(300)
    _, old_eval = split_by_prompt(old, 0.2, seed=5)
    _, new_eval = split_by_prompt(_records(200, start=300) + old[::-1], 0.2, seed=5)
    old_ids = {r.id for r in old}
    assert {r.id for r in new_eval if r.id in old_ids} == {r.id for r in old_eval}


def test_zero_eval_fraction_keeps_everything_in_train():
    train, held_out = split_by_prompt(_records(50), 0.0, seed=0)
    assert len(train) == 50 and held_out == []


def test_sft_records_split_by_the_conversation_before_the_last_reply():
    def conv(rid: str, reply: str) -> SFTRecord:
        return SFTRecord(rid, [{"role": "user", "content": "Same question"}, {"role": "assistant", "content": reply}])

    train, held_out = split_by_prompt([conv(str(i), f"Reply {i}") for i in range(20)], 0.5, seed=0)
    assert len(train) in (0, 20) and len(train) + len(held_out) == 20


def test_count_leakage_counts_distinct_shared_prompts_with_examples():
    train = [_pair("t1", "Alpha?"), _pair("t2", "Beta?"), _pair("t3", "Alpha?", chosen="Other.")]
    held_out = [_pair("e1", " Alpha? "), _pair("e2", "Gamma?"), _pair("e3", "Alpha?", chosen="More.")]
    leakage = count_leakage(train, held_out)
    assert leakage["count"] == 1
    assert leakage["examples"] == [{"train_id": "t1", "eval_id": "e1", "prompt": "Alpha?"}]


def test_load_without_eval_sources_splits_by_prompt_hash(tmp_path):
    rows = [{"prompt": f"Prompt {i // 2}", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(200)]
    path = _write_jsonl(tmp_path / "p.jsonl", rows)
    data = load_preferences(DataConfig.from_dict({"sources": [{"path": str(path)}], "eval_fraction": 0.25}))
    assert data.eval and data.train and len(data.train) + len(data.eval) == 200
    assert data.leakage["count"] == 0
    assert {r.prompt[0]["content"] for r in data.train}.isdisjoint({r.prompt[0]["content"] for r in data.eval})


def _leaky_sources(tmp_path: Path) -> dict:
    train = _write_jsonl(
        tmp_path / "train.jsonl", [{"prompt": f"Train {i}", "chosen": "A.", "rejected": "B."} for i in range(10)]
    )
    held_out = _write_jsonl(
        tmp_path / "heldout.jsonl",
        [
            {"prompt": "Train 3", "chosen": "C.", "rejected": "D."},
            {"prompt": "Eval only", "chosen": "E.", "rejected": "F."},
            {"prompt": " Train  7", "chosen": "G.", "rejected": "H."},
        ],
    )
    return {"sources": [{"path": str(train)}], "eval_sources": [{"path": str(held_out)}]}


def test_user_eval_sources_with_shared_prompts_raise_by_default(tmp_path):
    with pytest.raises(DataError) as err:
        load_preferences(DataConfig.from_dict(_leaky_sources(tmp_path)))
    message = str(err.value)
    assert "2 eval prompt(s) also appear in the training sources" in message
    assert "eval 'heldout-0' = train 'train-3'" in message and "data.leakage: warn" in message


def test_user_eval_sources_with_leakage_warn_continues_and_counts(tmp_path, caplog):
    cfg = DataConfig.from_dict({**_leaky_sources(tmp_path), "leakage": "warn"})
    with caplog.at_level(logging.WARNING, logger="align.data.load"):
        data = load_preferences(cfg)
    assert data.leakage["count"] == 2
    assert [e["eval_id"] for e in data.leakage["examples"]] == ["heldout-0", "heldout-2"]
    assert len(data.train) == 10 and len(data.eval) == 3
    assert "also appear in the training sources" in caplog.text
    assert [s["role"] for s in data.sources] == ["train", "eval"]
    assert data.report.total == 13 and data.report.kept == 13


def test_sft_load_with_eval_sources_uses_them_as_the_eval_split(tmp_path):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    train = _write_jsonl(tmp_path / "a.jsonl", [{"messages": conv}])
    held_out = _write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "Yo"}, conv[1]]}])
    data = load_sft(
        DataConfig.from_dict({"sources": [{"path": str(train)}], "eval_sources": [{"path": str(held_out)}]})
    )
    assert [r.id for r in data.train] == ["a-0"] and [r.id for r in data.eval] == ["b-0"]
    assert data.leakage == {"count": 0, "examples": []}
