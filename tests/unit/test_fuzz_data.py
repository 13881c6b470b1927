"""Property-based fuzzing of the data readers and converters (issue 15).

For any bytes in a .jsonl/.json/.csv/.parquet file, any hh-rlhf text, any message list and any column mapping, the
result is records plus counted drops (kept + dropped = total) or a one-paragraph ``UserError`` (DataError,
ConfigError); never another exception. Each property runs ~100 examples so the file stays within seconds."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from align.data.formats import parse_hh_transcript
from align.data.load import load_source
from align.data.sources import read_table_file
from align.data.spec import DataConfig, SourceSpec
from align.data.validate import check_messages
from align.errors import UserError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_paragraph(exc: BaseException) -> None:
    text = str(exc).strip()
    assert text, type(exc)
    assert "\n\n" not in text, text


def write(data: bytes, suffix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="align-fuzz-"))
    f = d / f"data{suffix}"
    f.write_bytes(data)
    return f


def load(path: Path, kind: str, columns: dict | None = None):
    """load_source on ``path``: (kept, report) or the UserError it raised (checked to be one paragraph)."""
    try:
        spec = SourceSpec(path=str(path), columns=columns or {})
        cfg = DataConfig(sources=[spec], max_drop_fraction=1.0)
        kept, _, report = load_source(cfg.sources[0], "fuzz", kind, cfg, set())
    except UserError as exc:
        one_paragraph(exc)
        event(f"error: {type(exc).__name__}")
        return None
    d = report.to_dict()
    event("records" if d["kept"] else "all dropped")
    assert d["kept"] + sum(d["dropped"].values()) == d["total"], d
    assert len(kept) == d["kept"]
    return kept, d


# -- raw bytes ------------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]))
def test_any_bytes_read_as_rows_or_one_paragraph_data_error(data, suffix):
    f = write(data, suffix)
    try:
        rows, locations = read_table_file(f, ("prompt", "chosen", "rejected"))
    except UserError as exc:
        one_paragraph(exc)
        assert str(f) in str(exc)  # names the file
        return
    assert len(rows) == len(locations)


def _text():
    return st.text(max_size=30)


def _value():
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), _text())
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "bot", 3]), "content": scalar}
    )
    return st.one_of(
        scalar,
        st.lists(message, max_size=4),
        st.lists(scalar, max_size=3),
        st.dictionaries(_text(), scalar, max_size=2),
    )


KEYS = [
    "prompt",
    "chosen",
    "rejected",
    "messages",
    "completion",
    "id",
    "question",
    "good",
    "bad",
    "annotator_1",
    "margin",
]
ROWS = st.lists(st.dictionaries(st.sampled_from(KEYS), _value(), max_size=6), min_size=1, max_size=6)


@FUZZ
@given(rows=ROWS, kind=st.sampled_from(["preference", "sft"]), as_json=st.booleans())
def test_any_json_rows_convert_to_records_plus_counted_drops_or_one_error(rows, kind, as_json):
    if as_json:
        f = write(json.dumps(rows).encode(), ".json")
    else:
        f = write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl")
    load(f, kind)


@FUZZ
@given(rows=ROWS, kind=st.sampled_from(["preference", "sft"]))
def test_any_csv_rows_convert_to_records_plus_counted_drops_or_one_error(rows, kind):
    import csv

    header = sorted({k for r in rows for k in r})
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for r in rows:
        writer.writerow([json.dumps(r.get(k)) if isinstance(r.get(k), list | dict) else r.get(k) for k in header])
    load(write(buf.getvalue().encode(), ".csv"), kind)


@FUZZ
@given(
    columns=st.dictionaries(
        st.sampled_from(["prompt", "chosen", "rejected", "messages", "id", "margin", "annotators", "nonsense"]),
        st.one_of(st.sampled_from(KEYS), st.none(), st.lists(st.sampled_from(KEYS), max_size=2), st.integers()),
        max_size=4,
    ),
    rows=ROWS,
    kind=st.sampled_from(["preference", "sft"]),
)
def test_any_column_mapping_gives_records_or_one_error(columns, rows, kind):
    f = write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl")
    load(f, kind, columns)


SHORT = st.one_of(st.sampled_from(["", " ", "same", "a", "\u2028", "\n\nHuman: hi"]), _text())
NEAR_VALID = st.lists(
    st.fixed_dictionaries(
        {"prompt": SHORT, "chosen": SHORT, "rejected": SHORT},
        optional={"id": st.sampled_from(["1", "2", "x"]), "margin": st.one_of(st.none(), st.floats(), _text())},
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(rows=NEAR_VALID, suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_near_valid_preference_rows_are_kept_or_dropped_by_reason_and_counted(rows, suffix):
    # Rows close to valid (empty, blank, identical or duplicated replies, odd margins) exercise the drop path.
    if suffix == ".csv":
        import csv

        buf = io.StringIO()
        header = sorted({k for r in rows for k in r})
        writer = csv.writer(buf)
        writer.writerow(header)
        writer.writerows([[r.get(k) for k in header] for r in rows])
        data = buf.getvalue().encode()
    elif suffix == ".json":
        data = json.dumps(rows).encode()
    else:
        data = "\n".join(json.dumps(r) for r in rows).encode()
    load(write(data, suffix), "preference")


# -- hh-rlhf text and message lists ---------------------------------------------------------------------------

HH_PIECES = st.sampled_from(["\n\nHuman: ", "\n\nAssistant: ", "Human:", "Assistant:", "\n", " ", "hi", "ok.", ""])


@FUZZ
@given(pieces=st.lists(st.one_of(HH_PIECES, _text()), max_size=8))
def test_any_hh_rlhf_text_parses_or_is_one_paragraph_error(pieces):
    text = "".join(pieces)
    try:
        messages = parse_hh_transcript(text, "row 1", "chosen")
    except UserError as exc:
        one_paragraph(exc)
        return
    assert messages and messages[-1]["role"] == "assistant"
    assert all(m["role"] in ("user", "assistant") for m in messages)


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {
                "chosen": st.lists(st.one_of(HH_PIECES, _text()), max_size=6).map("".join),
                "rejected": st.lists(st.one_of(HH_PIECES, _text()), max_size=6).map("".join),
            }
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_hh_rlhf_rows_convert_with_counted_drops(rows):
    load(write("\n".join(json.dumps(r) for r in rows).encode() + b"\n", ".jsonl"), "preference")


@FUZZ
@given(value=_value())
def test_any_message_list_is_checked_or_one_paragraph_error(value):
    try:
        messages = check_messages(value, "row 1", "messages")
    except UserError as exc:
        one_paragraph(exc)
        return
    assert isinstance(messages, list)
