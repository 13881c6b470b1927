"""Data cards: facts counted by hand on a small fixture, human text kept across regeneration, stable hashes."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import pytest
import yaml

from align.cli import main
from align.commands.data import card_facts, resolve_target
from align.data.card import (
    HUMAN_SECTIONS,
    card_hash_for,
    facts_hash,
    length_stats,
    parse_card,
    size_category,
)

ROOT = Path(__file__).resolve().parents[2]


def _hh(*turns: str) -> str:
    """An hh-rlhf transcript from alternating human / assistant texts."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


# Six rows: p3 is an identical pair, p4 repeats p1 exactly, p5 shares p1's prompt with other replies.
ROWS = [
    {"id": "p1", "chosen": _hh("name a red fruit", "apple"), "rejected": _hh("name a red fruit", "a stone"),
     "rater_1": "chosen", "rater_2": "chosen", "rater_3": "rejected"},
    {"id": "p2", "chosen": _hh("hi there", "hello", "count to three", "one two three"),
     "rejected": _hh("hi there", "hello", "count to three", "no"),
     "rater_1": "chosen", "rater_2": "chosen", "rater_3": "chosen"},
    {"id": "p3", "chosen": _hh("say yes", "yes"), "rejected": _hh("say yes", "yes"),
     "rater_1": "tie", "rater_2": "tie", "rater_3": "tie"},
    {"id": "p4", "chosen": _hh("name a red fruit", "apple"), "rejected": _hh("name a red fruit", "a stone"),
     "rater_1": "chosen", "rater_2": "chosen", "rater_3": "rejected"},
    {"id": "p5", "chosen": _hh("name a red fruit", "a cherry"), "rejected": _hh("name a red fruit", "a banana"),
     "rater_1": "chosen", "rater_2": "tie", "rater_3": None},
    {"id": "p6", "chosen": _hh("what is two plus two", "four"), "rejected": _hh("what is two plus two", "five"),
     "rater_1": "rejected", "rater_2": "chosen", "rater_3": "chosen"},
]  # fmt: skip


class WordTokenizer:
    """One token per whitespace-separated word and no chat template, so lengths can be counted by hand."""

    chat_template = None

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        return {"input_ids": [[0] * len(t.split()) for t in texts]}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def small(tmp_path) -> Path:
    return _write(tmp_path / "small.jsonl", ROWS)


def _args(source: Path | str, **extra) -> argparse.Namespace:
    base = {"source": str(source), "format": "auto", "sft": False, "agreement_bootstrap": 0}
    return argparse.Namespace(**{**base, **extra})


def _facts(source: Path) -> dict:
    args = _args(source)
    return card_facts(args, resolve_target(args), tokenizer=(WordTokenizer(), "words"))


def _card(capsys, source: Path | str, out: Path, *extra: str) -> tuple[int, str]:
    code = main(["data", "card", str(source), "-o", str(out), "--agreement-bootstrap", "0", *extra])
    _, err = capsys.readouterr()
    return code, err


def test_facts_match_hand_counts_on_a_small_fixture(small):
    facts = _facts(small)
    assert facts["rows"]["in"] == 6 and facts["rows"]["kept"] == 4
    assert facts["rows"]["dropped"] == {"duplicate": 1, "identical_pair": 1}
    assert facts["rows"]["examples"] == {"duplicate": ["p4"], "identical_pair": ["p3"]}
    assert facts["turns"] == {"1": 3, "2": 1}  # p1, p5, p6 single-turn; p2 two user turns
    assert facts["duplicates"] == {"dropped_exact": 1, "prompts_repeated": 1, "records_sharing_a_prompt": 2}
    tokens = facts["tokens"]
    assert tokens["tokenizer"] == "words" and "no chat template" in tokens["prompt_rendering"]
    # prompt words: p1 4, p2 2+1+3, p5 4, p6 5 -> [4, 4, 5, 6]
    assert tokens["prompt"] == {"min": 4, "median": 4.5, "p90": 5.7, "max": 6, "mean": 4.8}
    assert (tokens["chosen"]["min"], tokens["chosen"]["max"]) == (1, 3)  # apple, one two three, a cherry, four
    assert (tokens["rejected"]["min"], tokens["rejected"]["max"]) == (1, 2)  # a stone, no, a banana, five
    assert tokens["chosen_vs_rejected"] == {"mean_ratio": round(7 / 6, 6), "chosen_longer": 1,
                                            "rejected_longer": 1, "equal": 2}  # fmt: skip
    split = facts["split"]
    assert split["train"] + split["eval"] == 4 and split["leakage"] == 0
    (source,) = facts["sources"]
    assert source["format"] == "hh-rlhf" and source["rows_read"] == 6 and source["kept"] == 4
    assert source["files"] == [{"path": str(small), "sha256": hashlib.sha256(small.read_bytes()).hexdigest()}]
    agreement = facts["agreement"]
    assert agreement["n_items"] == 4 and agreement["n_annotators"] == 3  # the four kept records
    labelled = {name: a["labelled"] for name, a in agreement["per_annotator"].items()}
    assert labelled == {"rater_1": 4, "rater_2": 4, "rater_3": 3}  # rater_3 skipped p5
    assert agreement["per_annotator"]["rater_3"]["labelled_share"] == 0.75
    json.dumps(facts, allow_nan=False)


