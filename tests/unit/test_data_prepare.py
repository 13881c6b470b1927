"""Agreement applied to records: flips, drops counted, labels re-oriented."""

from align.agreement import AgreementConfig
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
