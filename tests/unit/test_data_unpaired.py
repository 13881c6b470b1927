"""Unpaired feedback (the kto stage's data): rows of one response with a thumbs up or down, every row kept or
counted by reason, one-paragraph errors naming the row, pairs unpaired on request and split by prompt, the agreement
gate on pairs and on single-response ratings, and the data card's label balance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from align.agreement import AgreementConfig
from align.data.card import build_card_facts, render_facts
from align.data.load import load_preferences, load_sft, load_unpaired
from align.data.prepare import prepare_unpaired
from align.data.spec import DataConfig, DataError
from align.data.split import count_leakage
from align.errors import AgreementGateError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _cfg(*sources, **kw) -> DataConfig:
    kw.setdefault("eval_fraction", 0.0)
    kw.setdefault("max_drop_fraction", 1.0)
    return DataConfig.from_dict({"sources": [s if isinstance(s, dict) else {"path": str(s)} for s in sources], **kw})


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one_paragraph(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text.strip() and "\n\n" not in text
    return text


# --- reading unpaired rows ------------------------------------------------------------------------------------


def test_unpaired_rows_are_kept_or_dropped_by_reason_and_every_row_is_counted():
    data = load_unpaired(_cfg(FIXTURES / "unpaired.jsonl"))
    report = data.report
    assert (report.total, report.kept) == (10, 6)
    assert report.dropped == {"empty_response": 1, "empty_prompt": 1, "duplicate": 1, "no_label": 1}
    assert report.examples == {
        "empty_response": ["u5"],
        "empty_prompt": ["u6"],
        "duplicate": ["u7"],
        "no_label": ["u9"],
    }
    assert report.kept + sum(report.dropped.values()) == report.total
    labels = {r.id: r.label for r in data.train}
    # true / false, "down", "yes", 1; the same answer rated down by someone else (u8) is feedback, not a duplicate
    assert labels == {"u1": True, "u2": False, "u3": False, "u4": True, "u8": False, "u10": True}
    u4 = next(r for r in data.train if r.id == "u4")
    assert [m["role"] for m in u4.prompt] == ["user", "assistant", "user"]
    assert u4.completion == [{"role": "assistant", "content": "7 is a prime number."}]


def test_an_unknown_label_is_one_paragraph_naming_the_row_and_the_accepted_values(tmp_path):
    f = _jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "q", "completion": "a", "label": True},
            {"id": "r2", "prompt": "q2", "completion": "b", "label": "maybe"},
        ],
    )
    with pytest.raises(DataError) as exc:
        load_unpaired(_cfg(f))
    text = _one_paragraph(exc)
    assert "row 1" in text and "'r2'" in text and "'maybe'" in text and "thumbs_up" in text


def test_a_row_without_a_label_column_or_ratings_is_an_error_naming_the_row_and_a_mapping(tmp_path):
    f = _jsonl(
        tmp_path / "d.jsonl", [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q2", "completion": "b"}]
    )
    with pytest.raises(DataError) as exc:
        load_unpaired(_cfg(f))
    text = _one_paragraph(exc)
    assert "row 1" in text and "missing field 'label'" in text and "columns: {label: <your column>}" in text


def test_column_mapping_reads_unpaired_rows_from_a_csv_with_its_own_column_names(tmp_path):
    f = tmp_path / "feedback.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer", "thumbs", "uid"])
        w.writerow(["What is 3 x 3?", "9", "up", "a"])
        w.writerow(["What is 3 x 3?", "6", "down", "b"])
    spec = {"path": str(f), "columns": {"prompt": "question", "completion": "answer", "label": "thumbs", "id": "uid"}}
    data = load_unpaired(_cfg(spec))
    assert [(r.id, r.prompt[-1]["content"], r.completion[0]["content"], r.label) for r in data.train] == [
        ("a", "What is 3 x 3?", "9", True),
        ("b", "What is 3 x 3?", "6", False),
    ]


def test_a_conversation_row_rates_its_last_assistant_turn(tmp_path):
    conv = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    data = load_unpaired(_cfg(_jsonl(tmp_path / "d.jsonl", [{"messages": conv, "label": False}])))
    (r,) = data.train
    assert r.prompt == conv[:3] and r.completion == conv[3:] and r.label is False


def test_pairs_given_to_the_unpaired_reader_without_unpair_are_an_error_naming_the_option():
    with pytest.raises(DataError) as exc:
        load_unpaired(_cfg(FIXTURES / "pairs_with_ids.jsonl"))
    assert "data.unpair: true" in _one_paragraph(exc)


def test_unpaired_feedback_is_refused_by_sft_and_explained_to_a_preference_stage():
    # SFT on prompt/completion/label rows would learn the thumbs-down answers as well as the good ones.
    with pytest.raises(DataError) as exc:
        load_sft(_cfg(FIXTURES / "unpaired.jsonl"))
    assert "undesirable completions" in _one_paragraph(exc) and "format: prompt-completion" in str(exc.value)
    with pytest.raises(DataError) as exc:
        load_preferences(_cfg(FIXTURES / "unpaired.jsonl"))
    assert "unpaired feedback" in _one_paragraph(exc) and "kto" in str(exc.value)


# --- pairs as unpaired rows -----------------------------------------------------------------------------------


def test_unpair_makes_each_pair_two_rows_chosen_true_rejected_false_and_counts_rows(tmp_path):
    rows = [
        {"id": "p1", "prompt": "q1", "chosen": "good", "rejected": "bad"},
        {"id": "p2", "prompt": "q2", "chosen": "same", "rejected": "same"},  # identical pair: both rows dropped
        {"id": "p3", "prompt": "q3", "chosen": "fine", "rejected": "worse"},
    ]
    data = load_unpaired(_cfg(_jsonl(tmp_path / "p.jsonl", rows), unpair=True))
    assert (data.report.total, data.report.kept, data.report.dropped) == (6, 4, {"identical_pair": 2})
    assert [(r.id, r.completion[0]["content"], r.label, r.meta["pair_side"]) for r in data.train] == [
        ("p1:chosen", "good", True, "chosen"),
        ("p1:rejected", "bad", False, "rejected"),
        ("p3:chosen", "fine", True, "chosen"),
        ("p3:rejected", "worse", False, "rejected"),
    ]
    assert data.sources[0]["unpaired_from_pairs"] is True


def test_unpair_given_to_a_pairs_or_sft_stage_is_an_error_pointing_at_the_kto_section():
    for loader in (load_preferences, load_sft):
        with pytest.raises(DataError) as exc:
            loader(_cfg(FIXTURES / "pairs_with_ids.jsonl", unpair=True))
        assert "kto: {data: {unpair: true}}" in _one_paragraph(exc)


def test_a_pairs_two_rows_never_straddle_train_and_eval():
    data = load_unpaired(_cfg({"path": "builtin:bundled", "max_rows": 120}, unpair=True, eval_fraction=0.5))
    assert data.train and data.eval
    train_pairs = {r.meta["pair_id"] for r in data.train}
    eval_pairs = {r.meta["pair_id"] for r in data.eval}
    assert not train_pairs & eval_pairs
    assert count_leakage(data.train, data.eval)["count"] == 0
    assert len(data.train) + len(data.eval) == data.report.kept


def test_annotated_pairs_are_voted_as_pairs_swapped_or_both_rows_dropped(tmp_path):
    rows = [
        {
            "id": "keep",
            "prompt": "q1",
            "chosen": "c1",
            "rejected": "r1",
            "rater_1": "A",
            "rater_2": "A",
            "rater_3": "B",
        },
        {
            "id": "flip",
            "prompt": "q2",
            "chosen": "c2",
            "rejected": "r2",
            "rater_1": "B",
            "rater_2": "B",
            "rater_3": "B",
        },
        {
            "id": "tie",
            "prompt": "q3",
            "chosen": "c3",
            "rejected": "r3",
            "rater_1": "A",
            "rater_2": "B",
            "rater_3": None,
        },
        {
            "id": "more",
            "prompt": "q4",
            "chosen": "c4",
            "rejected": "r4",
            "rater_1": "A",
            "rater_2": "A",
            "rater_3": "A",
        },
    ]
    prepared = prepare_unpaired(_cfg(_jsonl(tmp_path / "p.jsonl", rows), unpair=True), AgreementConfig(bootstrap=0))
    labels = {r.id: r.label for r in prepared.train}
    assert labels == {
        "keep:chosen": True,
        "keep:rejected": False,
        "flip:chosen": False,  # every annotator preferred the side read as rejected
        "flip:rejected": True,
        "more:chosen": True,
        "more:rejected": False,
    }
    assert prepared.report.dropped == {"tie": 2} and prepared.report.total == 8
    assert prepared.agreement["items"] == "pairs" and prepared.agreement["n_items"] == 4


# --- single-response ratings ----------------------------------------------------------------------------------

RATED = [  # 1..5 scores from three annotators; threshold 3
    {"id": "good", "prompt": "q1", "completion": "a1", "rater_1": 5, "rater_2": 4, "rater_3": 5},
    {"id": "bad", "prompt": "q2", "completion": "a2", "rater_1": 1, "rater_2": 2, "rater_3": 1},
    {"id": "split", "prompt": "q3", "completion": "a3", "rater_1": 3, "rater_2": 3, "rater_3": 2},
    {"id": "says_up", "prompt": "q4", "completion": "a4", "label": True, "rater_1": 2, "rater_2": 1, "rater_3": 2},
    {"id": "unrated", "prompt": "q5", "completion": "a5", "label": True},
]


def test_rated_rows_take_the_aggregate_label_and_a_tie_is_a_counted_drop(tmp_path):
    f = _jsonl(tmp_path / "r.jsonl", RATED)
    cfg = AgreementConfig(rating_threshold=3, level="interval", metric="krippendorff_alpha", bootstrap=0)
    prepared = prepare_unpaired(_cfg(f), cfg)
    assert {r.id: r.label for r in prepared.train} == {"good": True, "bad": False, "says_up": False, "unrated": True}
    assert prepared.report.dropped == {"tie": 1} and prepared.report.examples["tie"] == ["split"]
    says_up = next(r for r in prepared.train if r.id == "says_up")
    assert says_up.meta["relabelled"] is True  # the raters' aggregate overrules the row's own thumbs up
    assert prepared.agreement["items"] == "responses" and prepared.agreement["rating_threshold"] == 3
    assert prepared.agreement["labels"] == [1, 2, 3, 4, 5] and prepared.agreement["alpha_level"] == "interval"
    # With the mean the 3, 3, 2 row is below the threshold instead of a tie.
    prepared = prepare_unpaired(_cfg(f), AgreementConfig(rating_threshold=3, rating_label="mean", bootstrap=0))
    assert {r.id: r.label for r in prepared.train}["split"] is False and not prepared.report.dropped


def test_rated_rows_without_an_agreement_section_are_an_error_asking_for_one(tmp_path):
    rows = [{"prompt": "q", "completion": "a", "rater_1": "up", "rater_2": "down"}]
    with pytest.raises(DataError) as exc:
        prepare_unpaired(_cfg(_jsonl(tmp_path / "r.jsonl", rows)), None)
    assert "agreement" in _one_paragraph(exc) and "rating_threshold" in str(exc.value)


def test_the_rating_gate_stops_the_run_when_the_raters_disagree(tmp_path):
    rows = [
        {"prompt": f"q{i}", "completion": "a", "rater_1": up, "rater_2": down}
        for i, (up, down) in enumerate([("up", "down"), ("down", "up"), ("up", "down"), ("up", "up"), ("down", "up")])
    ]
    cfg = AgreementConfig(metric="krippendorff_alpha", min=0.4, on_fail="error", bootstrap=0)
    with pytest.raises(AgreementGateError, match="krippendorff_alpha"):
        prepare_unpaired(_cfg(_jsonl(tmp_path / "r.jsonl", rows)), cfg)


# --- the data card --------------------------------------------------------------------------------------------


def test_the_unpaired_data_card_shows_label_balance_per_split():
    cfg = _cfg({"path": "builtin:bundled", "max_rows": 40}, unpair=True, eval_fraction=0.25)
    prepared = prepare_unpaired(cfg, None)
    facts = build_card_facts(
        "kto",
        kind="unpaired",
        train=prepared.train,
        eval_records=prepared.eval,
        report=prepared.report,
        sources=prepared.sources,
        leakage=prepared.leakage,
        settings={"unpair": True},
    )
    labels = facts["labels"]
    assert labels["all"] == {"desirable": 40, "undesirable": 40, "desirable_share": 0.5}
    assert labels["train"]["desirable"] + labels["eval"]["desirable"] == 40
    assert labels["train"]["desirable"] == labels["train"]["undesirable"]  # a pair's rows share a split
    assert {"desirable", "undesirable"} <= set(facts["tokens"])
    text = render_facts(facts, "0" * 64)
    assert "### Label balance" in text and "| all | 40 | 40 | 0.500 |" in text


# --- `align data` on unpaired feedback ------------------------------------------------------------------------


def test_align_data_validates_inspects_and_cards_unpaired_feedback(capsys, tmp_path):
    from align.cli import main

    assert main(["data", "validate", str(FIXTURES / "unpaired.jsonl"), "--json", "--max-drop-fraction", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kept"] + sum(report["dropped"].values()) == report["total"] == 10 and report["kept"] == 6

    assert main(["data", "inspect", str(FIXTURES / "unpaired.jsonl"), "--max-drop-fraction", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "unpaired data" in out and "       up: Put it in boiling water" in out and "     down: Eggs" in out

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "kto.yaml"  # bundled pairs, data.unpair
    assert main(["data", "card", str(recipe), "-o", str(tmp_path), "--name", "kto"]) == 0
    facts = json.loads((tmp_path / "kto.json").read_text())
    assert facts["kind"] == "unpaired" and facts["labels"]["all"]["desirable"] == facts["labels"]["all"]["undesirable"]
    assert facts["agreement"]["n_items"] > 0 and facts["rows"]["in"] == 64  # 32 pairs read as 64 rows
    assert "### Label balance" in (tmp_path / "kto.md").read_text()
