"""Drop accounting, the drop-fraction gate, row filters and config validation."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from align.data.load import load_preferences
from align.data.records import PreferenceRecord, SFTRecord
from align.data.spec import DataConfig, DataError, SourceSpec
from align.data.validate import DropReport, check_drop_fraction, filter_records
from align.data.validate import SkippedRow as Skip


def _pair(rid: str, prompt: str = "Q?", chosen: str = "Yes.", rejected: str = "No.") -> PreferenceRecord:
    return PreferenceRecord(
        id=rid,
        prompt=[{"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
    )


def _report(kept: int, **dropped: int) -> DropReport:
    report = DropReport()
    report.add_rows(kept + sum(dropped.values()))
    for reason, count in dropped.items():
        for i in range(count):
            report.add_drop(reason, f"{reason}-{i}")
    return report


# --- DropReport -----------------------------------------------------------------------------------------


def test_add_drop_moves_a_counted_row_from_kept_to_dropped_for_any_reason():
    report = DropReport()
    report.add_rows(3)
    report.add_drop("truncated_to_empty", "r1")
    report.add_drop("low_agreement", "r2")
    assert report.to_dict() == {
        "total": 3,
        "kept": 1,
        "dropped": {"truncated_to_empty": 1, "low_agreement": 1},
        "examples": {"truncated_to_empty": ["r1"], "low_agreement": ["r2"]},
    }


def test_add_drop_without_counted_rows_is_refused():
    with pytest.raises(ValueError, match="count rows with add_rows"):
        DropReport().add_drop("tie", "r1")


def test_examples_keep_the_first_five_ids_per_reason():
    report = _report(0, duplicate=8)
    assert report.examples["duplicate"] == [f"duplicate-{i}" for i in range(5)]
    assert report.dropped["duplicate"] == 8


def test_merge_adds_counts_and_caps_examples():
    merged = _report(2, tie=3).merge(_report(1, tie=4, duplicate=1))
    assert (merged.total, merged.kept) == (11, 3)
    assert merged.dropped == {"tie": 7, "duplicate": 1}
    assert merged.examples["tie"] == ["tie-0", "tie-1", "tie-2", "tie-0", "tie-1"]
    assert merged.kept + merged.n_dropped == merged.total


def test_report_round_trips_through_json():
    report = _report(4, empty_response=2)
    assert DropReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


# --- check_drop_fraction --------------------------------------------------------------------------------


def test_drop_fraction_under_the_threshold_passes():
    check_drop_fraction(_report(96, empty_response=4), 0.05)


def test_drop_fraction_over_the_threshold_shows_the_per_reason_table_and_the_fix():
    with pytest.raises(DataError) as err:
        check_drop_fraction(_report(90, identical_pair=6, duplicate=4), 0.05, what="source 'x'")
    message = str(err.value)
    assert "source 'x': 10 of 100 rows dropped (10.0%), more than data.max_drop_fraction = 5.0%" in message
    assert "identical_pair" in message and "6.0%" in message and "identical_pair-0, identical_pair-1" in message
    assert "duplicate" in message and "4.0%" in message
    assert "raise data.max_drop_fraction" in message and "column mapping" in message


def test_nothing_kept_is_an_error_even_when_drops_are_allowed():
    with pytest.raises(DataError, match="all 3 rows were dropped"):
        check_drop_fraction(_report(0, empty_response=3), 1.0)


def test_load_applies_the_drop_fraction_gate(tmp_path):
    rows = [{"prompt": f"Q{i}", "chosen": "Same.", "rejected": "Same." if i < 2 else "Other."} for i in range(10)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"2 of 10 rows dropped \(20.0%\)"):
        load_preferences(DataConfig.from_dict({"sources": [{"path": str(path)}], "max_drop_fraction": 0.1}))
    data = load_preferences(DataConfig.from_dict({"sources": [{"path": str(path)}], "max_drop_fraction": 0.2}))
    assert data.report.dropped == {"identical_pair": 2}


# --- filters --------------------------------------------------------------------------------------------


def test_filter_records_counts_records_and_skips_alike():
    items = [_pair("a"), Skip("prompt_mismatch"), _pair("c", chosen="  "), _pair("d", prompt="\n")]
    report = DropReport()
    kept = filter_records(items, ["a", "b", "c", "d"], report, dedupe=True)
    assert [r.id for r in kept] == ["a"]
    assert report.dropped == {"prompt_mismatch": 1, "empty_response": 1, "empty_prompt": 1}
    assert report.kept + report.n_dropped == report.total == 4


def test_duplicates_are_found_across_calls_sharing_seen_and_only_when_dedupe():
    seen: set[str] = set()
    report = DropReport()
    filter_records([_pair("a")], ["a"], report, dedupe=True, seen=seen)
    kept = filter_records([_pair("b", chosen=" Yes. "), _pair("c", rejected="Maybe.")], ["b", "c"], report,
                          dedupe=True, seen=seen)  # fmt: skip
    assert [r.id for r in kept] == ["c"] and report.examples == {"duplicate": ["b"]}
    assert len(filter_records([_pair("a"), _pair("b")], ["a", "b"], DropReport(), dedupe=False)) == 2


def test_empty_reply_inside_a_multi_turn_prompt_is_an_empty_response():
    record = _pair("m")
    record.prompt = [
        {"role": "user", "content": "Hi."},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "Hello?"},
    ]
    report = DropReport()
    assert filter_records([record], ["m"], report, dedupe=True) == []
    assert report.dropped == {"empty_response": 1}


def test_sft_filter_drops_empty_replies_and_duplicates():
    def conv(rid: str, reply: str) -> SFTRecord:
        return SFTRecord(id=rid, messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": reply}])

    report = DropReport()
    kept = filter_records([conv("a", "Hello."), conv("b", " "), conv("c", "Hello. ")], "abc", report, dedupe=True)
    assert [r.id for r in kept] == ["a"]
    assert report.dropped == {"empty_response": 1, "duplicate": 1}


# --- config ---------------------------------------------------------------------------------------------


def test_every_config_field_has_help_text():
    for cls in (SourceSpec, DataConfig):
        assert all(f.metadata.get("help") for f in fields(cls)), cls


def test_from_dict_builds_nested_sources():
    cfg = DataConfig.from_dict(
        {"sources": ["builtin:bundled", {"path": "x.csv", "columns": {"prompt": "question"}}], "eval_fraction": 0.2}
    )
    assert cfg.sources[0].path == "builtin:bundled" and cfg.sources[1].columns == {"prompt": "question"}
    assert cfg.eval_fraction == 0.2


def test_unknown_key_names_the_key_and_lists_the_valid_ones():
    with pytest.raises(DataError) as err:
        DataConfig.from_dict({"sources": [], "eval_fractoin": 0.1})
    message = str(err.value)
    assert "unknown key 'eval_fractoin' in data" in message and "did you mean 'eval_fraction'" in message
    assert "valid keys: sources, eval_sources, eval_fraction" in message
    with pytest.raises(DataError, match=r"unknown key 'colums' in data.sources\[0\]"):
        DataConfig.from_dict({"sources": [{"path": "x", "colums": {}}]})


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"eval_fraction": 1.0}, r"eval_fraction must be in \[0, 1\)"),
        ({"eval_fraction": -0.1}, r"eval_fraction must be in \[0, 1\)"),
        ({"leakage": "ignore"}, "leakage must be one of error, warn"),
        ({"max_drop_fraction": 1.5}, "max_drop_fraction must be in"),
        ({"sources": [{"path": "x", "format": "sharegpt"}]}, "unknown format 'sharegpt'; use one of auto, hh-rlhf"),
        ({"sources": [{"path": "x", "weight": 0}]}, r"weight must be in \(0, 1\]"),
        ({"sources": [{"path": "x", "weight": 1.5}]}, r"weight must be in \(0, 1\]"),
        ({"sources": [{"path": "x", "columns": {"question": "prompt"}}]}, "canonical field -> your column"),
        ({"sources": [{"path": "x", "labels": {"A": "yes"}}]}, "label 'A' must map to a number"),
        ({"sources": [{"path": "x", "max_rows": 0}]}, "max_rows must be a positive integer"),
        ({"sources": [{"path": "x", "annotations": {"item": "id"}}]}, "annotations.path must name"),
        ({"sources": [{"format": "pcr"}]}, "needs `path`"),
    ],
)
def test_invalid_values_say_what_to_do(data, match):
    with pytest.raises(DataError, match=match):
        DataConfig.from_dict({"sources": [{"path": "x"}], **data})


def test_yaml_integer_label_keys_are_matched_as_text():
    spec = SourceSpec(path="x", labels={1: 1, 2: -1})
    assert spec.label_map == {"1": 1.0, "2": -1.0}


def test_loading_without_sources_is_an_error():
    with pytest.raises(DataError, match="data.sources is empty"):
        load_preferences(DataConfig())


def test_no_pickle_or_eval_in_the_data_layer():
    # Fault 20: nothing in the data layer executes or unpickles what it reads.
    root = Path(__file__).resolve().parents[2] / "align" / "data"
    for name in ("spec.py", "formats.py", "sources.py", "validate.py", "split.py", "load.py"):
        text = (root / name).read_text()
        for banned in ("import pickle", "eval(", "exec(", "trust_remote_code=True"):
            assert banned not in text, (name, banned)