def test_length_stats_of_an_even_and_an_empty_list():
    stats = length_stats([7, 1, 3, 5, 9, 11, 2, 4, 6, 8])
    # sorted 1..9 plus 11: median (5 + 6) / 2; p90 at position 8.1 between 9 and 11
    assert stats == {"min": 1, "median": 5.5, "p90": 9.2, "max": 11, "mean": 5.6}
    assert length_stats([]) == {"min": None, "median": None, "p90": None, "max": None, "mean": None}


def test_size_category_buckets():
    assert [size_category(n) for n in (0, 999, 1000, 9999, 10_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_new_card_has_placeholders_and_yaml_front_matter(capsys, small, tmp_path):
    code, err = _card(capsys, small, tmp_path / "cards", "--name", "small")
    assert code == 0
    md = (tmp_path / "cards" / "small.md").read_text()
    assert md.startswith("---\n")
    front = yaml.safe_load(md.split("---\n")[1])
    assert {"license", "language", "task_categories", "size_categories", "pretty_name", "tags"} <= set(front)
    assert front["size_categories"] == ["n<1K"] and front["pretty_name"] == "small"
    card = parse_card(md)
    assert list(card.sections) == [key for key, _, _ in HUMAN_SECTIONS]
    assert all(body.startswith("TODO: ") for body in card.sections.values())
    for heading in ("Motivation", "Composition", "Collection and annotation", "Preprocessing", "Uses"):
        assert f"\n## {heading}\n" in md
    assert "\n## Computed facts\n" in md and "rater_1" in md
    assert "fill in the human sections" in err


def test_regeneration_keeps_human_text_and_front_matter_edits(capsys, small, tmp_path):
    out = tmp_path / "cards"
    _card(capsys, small, out, "--name", "small")
    md_path = out / "small.md"
    text = md_path.read_text()
    mine = "We wrote these six rows by hand.\n\n- a list item\n- <b>inline html</b> and `code`"
    text = text.replace("TODO: why was this dataset made, by whom, and for which task?", mine).replace(
        "license: unknown", "license: cc-by-4.0"
    )
    extra = "## Extra\n\n<!-- human:extra_notes -->\nkeep me\n<!-- /human:extra_notes -->\n\n"
    text = text.replace("## Computed facts", extra + "## Computed facts")
    md_path.write_text(text)
    _card(capsys, small, out, "--name", "small")
    again = md_path.read_text()
    card = parse_card(again)
    assert card.sections["motivation"] == mine
    assert card.sections["extra_notes"] == "keep me"
    assert card.sections["uses"].startswith("TODO: ")
    assert card.front_matter["license"] == "cc-by-4.0"


def test_regeneration_is_byte_identical(capsys, small, tmp_path):
    out = tmp_path / "cards"
    _card(capsys, small, out, "--name", "small")
    md_path = out / "small.md"
    md_path.write_text(md_path.read_text().replace("TODO: who maintains", "Nobody. TODO: who maintains"))
    _card(capsys, small, out, "--name", "small")
    first = (md_path.read_bytes(), (out / "small.json").read_bytes())
    _card(capsys, small, out, "--name", "small")
    assert (md_path.read_bytes(), (out / "small.json").read_bytes()) == first


def test_card_hash_is_recorded_verifiable_and_changes_with_the_data(capsys, small, tmp_path):
    _card(capsys, small, tmp_path / "a", "--name", "small")
    stored = json.loads((tmp_path / "a" / "small.json").read_text())
    card_hash = stored.pop("card_hash")
    assert card_hash == facts_hash(stored)
    assert card_hash_for(tmp_path / "a" / "small.json") == card_hash_for(tmp_path / "a" / "small.md") == card_hash
    assert card_hash in (tmp_path / "a" / "small.md").read_text()

    changed = [dict(r) for r in ROWS]
    changed[5]["chosen"] = _hh("what is two plus two", "four, of course")
    _write(small, changed)
    _card(capsys, small, tmp_path / "b", "--name", "small")
    other = json.loads((tmp_path / "b" / "small.json").read_text())
    assert other["card_hash"] != card_hash
    assert other["content_sha256"] != stored["content_sha256"]
    assert other["sources"][0]["files"][0]["sha256"] != stored["sources"][0]["files"][0]["sha256"]


def test_card_hash_for_missing_or_edited_cards(tmp_path, caplog):
    assert card_hash_for(tmp_path / "nothing.json") is None
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({"a": 1, "card_hash": "0" * 64}))
    with caplog.at_level(logging.WARNING, logger="align.data.card"):
        assert card_hash_for(path) == facts_hash({"a": 1})
    assert "does not match" in caplog.text


def test_an_unclosed_human_section_stops_regeneration_without_losing_text(capsys, small, tmp_path):
    out = tmp_path / "cards"
    _card(capsys, small, out, "--name", "small")
    md_path = out / "small.md"
    broken = md_path.read_text().replace("<!-- /human:uses -->", "", 1)
    md_path.write_text(broken)
    code, err = _card(capsys, small, out, "--name", "small")
    assert code == 2 and "human section 'uses' has no closing marker" in err
    assert md_path.read_text() == broken


def test_card_name_must_be_a_plain_file_name(capsys, small, tmp_path):
    code, err = _card(capsys, small, tmp_path, "--name", "../escape")
    assert code == 2 and "plain file name" in err


def test_sft_card_has_response_lengths_and_no_agreement(capsys, tmp_path):
    code, _ = _card(capsys, ROOT / "tests" / "fixtures" / "data" / "sft_messages.jsonl", tmp_path, "--name", "sft")
    assert code == 0
    facts = json.loads((tmp_path / "sft.json").read_text())
    assert facts["kind"] == "sft" and facts["agreement"] is None
    assert {"prompt", "response", "conversation"} <= set(facts["tokens"]) and "chosen" not in facts["tokens"]
    assert "align.models.tiny_tokenizer()" in facts["tokens"]["tokenizer"]
    assert "The records carry no annotator labels." in (tmp_path / "sft.md").read_text()


def test_committed_bundled_cards_have_human_text_and_match_the_data():
    for name, source in (("bundled", "builtin:bundled"), ("bundled-sft", "builtin:bundled-sft")):
        md = ROOT / "data_cards" / f"{name}.md"
        facts = json.loads((ROOT / "data_cards" / f"{name}.json").read_text())
        card = parse_card(md.read_text())
        assert not [k for k, body in card.sections.items() if body.lstrip().startswith("TODO")], name
        assert facts["source"] == source and card_hash_for(md) == facts["card_hash"]
        assert card.front_matter["license"] == "apache-2.0"
        shas = [f["sha256"] for s in facts["sources"] for f in s["files"]]
        sample = ROOT / "align" / "data" / "samples" / ("prefs.jsonl" if name == "bundled" else "sft.jsonl")
        fix = f"the sample changed: regenerate the card with `align data card {source} --name {name}`"
        assert shas == [hashlib.sha256(sample.read_bytes()).hexdigest()], fix


def test_tokenizer_option_measures_with_that_model_and_names_it(capsys, small, tmp_path, tiny_model_dir):
    code, _ = _card(capsys, small, tmp_path / "tiny", "--name", "small")
    code_other, _ = _card(capsys, small, tmp_path / "model", "--name", "small", "--tokenizer", str(tiny_model_dir))
    assert code == code_other == 0
    default = json.loads((tmp_path / "tiny" / "small.json").read_text())["tokens"]
    chosen = json.loads((tmp_path / "model" / "small.json").read_text())["tokens"]
    assert chosen["tokenizer"] == str(tiny_model_dir)
    assert chosen["prompt"] == default["prompt"]  # builtin:tiny-llama ships the same committed tokenizer
