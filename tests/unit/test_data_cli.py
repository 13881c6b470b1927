"""`align data` commands through the real CLI: JSON on stdout, counts that add up, exit codes, written files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.cli import main
from align.data.load import read_records_jsonl
from align.data.records import PreferenceRecord
from align.data.split import prompt_key, record_prompt

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
HH = str(FIXTURES / "hh_rlhf.jsonl")  # 12 rows: one prompt mismatch, one empty reply, one identical pair


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["data", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    return code, json.loads(out)


def test_validate_json_counts_add_up_and_exit_1_over_the_default_drop_limit(capsys):
    code, report = run_json(capsys, "validate", HH)
    assert set(report) <= {"total", "kept", "dropped", "examples"} and {"total", "kept", "dropped"} <= set(report)
    assert report["kept"] + sum(report["dropped"].values()) == report["total"] == 12
    assert report["dropped"] == {"prompt_mismatch": 1, "empty_response": 1, "identical_pair": 1}
    assert code == 1  # 3 of 12 dropped is above the default 5%


def test_validate_exit_0_when_the_drops_are_within_the_limit_given(capsys):
    code, out, err = run(capsys, "validate", HH, "--max-drop-fraction", "0.3")
    assert code == 0
    assert "9 kept" in out and "identical_pair" in out


def test_validate_clean_data_exits_0(capsys):
    code, report = run_json(capsys, "validate", "builtin:bundled")
    assert code == 0
    assert report["total"] == report["kept"] == 500 and report["dropped"] == {}


def test_validate_schema_error_exits_2_with_the_message_and_no_traceback(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    rows = [
        {"prompt": "Name a river in Egypt.", "chosen": "The Nile.", "rejected": "The Thames."},
        {"prompt": "Name a metal.", "chosen": "Iron."},
    ]
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run(capsys, "validate", str(bad), "--json")
    assert code == 2
    assert out == ""  # nothing half-written on stdout
    assert "missing field 'rejected'" in err and "Traceback" not in err


def test_validate_in_a_subprocess_prints_clean_json_on_stdout():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "align", "data", "validate", HH, "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["kept"] + sum(report["dropped"].values()) == report["total"]
    assert "max_drop_fraction" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.filterwarnings("ignore::align.agreement.AgreementWarning")  # the recipe drops rater_4, and says so
def test_validate_a_recipe_counts_the_agreement_drops(capsys):
    code, report = run_json(capsys, "validate", str(ROOT / "recipes" / "tiny" / "rm.yaml"))
    assert report["total"] == 64  # the recipe reads the first 64 bundled rows
    assert report["kept"] + sum(report["dropped"].values()) == 64
    assert report["dropped"].get("tie", 0) > 0  # its agreement section drops tied votes
    assert code == 0  # within the recipe's own max_drop_fraction of 0.15


def test_convert_writes_canonical_jsonl_that_reads_back(capsys, tmp_path):
    out = tmp_path / "canonical.jsonl"
    code, result = run_json(capsys, "convert", HH, "--format", "hh-rlhf", "-o", str(out))
    assert code == 0
    records = read_records_jsonl(out)
    assert len(records) == result["written"] == result["kept"] == 9
    assert all(isinstance(r, PreferenceRecord) for r in records)
    assert [r.id for r in records][:3] == ["hh_rlhf-0", "hh_rlhf-1", "hh_rlhf-2"]  # input order
    assert records[2].prompt[-1] == {"role": "user", "content": "I have no yeast."}


def test_convert_refuses_to_write_over_an_explicit_drop_limit(capsys, tmp_path):
    out = tmp_path / "canonical.jsonl"
    code, _, err = run(capsys, "convert", HH, "-o", str(out), "--max-drop-fraction", "0.1")
    assert code == 1 and not out.exists()
    assert "25.0%" in err


def test_convert_without_output_is_a_usage_error(capsys):
    code, _, err = run(capsys, "convert", HH)
    assert code == 2 and "-o/--output" in err


def test_split_leaves_no_prompt_in_both_files(capsys, tmp_path):
    code, result = run_json(capsys, "split", "builtin:bundled", "-o", str(tmp_path), "--eval-fraction", "0.2")
    assert code == 0
    train = read_records_jsonl(tmp_path / "train.jsonl")
    held_out = read_records_jsonl(tmp_path / "eval.jsonl")
    assert len(train) == result["train"]["count"] and len(held_out) == result["eval"]["count"]
    assert len(train) + len(held_out) == 500 and 50 <= len(held_out) <= 150
    train_prompts = {prompt_key(record_prompt(r)) for r in train}
    assert not train_prompts & {prompt_key(record_prompt(r)) for r in held_out}
    assert result["leakage"] == 0


def test_split_seed_changes_which_prompts_are_held_out(capsys, tmp_path):
    run_json(capsys, "split", "builtin:bundled", "-o", str(tmp_path / "a"), "--seed", "0")
    run_json(capsys, "split", "builtin:bundled", "-o", str(tmp_path / "b"), "--seed", "1")
    a = [r.id for r in read_records_jsonl(tmp_path / "a" / "eval.jsonl")]
    b = [r.id for r in read_records_jsonl(tmp_path / "b" / "eval.jsonl")]
    assert a != b


def test_agreement_json_has_every_key_and_flags_rater_4(capsys):
    code, report = run_json(capsys, "agreement", "builtin:bundled", "--agreement-bootstrap", "30")
    assert code == 0
    keys = {
        "n_items",
        "n_annotators",
        "labels",
        "percent_agreement",
        "cohen_kappa_pairwise",
        "fleiss_kappa",
        "krippendorff_alpha",
        "per_annotator",
        "band",
        "ci",
    }
    assert keys <= set(report)
    assert report["n_items"] == 500 and report["n_annotators"] == 5  # the whole dataset, not the train split
    assert report["unreliable"] == ["rater_4"]
    assert (
        report["per_annotator"]["rater_4"] < 0.2 < min(v for k, v in report["per_annotator"].items() if k != "rater_4")
    )
    assert "rater_1|rater_2" in report["cohen_kappa_pairwise"]
    low, high = report["ci"]["fleiss_kappa"]
    assert low <= report["fleiss_kappa"] <= high


def test_agreement_text_names_the_unreliable_annotator(capsys):
    code, out, _ = run(capsys, "agreement", "builtin:bundled", "--agreement-bootstrap", "0")
    assert code == 0
    assert "Leave-one-out kappa" in out  # format_report's table
    verdict = [line for line in out.splitlines() if line.startswith("unreliable")]
    assert len(verdict) == 1 and "rater_4" in verdict[0] and "rater_1" not in verdict[0]


def test_agreement_threshold_option_changes_who_is_flagged(capsys):
    _, report = run_json(
        capsys, "agreement", "builtin:bundled", "--agreement-bootstrap", "0", "--agreement-unreliable-below", "0.7"
    )
    assert report["unreliable"] == ["rater_4", "rater_5"]  # leave-one-out kappas -0.01 and 0.67


def test_agreement_without_labels_is_a_clear_error(capsys):
    code, out, err = run(capsys, "agreement", HH)
    assert code == 2 and out == ""
    assert "no annotator labels" in err and "rater_" in err


def test_inspect_shows_format_counts_and_records(capsys):
    code, out, _ = run(capsys, "inspect", HH)
    assert code == 0
    assert "format hh-rlhf" in out and "12 rows: 9 kept, 3 dropped" in out
    assert "hh_rlhf-0" in out and "Sir Amble" in out


def test_inspect_json_detects_sft_data(capsys):
    code, info = run_json(capsys, "inspect", "builtin:bundled-sft")
    assert code == 0
    assert info["kind"] == "sft" and info["sources"][0]["format"] == "sft-messages"
    assert info["split"]["train"] + info["split"]["eval"] == info["kept"] == 260
    assert len(info["records"]) == 3 and "messages" in info["records"][0]


def test_recipe_without_a_data_section_is_a_clear_error(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: builtin:tiny-llama\n")
    code, _, err = run(capsys, "inspect", str(recipe))
    assert code == 2 and "no data section" in err


@pytest.mark.parametrize("fraction", ["1.5", "-0.1"])
def test_out_of_range_options_are_usage_errors(capsys, fraction):
    code, _, err = run(capsys, "validate", HH, "--eval-fraction", fraction)
    assert code == 2 and "eval_fraction" in err
