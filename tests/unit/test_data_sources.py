"""Sources: local files and folders, builtin samples, hub ids (offline), plugins, mixtures, annotation tables."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest

from align.data import sources
from align.data.load import load_preferences
from align.data.records import PreferenceRecord
from align.data.sources import read_source, source_name, subsample_indices
from align.data.spec import DataConfig, DataError, SourceSpec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
PLUGINS = FIXTURES.parent / "plugins"


def _cfg(*sources_, **kw) -> DataConfig:
    kw.setdefault("eval_fraction", 0.0)
    return DataConfig.from_dict({"sources": [s if isinstance(s, dict) else {"path": str(s)} for s in sources_], **kw})


def _pcr_rows(n: int, tag: str = "q") -> list[dict]:
    return [
        {"prompt": f"{tag} question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."} for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _accounted(data) -> bool:
    r = data.report
    return r.kept + sum(r.dropped.values()) == r.total and r.kept == len(data.train) + len(data.eval)


# --- local files ----------------------------------------------------------------------------------------


def test_csv_with_custom_column_names_loads_through_a_columns_mapping():
    spec = {
        "path": str(FIXTURES / "custom_columns.csv"),
        "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"},
    }
    data = load_preferences(_cfg(spec))
    assert _accounted(data) and data.report.total == 8 and data.report.kept == 8
    by_id = {r.id: r for r in data.train}
    first = by_id["custom_columns-0"]
    assert first.prompt == [{"role": "user", "content": "How do I keep basil alive on a windowsill?"}]
    assert first.chosen[0]["content"].startswith("Give it the sunniest window")
    # rater_* columns are found automatically and mapped through the label convention ("2" = response 2 = -1)
    assert first.annotations == {"rater_a": 1.0, "rater_b": -1.0}
    assert by_id["custom_columns-3"].annotations == {"rater_a": None, "rater_b": 0.0}
    assert by_id["custom_columns-6"].annotations == {"rater_a": 1.0, "rater_b": None}
    assert data.sources[0]["format"] == "pcr"
    assert data.sources[0]["sha256"] == sources.file_sha256(FIXTURES / "custom_columns.csv")


def test_explicit_annotator_columns_override_autodetection():
    spec = {
        "path": str(FIXTURES / "custom_columns.csv"),
        "columns": {"prompt": "question", "chosen": "good", "rejected": "bad", "annotators": ["rater_b"]},
    }
    record = load_preferences(_cfg(spec)).train[0]
    assert record.annotations == {"rater_b": -1.0}


def test_mapping_to_a_column_the_data_lacks_names_it():
    spec = {"path": str(FIXTURES / "custom_columns.csv"), "columns": {"prompt": "query"}}
    with pytest.raises(DataError, match="columns maps prompt -> 'query'.*found columns: question, good, bad"):
        load_preferences(_cfg(spec))


def test_parquet_with_message_lists_loads(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Parquet question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"Yes {i}."}],
            "rejected": [{"role": "assistant", "content": f"No {i}."}],
            "margin": float(i),
        }
        for i in range(5)
    ]
    path = tmp_path / "prefs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    data = load_preferences(_cfg(path))
    assert _accounted(data) and data.report.kept == 5
    assert data.sources[0]["format"] == "conversational"
    record = next(r for r in data.train if r.id == "prefs-3")
    assert record.prompt == rows[3]["prompt"] and record.chosen == rows[3]["chosen"] and record.margin == 3.0


def test_folder_source_reads_every_data_file_in_sorted_order():
    raw = read_source(SourceSpec(path=str(FIXTURES / "folder")))
    assert raw.kind == "folder" and len(raw.rows) == 5
    assert [Path(f["path"]).name for f in raw.files] == ["part-0.jsonl", "part-1.csv"]
    assert raw.locations[3] == "part-1.csv row 2"
    data = load_preferences(_cfg(FIXTURES / "folder"))
    assert _accounted(data) and data.report.kept == 5
    assert {r.id for r in data.train} == {f"folder-{i}" for i in range(5)}


def test_folder_holding_several_splits_is_refused(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", _pcr_rows(2))
    _write_jsonl(tmp_path / "test.jsonl", _pcr_rows(2, "t"))
    with pytest.raises(DataError, match="several splits"):
        read_source(SourceSpec(path=str(tmp_path)))


def test_jsonl_decode_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_pcr_rows(1)[0]) + "\n\n" + '{"prompt": "unterminated\n')
    with pytest.raises(DataError, match=r"broken.jsonl line 3: not valid JSON"):
        load_preferences(_cfg(path))


def test_json_array_file_loads(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(_pcr_rows(3)))
    assert load_preferences(_cfg(path)).report.kept == 3


def test_missing_local_file_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(DataError, match="data file not found|data source not found"):
        load_preferences(_cfg(tmp_path / "nope.jsonl"))


def test_empty_source_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="source 'empty' .* has no rows"):
        load_preferences(_cfg(path))


# --- builtin --------------------------------------------------------------------------------------------


def test_builtin_names_resolve_to_package_sample_files(tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "prefs.jsonl", _pcr_rows(4, "builtin"))
    monkeypatch.setattr(sources, "samples_dir", lambda: tmp_path)
    data = load_preferences(_cfg({"path": "builtin:bundled"}))
    assert data.report.kept == 4 and data.train[0].source == "bundled" and data.train[0].id.startswith("bundled-")
    assert data.sources[0]["kind"] == "builtin"


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(path="builtin:nonesuch"))
    assert "builtin:bundled, builtin:bundled-sft, builtin:bundled-eval-prompts" in str(err.value)


# --- hub ------------------------------------------------------------------------------------------------


def test_hub_id_goes_to_datasets_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(_pcr_rows(6, "hub"))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = {"path": "some-org/some-prefs", "name": "default", "split": "test", "revision": "v1", "max_rows": 4}
    data = load_preferences(_cfg(spec))
    assert calls == [("some-org/some-prefs", "default", "test", "v1")]
    assert data.report.total == 4 and data.sources[0]["kind"] == "hub"
    assert data.train[0].source == "some-prefs-default-test"


def test_offline_hub_failure_says_to_use_a_local_file():
    # HF_DATASETS_OFFLINE is set for the test session, and nothing by this name is cached.
    with pytest.raises(DataError) as err:
        read_source(SourceSpec(path="no-such-org/no-such-dataset-for-align-tests"))
    message = str(err.value)
    assert "could not load dataset 'no-such-org/no-such-dataset-for-align-tests'" in message
    assert "use a local file" in message


# --- plugins --------------------------------------------------------------------------------------------


def test_plugin_function_yielding_rows_goes_through_format_conversion(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    data = load_preferences(_cfg({"plugin": "align_fixture_plugin:rows"}))
    assert _accounted(data) and data.report.kept == 4
    assert data.sources[0]["format"] == "pcr"
    assert data.train[0].id == "rows-0" and data.train[0].prompt[0]["content"] == "Plugin question 0?"


def test_plugin_returning_records_passes_them_through(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    data = load_preferences(_cfg({"plugin": "align_fixture_plugin:records"}))
    assert [r.id for r in data.train] == ["rec-0", "rec-1", "rec-2"]
    assert all(isinstance(r, PreferenceRecord) and r.source == "records" for r in data.train)
    assert data.sources[0]["format"] == "records"


def test_plugin_registered_as_an_entry_point_is_found_by_name(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    entry = metadata.EntryPoint(name="fixture-rows", value="align_fixture_plugin:rows", group="align.datasets")
    monkeypatch.setattr(sources.metadata, "entry_points", lambda group: [entry] if group == "align.datasets" else [])
    assert load_preferences(_cfg({"plugin": "fixture-rows"})).report.kept == 4
    with pytest.raises(DataError, match="registered: fixture-rows"):
        load_preferences(_cfg({"plugin": "other-name"}))


def test_plugin_errors_are_clear(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    with pytest.raises(DataError, match="cannot import module 'no_such_plugin_module'"):
        read_source(SourceSpec(plugin="no_such_plugin_module:rows"))
    with pytest.raises(DataError, match="has no function 'missing'"):
        read_source(SourceSpec(plugin="align_fixture_plugin:missing"))
    with pytest.raises(DataError, match="must return or yield rows"):
        read_source(SourceSpec(plugin="align_fixture_plugin:not_iterable"))


# --- mixtures -------------------------------------------------------------------------------------------


def test_weighted_mixture_takes_a_seeded_share_of_each_source(tmp_path):
    a = _write_jsonl(tmp_path / "alpha.jsonl", _pcr_rows(40, "alpha"))
    b = _write_jsonl(tmp_path / "beta.jsonl", _pcr_rows(20, "beta"))
    cfg = _cfg({"path": str(a), "weight": 0.25}, {"path": str(b), "weight": 0.5}, split_seed=3)
    data = load_preferences(cfg)
    assert [(s["name"], s["rows_read"], s["rows_taken"]) for s in data.sources] == [
        ("alpha", 40, 10),
        ("beta", 20, 10),
    ]
    assert data.report.total == 20 and _accounted(data)
    assert sum(r.source == "alpha" for r in data.train) == 10 and sum(r.source == "beta" for r in data.train) == 10
    again = load_preferences(cfg)
    assert [r.id for r in again.train] == [r.id for r in data.train]
    other_seed = load_preferences(
        _cfg({"path": str(a), "weight": 0.25}, {"path": str(b), "weight": 0.5}, split_seed=4)
    )
    assert [r.id for r in other_seed.train] != [r.id for r in data.train]


def test_subsample_keeps_at_least_one_row_and_original_order():
    picked = subsample_indices(10, 0.01, 0, "s")
    assert len(picked) == 1
    half = subsample_indices(100, 0.5, 0, "s")
    assert len(half) == 50 and half == sorted(half)


def test_sources_sharing_a_name_get_distinct_ids(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _write_jsonl(tmp_path / "a" / "train.jsonl", _pcr_rows(2, "a"))
    second = _write_jsonl(tmp_path / "b" / "train.jsonl", _pcr_rows(2, "b"))
    data = load_preferences(_cfg(first, second))
    assert sorted(r.id for r in data.train) == ["train-0", "train-1", "train-2-0", "train-2-1"]


def test_hub_source_name_carries_config_and_split():
    assert source_name(SourceSpec(path="org/prefs", name="helpful", split="test")) == "prefs-helpful-test"
    assert source_name(SourceSpec(path="builtin:bundled")) == "bundled"


# --- long annotation table ------------------------------------------------------------------------------


def _annotated_spec(table: Path) -> dict:
    return {
        "path": str(FIXTURES / "pairs_with_ids.jsonl"),
        "columns": {"id": "pair_id"},
        "annotations": {"path": str(table), "item": "item", "annotator": "annotator", "label": "label"},
    }


def test_long_annotation_table_is_joined_by_item_id():
    data = load_preferences(_cfg(_annotated_spec(FIXTURES / "annotations_long.csv")))
    assert _accounted(data) and data.report.kept == 5
    by_id = {r.id: r.annotations for r in data.train}
    assert by_id == {
        "p-001": {"ann_x": 1.0, "ann_y": 1.0, "ann_z": 0.0},
        "p-002": {"ann_x": -1.0, "ann_y": 1.0},
        "p-003": {"ann_z": 1.0},
        "p-004": {"ann_x": -1.0},
        "p-005": None,
    }


def test_annotation_table_labels_for_unknown_items_are_an_error(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("item,annotator,label\np-001,ann_x,A\nq-404,ann_x,B\nq-405,ann_y,A\n")
    with pytest.raises(DataError, match=r"labels for 2 item\(s\) the source does not have: q-404, q-405"):
        load_preferences(_cfg(_annotated_spec(table)))


def test_annotation_table_with_an_unknown_label_names_its_row(tmp_path):
    table = tmp_path / "labels.csv"
    table.write_text("item,annotator,label\np-001,ann_x,A\np-002,ann_x,sideways\n")
    with pytest.raises(DataError, match=r"labels.csv row 3\).*unknown label 'sideways'"):
        load_preferences(_cfg(_annotated_spec(table)))


def test_duplicate_ids_are_an_error_unless_ids_are_generated(tmp_path):
    rows = [{"id": "same", **row} for row in _pcr_rows(3)]
    path = _write_jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(DataError, match="record id 'same' appears twice.*columns: {id: null}"):
        load_preferences(_cfg(path))
    data = load_preferences(_cfg({"path": str(path), "columns": {"id": None}}))
    assert [r.id for r in data.train] == ["dup-0", "dup-1", "dup-2"]
