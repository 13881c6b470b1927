"""Format detection and conversion: turn-level prompt splits, schema errors naming the row, counted skips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.data.formats import detect_format, label_value, parse_hh_transcript, split_at_turns
from align.data.load import load_preferences, load_sft, read_records_jsonl, write_records_jsonl
from align.data.records import PreferenceRecord, SFTRecord
from align.data.spec import DEFAULT_LABELS, DataConfig, DataError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
FAULT_CASES = [json.loads(line) for line in (FIXTURES / "fault_rows.jsonl").read_text().splitlines()]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(*sources, **kw) -> DataConfig:
    kw.setdefault("eval_fraction", 0.0)
    return DataConfig.from_dict({"sources": [s if isinstance(s, dict) else {"path": str(s)} for s in sources], **kw})


def _u(text: str) -> dict:
    return {"role": "user", "content": text}


def _a(text: str) -> dict:
    return {"role": "assistant", "content": text}


# --- hh-rlhf ----------------------------------------------------------------------------------------------


def test_hh_rlhf_splits_blue_black_at_the_turn_not_the_character():
    # TRL's character common prefix would give a prompt ending in "...Assistant: bl" and replies "ue" / "ack".
    chosen = parse_hh_transcript("\n\nHuman: What colour is the sky?\n\nAssistant: blue", "t", "chosen")
    rejected = parse_hh_transcript("\n\nHuman: What colour is the sky?\n\nAssistant: black", "t", "rejected")
    prompt, c, r = split_at_turns(chosen, rejected)
    assert prompt == [_u("What colour is the sky?")]
    assert c == [_a("blue")] and r == [_a("black")]


def test_hh_rlhf_fixture_keeps_the_blue_black_row_with_whole_replies():
    data = load_preferences(_cfg(FIXTURES / "hh_rlhf.jsonl", max_drop_fraction=0.5))
    sky = next(r for r in data.train if "sky" in r.prompt[-1]["content"])
    assert sky.id == "hh_rlhf-1"
    assert sky.prompt == [_u("What colour is a clear daytime sky?")]
    assert sky.chosen == [_a("blue")] and sky.rejected == [_a("black")]


def test_hh_rlhf_fixture_counts_every_row_and_names_the_drops():
    data = load_preferences(_cfg(FIXTURES / "hh_rlhf.jsonl", max_drop_fraction=0.5))
    report = data.report
    assert report.total == 12
    assert report.kept + sum(report.dropped.values()) == report.total
    assert report.kept == len(data.train) + len(data.eval) == 9
    assert report.dropped == {"prompt_mismatch": 1, "empty_response": 1, "identical_pair": 1}
    assert report.examples == {
        "prompt_mismatch": ["hh_rlhf-8"],
        "empty_response": ["hh_rlhf-9"],
        "identical_pair": ["hh_rlhf-10"],
    }
    assert data.sources[0]["format"] == "hh-rlhf"


def test_hh_rlhf_multi_turn_prompt_is_every_turn_before_the_final_reply():
    data = load_preferences(_cfg(FIXTURES / "hh_rlhf.jsonl", max_drop_fraction=0.5))
    walk = next(r for r in data.train if r.id == "hh_rlhf-5")
    assert [m["role"] for m in walk.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert walk.prompt[-1] == _u("Is that long?")
    assert walk.chosen == [_a("About three kilometres, so under an hour at an easy pace.")]
    assert walk.rejected == [_a("Yes.")]


def test_hh_rlhf_strips_the_space_after_the_colon_and_surrounding_whitespace():
    messages = parse_hh_transcript("\n\nHuman:   hi there \n\nAssistant: hello\n", "t", "chosen")
    assert messages == [_u("hi there"), _a("hello")]


def test_hh_rlhf_text_before_the_first_turn_is_an_error():
    with pytest.raises(DataError, match="text before its first Human"):
        parse_hh_transcript("Preamble\n\nHuman: hi\n\nAssistant: yo", "row 3", "chosen")


def test_hh_rlhf_serves_sft_with_the_chosen_transcript():
    data = load_sft(_cfg(FIXTURES / "hh_rlhf.jsonl", max_drop_fraction=0.5))
    bread = next(r for r in data.train if r.id == "hh_rlhf-2")
    assert isinstance(bread, SFTRecord)
    assert bread.messages[-1]["content"].startswith("Then soda bread works well")
    # the rows dropped for preference training (prompt mismatch, empty rejected, identical pair) all have a
    # good chosen transcript, which is all SFT uses
    assert data.report.to_dict() == {"total": 12, "kept": 12, "dropped": {}, "examples": {}}


# --- one fixture row per fault case --------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in FAULT_CASES if c["expect"] == "error"], ids=lambda c: c["case"])
def test_schema_fault_raises_naming_the_bad_row(tmp_path, case):
    path = _write_jsonl(tmp_path / "faults.jsonl", case["rows"])
    with pytest.raises(DataError) as err:
        load_preferences(_cfg(path))
    message = str(err.value)
    assert case["match"] in message
    assert "source 'faults' row 1 (faults.jsonl line 2" in message


@pytest.mark.parametrize("case", [c for c in FAULT_CASES if c["expect"] == "skip"], ids=lambda c: c["case"])
def test_bad_row_is_skipped_with_its_reason(tmp_path, case):
    path = _write_jsonl(tmp_path / "faults.jsonl", case["rows"])
    data = load_preferences(_cfg(path, max_drop_fraction=0.5))
    assert data.report.to_dict() == {
        "total": 2,
        "kept": 1,
        "dropped": {case["match"]: 1},
        "examples": {case["match"]: ["faults-1"]},
    }
    assert [r.id for r in data.train] == ["faults-0"]


def test_missing_field_error_shows_expected_and_found_keys_and_a_mapping_example(tmp_path):
    path = _write_jsonl(tmp_path / "qa.jsonl", [{"question": "Name a fish.", "good": "Cod.", "bad": "Crab."}])
    with pytest.raises(DataError) as err:
        load_preferences(_cfg({"path": str(path), "format": "pcr"}))
    message = str(err.value)
    assert "missing field 'prompt'" in message
    assert "expected keys: prompt, chosen, rejected" in message and "found keys: question, good, bad" in message
    assert "columns: {prompt: question, chosen: good, rejected: bad}" in message


def test_undetectable_format_lists_found_columns_and_every_format(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [{"text": "hello", "label": 1}])
    with pytest.raises(DataError) as err:
        load_preferences(_cfg(path))
    message = str(err.value)
    assert "cannot detect the format of source 'odd'" in message and "found columns: text, label" in message
    for name in ("hh-rlhf", "pcr", "conversational", "implicit-prompt", "sft-messages", "prompt-completion"):
        assert name in message


def test_sft_rows_given_to_a_preference_stage_say_so(tmp_path):
    with pytest.raises(DataError, match="looks like SFT data"):
        detect_format({"messages": []}, "preference", "s", ["messages"])


@pytest.mark.parametrize(
    ("fields", "kind", "expected"),
    [
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference", "pcr"),
        ({"prompt": [_u("q")], "chosen": [_a("a")], "rejected": [_a("b")]}, "preference", "conversational"),
        ({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "x"}, "preference", "hh-rlhf"),
        ({"chosen": [_u("q"), _a("a")], "rejected": [_u("q"), _a("b")]}, "preference", "implicit-prompt"),
        ({"messages": [_u("q"), _a("a")]}, "sft", "sft-messages"),
        ({"prompt": "q", "completion": "a"}, "sft", "prompt-completion"),
    ],
)
def test_format_is_detected_from_columns_and_types(fields, kind, expected):
    assert detect_format(fields, kind, "s", list(fields)) == expected


# --- other formats --------------------------------------------------------------------------------------


def test_implicit_prompt_takes_the_whole_message_common_prefix(tmp_path):
    shared = [{"role": "system", "content": "Be kind."}, _u("Hi."), _a("Hello!"), _u("Name a colour.")]
    row = {"chosen": [*shared, _a("Teal.")], "rejected": [*shared, _a("Tea.")]}
    data = load_preferences(_cfg(_write_jsonl(tmp_path / "imp.jsonl", [row])))
    record = data.train[0]
    assert record.prompt == shared
    assert record.chosen == [_a("Teal.")] and record.rejected == [_a("Tea.")]


def test_pcr_system_column_becomes_a_system_message(tmp_path):
    row = {"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away.", "system": "You are polite."}
    record = load_preferences(_cfg(_write_jsonl(tmp_path / "s.jsonl", [row]))).train[0]
    assert record.prompt == [{"role": "system", "content": "You are polite."}, _u("Hi")]


def test_config_system_prompt_is_added_only_where_a_record_has_none(tmp_path):
    rows = [
        {"prompt": "Hi", "chosen": "Hello.", "rejected": "Go away.", "system": "Own system."},
        {"prompt": "Yo", "chosen": "Hey.", "rejected": "Bye."},
    ]
    data = load_preferences(_cfg(_write_jsonl(tmp_path / "s.jsonl", rows), system_prompt="Default system."))
    first, second = sorted(data.train, key=lambda r: r.id)
    assert first.prompt[0]["content"] == "Own system."
    assert second.prompt == [{"role": "system", "content": "Default system."}, _u("Yo")]


def test_margin_and_id_columns_are_read(tmp_path):
    rows = [{"uid": 7, "prompt": "Q", "chosen": "A.", "rejected": "B.", "score": 2.5}]
    spec = {"path": str(_write_jsonl(tmp_path / "m.jsonl", rows)), "columns": {"id": "uid", "margin": "score"}}
    record = load_preferences(_cfg(spec)).train[0]
    assert record.id == "7" and record.margin == 2.5


def test_non_numeric_margin_is_an_error(tmp_path):
    rows = [{"prompt": "Q", "chosen": "A.", "rejected": "B.", "margin": "large"}]
    with pytest.raises(DataError, match="field 'margin' must be a number"):
        load_preferences(_cfg(_write_jsonl(tmp_path / "m.jsonl", rows)))


def test_sft_messages_and_prompt_completion_become_sft_records():
    data = load_sft(_cfg(FIXTURES / "sft_messages.jsonl", max_drop_fraction=0.5))
    assert data.report.to_dict()["dropped"] == {"empty_response": 1, "duplicate": 1}
    assert data.report.kept == 3 and data.report.total == 5
    assert data.train[1].messages[0] == {"role": "system", "content": "You answer briefly."}
    pc = load_sft(_cfg(FIXTURES / "prompt_completion.jsonl"))
    assert [r.messages for r in pc.train] == [
        [_u("Complete the proverb: many hands"), _a("make light work.")],
        [_u("Give a synonym for quick."), _a("Rapid.")],
    ]


def test_sft_stage_on_pcr_data_trains_on_prompt_plus_chosen(tmp_path):
    rows = [{"prompt": "Name a river.", "chosen": "The Danube.", "rejected": "The Alps."}]
    record = load_sft(_cfg(_write_jsonl(tmp_path / "p.jsonl", rows))).train[0]
    assert record.messages == [_u("Name a river."), _a("The Danube.")]


def test_sft_conversation_must_end_with_an_assistant_turn(tmp_path):
    rows = [{"messages": [_u("Hi."), _a("Hello."), _u("And?")]}]
    with pytest.raises(DataError, match="roles out of order.*ending with an assistant turn"):
        load_sft(_cfg(_write_jsonl(tmp_path / "bad.jsonl", rows)))


# --- annotator labels ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("A", 1.0),
        ("B", -1.0),
        ("tie", 0.0),
        ("Chosen", 1.0),
        ("2", -1.0),
        (2, 2.0),
        ("-3", -3.0),
        ("", None),
        (None, None),
    ],
)
def test_labels_follow_the_convention_and_numbers_pass_through(value, expected):
    assert label_value(value, DEFAULT_LABELS, "row 0", "rater_1") == expected


def test_unknown_label_error_names_row_column_value_and_known_labels():
    with pytest.raises(DataError) as err:
        label_value("meh", DEFAULT_LABELS, "source 's' row 4", "rater_2")
    message = str(err.value)
    assert "source 's' row 4" in message and "'rater_2'" in message and "'meh'" in message
    assert "known labels: chosen, rejected, tie, A, B" in message


def test_custom_label_convention_replaces_the_default(tmp_path):
    rows = [{"prompt": "Q", "chosen": "A.", "rejected": "B.", "annotator_1": "left", "annotator_2": "right"}]
    spec = {"path": str(_write_jsonl(tmp_path / "l.jsonl", rows)), "labels": {"left": 1, "right": -1}}
    assert load_preferences(_cfg(spec)).train[0].annotations == {"annotator_1": 1.0, "annotator_2": -1.0}


# --- canonical JSONL ------------------------------------------------------------------------------------


def test_canonical_jsonl_round_trips_and_loads_as_a_source(tmp_path):
    record = PreferenceRecord(
        id="x1",
        prompt=[_u("Name a planet.")],
        chosen=[_a("Saturn.")],
        rejected=[_a("The sun.")],
        margin=1.5,
        annotations={"r1": 1.0, "r2": None},
        meta={"note": "hand-written"},
    )
    sft = SFTRecord(id="s1", messages=[_u("Hi."), _a("Hello.")])
    path = tmp_path / "out" / "canon.jsonl"
    assert write_records_jsonl([record, sft], path) == 2
    assert read_records_jsonl(path) == [record, sft]
    write_records_jsonl([record], path)
    loaded = load_preferences(_cfg(path)).train[0]
    assert (loaded.id, loaded.prompt, loaded.chosen, loaded.margin) == ("x1", record.prompt, record.chosen, 1.5)
    assert loaded.annotations == {"r1": 1.0, "r2": None} and loaded.meta == {"note": "hand-written"}


def test_read_records_jsonl_checks_the_schema(tmp_path):
    path = _write_jsonl(
        tmp_path / "c.jsonl", [{"id": "1", "prompt": [_u("q")], "chosen": [_u("a")], "rejected": [_a("b")]}]
    )
    with pytest.raises(DataError, match=r"line 1: field 'chosen' must be exactly one assistant message"):
        read_records_jsonl(path)
