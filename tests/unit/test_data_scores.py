"""Per-response annotator scores become a preference per annotator (sign of chosen score - rejected score)."""

import pytest

from align.data.load import load_preferences
from align.data.spec import DataConfig, DataError


def _csv(tmp_path):
    p = tmp_path / "scored.csv"
    p.write_text(
        "q,a,b,s1a,s1b,s2a,s2b\n"
        "How do I boil an egg?,Simmer it for nine minutes.,No idea.,5,1,4,4\n"
        "What is 2+2?,It is 4.,It is 5.,2,3,5,\n"
    )
    return p


def _config(tmp_path, scores):
    columns = {"prompt": "q", "chosen": "a", "rejected": "b", "annotator_scores": scores}
    return DataConfig.from_dict({"sources": [{"path": str(_csv(tmp_path)), "columns": columns}], "eval_fraction": 0.0})


def test_scores_turn_into_one_preference_per_annotator_with_ties_and_missing(tmp_path):
    cfg = _config(tmp_path, {"r1": ["s1a", "s1b"], "r2": ["s2a", "s2b"]})
    data = load_preferences(cfg)
    by_prompt = {r.prompt[-1]["content"]: r.annotations for r in data.train + data.eval}
    assert by_prompt["How do I boil an egg?"] == {"r1": 1.0, "r2": 0.0}
    assert by_prompt["What is 2+2?"] == {"r1": -1.0, "r2": None}


def test_score_mapping_must_name_two_existing_columns(tmp_path):
    with pytest.raises(DataError, match="two columns"):
        DataConfig.from_dict({"sources": [{"path": "x.csv", "columns": {"annotator_scores": {"r1": ["s1a"]}}}]})
    cfg = _config(tmp_path, {"r1": ["s1a", "nope"]})
    with pytest.raises(DataError, match="'nope'"):
        load_preferences(cfg)
