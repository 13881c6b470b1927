"""Property-based fuzzing of the unpaired-feedback reader (the kto stage's data), as tests/unit/test_fuzz_data.py does
for pairs and SFT: for any rows, column mapping or labels, the result is unpaired records plus counted drops
(kept + dropped = total, a pair read with data.unpair counting as two rows) or a one-paragraph ``UserError``; never
another exception. Each property runs ~100 examples so the file stays within seconds."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from align.data.formats import UNPAIRED
from align.data.load import load_source
from align.data.records import UnpairedRecord
from align.data.spec import DataConfig, SourceSpec
from align.errors import UserError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(data: bytes, suffix: str) -> Path:
    f = Path(tempfile.mkdtemp(prefix="align-fuzz-unpaired-")) / f"data{suffix}"
    f.write_bytes(data)
    return f


def load(path: Path, columns: dict | None = None, unpair: bool = False):
    """The unpaired reader on ``path``: (kept, report) or None after checking the UserError is one paragraph."""
    try:
        spec = SourceSpec(path=str(path), columns=columns or {})
        cfg = DataConfig(sources=[spec], max_drop_fraction=1.0, unpair=unpair)
        kept, _, report = load_source(cfg.sources[0], "fuzz", UNPAIRED, cfg, set())
    except UserError as exc:
        text = str(exc).strip()
        assert text and "\n\n" not in text, text
        event(f"error: {type(exc).__name__}")
        return None
    d = report.to_dict()
    event("records" if d["kept"] else "all dropped")
    assert d["kept"] + sum(d["dropped"].values()) == d["total"], d
    assert len(kept) == d["kept"] and all(isinstance(r, UnpairedRecord) for r in kept)
    assert all(r.label in (True, False, None) for r in kept)
    assert all(len(r.completion) == 1 and r.completion[0]["role"] == "assistant" for r in kept)
    return kept, d


def _text():
    return st.text(max_size=30)


def _value():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), _text())
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "bot", 3]), "content": scalar}
    )
    return st.one_of(scalar, st.lists(message, max_size=4), st.dictionaries(_text(), scalar, max_size=2))


LABELS = st.one_of(
    st.sampled_from([True, False, None, 0, 1, 2, -1, 0.5, "", "true", "No", "up", "thumbs_down", "maybe"]), _text()
)
KEYS = ["prompt", "completion", "label", "messages", "chosen", "rejected", "id", "question", "rater_1", "annotator_b"]
ROWS = st.lists(
    st.dictionaries(st.sampled_from(KEYS), st.one_of(_value(), LABELS), max_size=6), min_size=1, max_size=6
)


@FUZZ
@given(rows=ROWS, unpair=st.booleans(), as_json=st.booleans())
def test_any_json_rows_read_as_unpaired_records_plus_counted_drops_or_one_error(rows, unpair, as_json):
    if as_json:
        f = write(json.dumps(rows).encode(), ".json")
    else:
        f = write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl")
    load(f, unpair=unpair)


@FUZZ
@given(
    columns=st.dictionaries(
        st.sampled_from(["prompt", "completion", "label", "messages", "id", "annotators", "annotator_scores"]),
        st.one_of(st.sampled_from(KEYS), st.none(), st.lists(st.sampled_from(KEYS), max_size=2), st.integers()),
        max_size=4,
    ),
    rows=ROWS,
)
def test_any_column_mapping_of_unpaired_rows_gives_records_or_one_error(columns, rows):
    load(write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl"), columns)


SHORT = st.one_of(st.sampled_from(["", " ", "same", "a", "\u2028"]), _text())
NEAR_VALID = st.lists(
    st.fixed_dictionaries(
        {"prompt": SHORT, "completion": SHORT, "label": LABELS},
        optional={"id": st.sampled_from(["1", "2", "x"]), "rater_1": LABELS, "rater_2": LABELS},
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(rows=NEAR_VALID, as_csv=st.booleans())
def test_near_valid_unpaired_rows_are_kept_or_dropped_by_reason_and_counted(rows, as_csv):
    # Rows close to valid (blank prompts or completions, duplicates, odd labels and ratings) exercise the drop path.
    if as_csv:
        buf = io.StringIO()
        header = sorted({k for r in rows for k in r})
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows([[r.get(k) for k in header] for r in rows])
        load(write(buf.getvalue().encode(), ".csv"))
    else:
        load(write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl"))


PAIRS = st.lists(
    st.fixed_dictionaries(
        {"prompt": SHORT, "chosen": SHORT, "rejected": SHORT},
        optional={"id": st.sampled_from(["1", "2", "x"]), "rater_1": st.sampled_from(["A", "B", "tie", None])},
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(rows=PAIRS)
def test_pairs_read_with_unpair_give_two_counted_rows_each_or_one_error(rows):
    result = load(write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl"), unpair=True)
    if result is None:
        return
    kept, d = result
    assert d["total"] == 2 * len(rows)
    for chosen, rejected in zip(kept[0::2], kept[1::2], strict=True):  # each kept pair: its two rows, in order
        assert chosen.meta["pair_id"] == rejected.meta["pair_id"] and chosen.prompt == rejected.prompt
        assert (chosen.meta["pair_side"], chosen.label, rejected.meta["pair_side"], rejected.label) == (
            "chosen",
            True,
            "rejected",
            False,
        )
