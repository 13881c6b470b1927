"""Checkpoints are verified, not assumed (issue 15): a marker written last, JSON that parses, whole safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from align.stages.common import (
    CHECKPOINT_MARKER,
    checkpoint_problems,
    find_resume_checkpoint,
    is_complete_checkpoint,
    write_checkpoint_marker,
)


def hf_checkpoint(path: Path, marker: bool = True) -> Path:
    """A checkpoint laid out as the HF Trainer writes one (tiny contents)."""
    path.mkdir(parents=True)
    save_file({"lora_A": torch.zeros(4, 8), "lora_B": torch.ones(8, 4)}, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (path / "trainer_state.json").write_text(json.dumps({"global_step": int(path.name.split("-")[-1])}))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({"x": 1}, path / name)
    if marker:
        write_checkpoint_marker(path)
    return path


@pytest.mark.parametrize("marker", [True, False])
def test_empty_trainer_state_in_the_newest_checkpoint_falls_back_to_the_previous(tmp_path, marker):
    good = hf_checkpoint(tmp_path / "checkpoint-3", marker)
    newest = hf_checkpoint(tmp_path / "checkpoint-6", marker)
    assert find_resume_checkpoint(tmp_path, log=lambda *a: None) == str(newest)
    (newest / "trainer_state.json").write_text("")
    logs: list[str] = []
    assert find_resume_checkpoint(tmp_path, log=logs.append) == str(good)
    assert "checkpoint-6 is incomplete" in logs[0]
    assert any("trainer_state.json" in p for p in checkpoint_problems(newest))


@pytest.mark.parametrize("marker", [True, False])
def test_half_length_safetensors_in_the_newest_checkpoint_falls_back_to_the_previous(tmp_path, marker):
    good = hf_checkpoint(tmp_path / "checkpoint-3", marker)
    newest = hf_checkpoint(tmp_path / "checkpoint-6", marker)
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert find_resume_checkpoint(tmp_path, log=lambda *a: None) == str(good)
    assert any("adapter_model.safetensors" in p for p in checkpoint_problems(newest))


def test_a_checkpoint_without_its_marker_file_list_is_judged_by_its_files(tmp_path):
    ckpt = hf_checkpoint(tmp_path / "checkpoint-2")
    assert (ckpt / CHECKPOINT_MARKER).is_file() and is_complete_checkpoint(ckpt)
    (ckpt / "rng_state.pth").unlink()  # listed in the marker: missing now
    assert checkpoint_problems(ckpt) == ["rng_state.pth is missing"]
    (ckpt / CHECKPOINT_MARKER).unlink()  # an older checkpoint: the required HF files decide
    assert "rng_state.pth is missing" in checkpoint_problems(ckpt)


def test_safetensors_header_longer_than_the_file_is_caught(tmp_path):
    from align.stages.common import safetensors_problem

    f = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(16)}, str(f))
    assert safetensors_problem(f) is None
    f.write_bytes(f.read_bytes() + b"\0")  # longer than the header says: also not the file that was written
    assert "truncated" in safetensors_problem(f)
    f.write_bytes(b"\x10\0\0\0\0\0\0\0{")
    assert safetensors_problem(f)


def test_explicit_resume_from_a_checkpoint_lacking_its_optimizer_is_a_config_error(tmp_path):
    from align.config import ConfigError, load_recipe
    from align.stages import sft
    from align.stages.common import plan_stage

    root = Path(__file__).resolve().parents[2]
    ckpt = hf_checkpoint(tmp_path / "elsewhere" / "checkpoint-3")
    recipe = load_recipe(sft.Recipe, root / "recipes/tiny/sft.yaml", [f"run.root={tmp_path}", f"run.resume={ckpt}"])
    assert plan_stage(recipe, log=lambda *a: None).checkpoint == str(ckpt)
    (ckpt / "optimizer.pt").unlink()
    with pytest.raises(ConfigError, match=r"not a complete checkpoint: optimizer\.pt is missing"):
        plan_stage(recipe, log=lambda *a: None)
    (ckpt / CHECKPOINT_MARKER).unlink()  # written by an older align: the same requirement holds
    with pytest.raises(ConfigError, match=r"optimizer\.pt is missing"):
        plan_stage(recipe, log=lambda *a: None)


def test_resume_never_on_an_existing_run_starts_clean_and_keeps_the_old_one_aside(tmp_path):
    from align.config import load_recipe
    from align.stages import sft
    from align.stages.common import plan_stage

    root = Path(__file__).resolve().parents[2]
    recipe = load_recipe(sft.Recipe, root / "recipes/tiny/sft.yaml", [f"run.root={tmp_path}", "run.resume=never"])
    out = tmp_path / "tiny" / "sft"
    (out / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 7.0}\n')  # an interrupted earlier attempt
    plan = plan_stage(recipe, log=lambda *a: None)
    assert plan.action == "start" and plan.checkpoint is None
    assert not (out / "metrics.jsonl").exists()  # was appended to (issue 15)
    prev = tmp_path / "tiny" / "sft.prev"
    assert (prev / "metrics.jsonl").read_text().startswith('{"step": 1') and (prev / "checkpoints").is_dir()
