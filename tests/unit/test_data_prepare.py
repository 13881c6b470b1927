"""Agreement applied to records: flips, drops counted, labels re-oriented."""

from align.agreement import AgreementConfig, AgreementWarning
from align.data.prepare import apply_agreement_to_records
from align.data.records import PreferenceRecord
from align.data.validate import DropReport


def _rec(i, labels):
    return PreferenceRecord(
        id=f"r{i}",
        prompt=[{"role": "user", "content": f"q{i}"}],
        chosen=[{"role": "assistant", "content": "A"}],
        rejected=[{"role": "assistant", "content": "B"}],
        annotations=labels,
    )


def test_majority_for_the_rejected_side_swaps_the_pair_and_negates_labels_and_ties_are_counted_drops():
    records = [
        _rec(0, {"x": 1, "y": 1, "z": 1}),
        _rec(1, {"x": -1, "y": -1, "z": 1}),
        _rec(2, {"x": 1, "y": -1, "z": 0}),
        *[_rec(i, {"x": 1, "y": 1, "z": -1}) for i in range(3, 9)],
        _rec(9, {"x": -1, "y": -1, "z": -1}),
    ]
    report = DropReport()
    report.add_rows(len(records))
    kept, summary = apply_agreement_to_records(records, AgreementConfig(ties="drop", bootstrap=0), report)
    by_id = {r.id: r for r in kept}
    assert "r2" not in by_id and report.dropped == {"tie": 1} and report.kept == 9
    assert by_id["r1"].chosen[0]["content"] == "B" and by_id["r1"].meta["flipped"] is True
    assert by_id["r1"].annotations == {"x": 1, "y": 1, "z": -1}
    assert by_id["r0"].chosen[0]["content"] == "A" and "flipped" not in by_id["r0"].meta
    assert summary["n_items"] == 10


# ----------------------------------------------------------------------------------------------------------------
# The gate runs once over both splits (issue 15)


def _write_pairs(path, rows):
    """Preference rows with four annotators a, b, c, d (labels "chosen" / "rejected" / "tie" / None)."""
    import json

    with open(path, "w") as fh:
        for i, labels in enumerate(rows):
            row = {"id": f"{path.stem}-{i}", "prompt": f"{path.stem} question {i}?", "chosen": "yes", "rejected": "no"}
            row.update({f"rater_{k}": v for k, v in labels.items()})
            fh.write(json.dumps(row) + "\n")
    return path


def _agreeing(n, bad=None):
    """n items on which a, b and d agree (alternating sides); ``bad`` labels the opposite side when given."""
    out = []
    for i in range(n):
        side, other = ("chosen", "rejected") if i % 2 else ("rejected", "chosen")
        out.append({"a": side, "b": side, "d": side, "c": other if bad else side})
    return out


def _data(tmp_path, train_rows, eval_rows):
    from align.data.spec import DataConfig

    train = _write_pairs(tmp_path / "train.jsonl", train_rows)
    held_out = _write_pairs(tmp_path / "held.jsonl", eval_rows)
    return DataConfig.from_dict(
        {"sources": [{"path": str(train)}], "eval_sources": [{"path": str(held_out)}], "max_drop_fraction": 0.5}
    )


def test_one_gate_for_both_splits_drops_the_same_annotator_from_the_eval_votes(tmp_path):
    from align.data.prepare import prepare_preferences

    # On train, c labels the opposite side every time: the gate drops c. On the 4 eval items alone c agrees with
    # everyone, so a gate on the eval split alone kept c, and the last eval item (a for chosen, b against, d
    # silent) won 2-1 with c's vote; without c it is a 1-1 tie and is dropped.
    held = [*_agreeing(3), {"a": "chosen", "b": "rejected", "d": None, "c": "chosen"}]
    cfg = AgreementConfig(drop_annotators_below=0.2, ties="drop", bootstrap=0)
    prepared = prepare_preferences(_data(tmp_path, _agreeing(40, bad=True), held), cfg)
    assert prepared.agreement["dropped_annotators"] == ["rater_c"]
    assert [r.id for r in prepared.eval] == ["held-0", "held-1", "held-2"]
    splits = prepared.manifest_info()["agreement"]["splits"]
    assert splits["train"] == {"labelled": 40, "kept": 40, "flipped": 20, "dropped": {}}
    assert splits["eval"] == {"labelled": 4, "kept": 3, "flipped": 2, "dropped": {"tie": 1}}
    assert prepared.report.dropped == {"tie": 1}


def test_a_small_eval_split_does_not_fail_the_gate_the_whole_data_passes(tmp_path):
    from align.data.prepare import prepare_preferences

    # 4 eval items on which a, b and d disagree (Fleiss' kappa < 0 on them alone) among 40 agreed training items.
    held = [{"a": "chosen", "b": "rejected", "d": "chosen", "c": "rejected"}] * 2 + _agreeing(2)
    cfg = AgreementConfig(metric="fleiss_kappa", min=0.4, on_fail="error", bootstrap=0)
    prepared = prepare_preferences(_data(tmp_path, _agreeing(40), held), cfg)
    assert prepared.agreement["n_items"] == 44 and prepared.agreement["fleiss_kappa"] > 0.8
    assert prepared.agreement["splits"]["eval"]["labelled"] == 4


def test_gate_warnings_are_said_once_per_process_however_many_stages_load_the_data(monkeypatch):
    import warnings

    from align.config import load_recipe
    from align.data import prepare
    from align.stages import reward

    monkeypatch.setattr(prepare, "_SAID", set(), raising=False)
    recipe = load_recipe(reward.Recipe, "recipes/tiny/rm.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # a pipeline's rm, judge and compare stages load the same data
            prepare.prepare_preferences(recipe.data, recipe.agreement)
    said = [str(w.message) for w in caught if issubclass(w.category, AgreementWarning)]
    assert len(said) == len(set(said)), said
    drops = [m for m in said if "dropping annotators" in m]
    assert len(drops) == 1 and "rater_4" in drops[0] and "agreement.drop_annotators_below" in drops[0]
    # The bundled data's small eval split used to give 'bootstrap interval undefined' without saying for which
    # statistic; over the whole data, an interval that is still undefined names its statistic.
    assert not [m for m in said if m.startswith("bootstrap interval undefined")], said


def test_the_data_card_records_the_gate_s_counts_for_both_splits(tmp_path):
    from align.data.check import check_data

    facts = check_data("recipes/tiny/rm.yaml", tmp_path, name="rm-data")
    applied = facts["preprocessing"]["agreement_applied"]
    assert applied["dropped_annotators"] == ["rater_4"]
    splits = applied["splits"]
    assert splits["train"]["kept"] + splits["eval"]["kept"] == facts["split"]["train"] + facts["split"]["eval"]
    assert sum(s["labelled"] for s in splits.values()) == 64
    assert sum(n for s in splits.values() for n in s["dropped"].values()) == facts["rows"]["dropped"]["tie"]
