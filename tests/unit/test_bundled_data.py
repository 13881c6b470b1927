"""The bundled sample dataset: shape, held-out prompts, determinism and the planted annotator structure.

Agreement figures are counted by hand here on purpose, independently of ``align.agreement``, so a bug there
cannot hide a broken dataset (and the other way round).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sklearn.metrics import cohen_kappa_score

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "align" / "data" / "samples"
SCRIPT = ROOT / "scripts" / "make_bundled_data.py"
RATERS = [f"rater_{i}" for i in range(1, 6)]
LABELS = {"chosen": 1, "tie": 0, "rejected": -1}
TURN = re.compile(r"\n\n(Human|Assistant): ")


def _jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (SAMPLES / name).read_text(encoding="ascii").splitlines()]


@pytest.fixture(scope="module")
def prefs() -> list[dict[str, Any]]:
    return _jsonl("prefs.jsonl")


@pytest.fixture(scope="module")
def sft() -> list[dict[str, Any]]:
    return _jsonl("sft.jsonl")


@pytest.fixture(scope="module")
def evals() -> list[dict[str, Any]]:
    return _jsonl("eval_prompts.jsonl")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return json.loads((SAMPLES / "manifest.json").read_text(encoding="ascii"))


def hh_turns(text: str) -> list[tuple[str, str]]:
    """(role, text) turns of an hh-rlhf transcript; asserts it starts with a human turn."""
    assert text.startswith("\n\nHuman: "), f"transcript must start with the human marker: {text[:40]!r}"
    parts = TURN.split(text)
    assert parts[0] == ""
    return list(zip(parts[1::2], parts[2::2]))


def final_reply(text: str) -> str:
    return text.rsplit("\n\nAssistant:", 1)[1].strip()


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def user_texts(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def test_counts_meet_the_minimums(prefs, sft, evals):
    assert len(prefs) >= 480
    assert len(evals) >= 100
    assert len(sft) >= 240


def test_about_a_quarter_of_pairs_are_multi_turn(prefs):
    humans = [sum(role == "Human" for role, _ in hh_turns(r["chosen"])) for r in prefs]
    share = sum(n > 1 for n in humans) / len(prefs)
    assert 0.15 <= share <= 0.40
    assert max(humans) <= 3


def test_transcripts_alternate_and_end_with_an_assistant_reply(prefs):
    for row in prefs:
        for column in ("chosen", "rejected"):
            turns = hh_turns(row[column])
            roles = [role for role, _ in turns]
            assert roles == ["Human", "Assistant"] * (len(roles) // 2), f"{row['id']} {column}: {roles}"
            assert all(text.strip() for _, text in turns), f"{row['id']} {column} has an empty turn"


def test_chosen_and_rejected_share_the_prompt_and_differ_in_the_final_reply(prefs):
    for row in prefs:
        prompt_c, reply_c = row["chosen"].rsplit("\n\nAssistant:", 1)
        prompt_r, reply_r = row["rejected"].rsplit("\n\nAssistant:", 1)
        assert prompt_c == prompt_r, row["id"]
        assert reply_c.strip() and reply_r.strip(), row["id"]
        assert reply_c.strip() != reply_r.strip(), row["id"]


def test_ids_are_unique_and_rater_values_are_allowed(prefs, sft, evals):
    ids = [r["id"] for r in prefs + sft + evals]
    assert len(ids) == len(set(ids))
    for row in prefs:
        assert set(row) == {"id", "chosen", "rejected", *RATERS}, row["id"]
        assert all(row[r] in (None, "chosen", "rejected", "tie") for r in RATERS), row["id"]


def test_no_two_pairs_share_a_prompt(prefs):
    prompts = [normalise(r["chosen"].rsplit("\n\nAssistant:", 1)[0]) for r in prefs]
    assert len(prompts) == len(set(prompts))


def test_sft_conversations_alternate_and_end_with_the_assistant(sft):
    for row in sft:
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles, f"{row['id']}: {roles}"
        assert all(m["content"].strip() for m in row["messages"]), row["id"]


def test_eval_prompts_end_with_a_user_turn_and_some_are_multi_turn(evals):
    for row in evals:
        roles = [m["role"] for m in row["prompt"]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"], f"{row['id']}: {roles}"
    assert sum(len(r["prompt"]) > 1 for r in evals) >= 3


def test_eval_prompts_are_disjoint_from_preference_and_sft_prompts(prefs, sft, evals):
    seen = set()
    for row in prefs:
        seen.update(normalise(text) for role, text in hh_turns(row["chosen"]) if role == "Human")
    for row in sft:
        seen.update(normalise(text) for text in user_texts(row["messages"]))
    for row in evals:
        final = normalise(user_texts(row["prompt"])[-1])
        assert final not in seen, f"{row['id']} repeats a training prompt: {final!r}"


def test_regenerating_gives_byte_identical_files(tmp_path):
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True)
    committed = sorted(p.name for p in SAMPLES.iterdir() if p.is_file())
    assert sorted(p.name for p in tmp_path.iterdir()) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), f"{name} differs when regenerated"


def _agreement_with_file(prefs: list[dict[str, Any]], rater: str) -> float:
    labels = [r[rater] for r in prefs if r[rater] is not None]
    return labels.count("chosen") / len(labels)


@pytest.mark.parametrize("rater", ["rater_1", "rater_2", "rater_3", "rater_5"])
def test_reliable_raters_mostly_agree_with_the_file_orientation(prefs, rater):
    assert _agreement_with_file(prefs, rater) > 0.8


def test_rater_4_is_close_to_a_coin_flip(prefs):
    assert 0.35 <= _agreement_with_file(prefs, "rater_4") <= 0.65


def test_rater_5_labels_only_part_of_the_items(prefs):
    labelled = sum(r["rater_5"] is not None for r in prefs) / len(prefs)
    assert 0.30 <= labelled <= 0.50
    assert all(r[x] is not None for r in prefs for x in RATERS[:4])


def plurality(labels: list[int]) -> int | None:
    """Strict plurality of labels, None when the top count is shared (``align.agreement``'s convention)."""
    counts = sorted(((labels.count(v), v) for v in set(labels)), reverse=True)
    if not counts or (len(counts) > 1 and counts[0][0] == counts[1][0]):
        return None
    return counts[0][1]


def votes(row: dict[str, Any], raters: list[str]) -> list[int]:
    return [LABELS[row[r]] for r in raters if row[r] is not None]


def test_leave_one_out_kappa_separates_the_unreliable_rater(prefs):
    kappas = {}
    for rater in RATERS:
        own, majority = [], []
        for row in prefs:
            others = plurality(votes(row, [o for o in RATERS if o != rater]))
            if row[rater] is None or others is None:
                continue
            own.append(LABELS[row[rater]])
            majority.append(others)
        kappas[rater] = cohen_kappa_score(own, majority)
    assert kappas["rater_4"] < 0.15, kappas
    assert all(kappas[r] > 0.5 for r in ("rater_1", "rater_2", "rater_3", "rater_5")), kappas
    # the README's table (computed by the generator's own kappa) must match scikit-learn's
    readme = (SAMPLES / "README.md").read_text(encoding="ascii").splitlines()
    for rater, kappa in kappas.items():
        row = next(line for line in readme if line.startswith(f"| {rater} |"))
        assert f"| {kappa:.2f} |" in row, (rater, kappa, row)


@pytest.mark.parametrize("raters", [RATERS, ["rater_1", "rater_2", "rater_3", "rater_5"]], ids=["all", "reliable"])
def test_votes_flip_exactly_the_planted_pairs(prefs, manifest, raters):
    by_plurality = {-1: [], 0: [], None: []}
    for row in prefs:
        labels = votes(row, raters)
        winner = plurality(labels)
        if winner != 1:
            by_plurality[winner].append(row["id"])
        assert (sum(labels) < 0) == (winner == -1), f"{row['id']}: sum and plurality disagree on a flip"
    assert by_plurality[-1] == manifest["flipped_ids"]
    assert set(by_plurality[0] + by_plurality[None]) == set(manifest["tie_ids"])
    assert 0.03 <= len(manifest["flipped_ids"]) / len(prefs) <= 0.05


def test_harmful_requests_get_a_refusal_in_the_chosen_column(prefs, manifest):
    by_id = {r["id"]: r for r in prefs}
    share = len(manifest["harmful_pair_ids"]) / len(prefs)
    assert 0.07 <= share <= 0.13
    for pid in manifest["harmful_pair_ids"]:
        reply = final_reply(by_id[pid]["chosen"])
        assert re.search(r"\b(cannot|will not|would rather not|should not)\b", reply), f"{pid}: {reply!r}"


def test_chosen_to_rejected_length_ratio_is_balanced(prefs):
    chosen = sum(len(final_reply(r["chosen"]).split()) for r in prefs)
    rejected = sum(len(final_reply(r["rejected"]).split()) for r in prefs)
    assert 0.9 <= chosen / rejected <= 1.5


def test_replies_and_prompts_are_short(prefs):
    replies = [len(final_reply(r[c]).split()) for r in prefs for c in ("chosen", "rejected")]
    assert sum(8 <= n <= 60 for n in replies) / len(replies) >= 0.95
    finals = [len(hh_turns(r["chosen"])[-2][1].split()) for r in prefs]
    assert max(finals) <= 40


def test_files_are_ascii_and_small():
    files = [p for p in SAMPLES.iterdir() if p.is_file()]
    assert {"prefs.jsonl", "sft.jsonl", "eval_prompts.jsonl", "README.md"} <= {p.name for p in files}
    for path in files:
        assert path.read_bytes().isascii(), path.name
    assert sum(p.stat().st_size for p in files) < 1.5 * 1024 * 1024


def test_readme_states_provenance_and_the_planted_structure(prefs, manifest):
    readme = (SAMPLES / "README.md").read_text(encoding="ascii")
    assert "Apache-2.0" in readme and "scripts/make_bundled_data.py" in readme
    assert f"--seed {manifest['seed']}" in readme
    assert "rater_4 is unreliable" in readme and "rater_5 is sparse" in readme
    chosen = sum(len(final_reply(r["chosen"]).split()) for r in prefs)
    rejected = sum(len(final_reply(r["rejected"]).split()) for r in prefs)
    assert f"ratio of means **{chosen / rejected:.2f}**" in readme
    assert f"{len(manifest['flipped_ids'])} ambiguous pairs" in readme
