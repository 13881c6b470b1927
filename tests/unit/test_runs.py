"""Lineage paths in manifests (align/runs.py): stored relative to the run root when they point inside it, absolute
otherwise, and resolved against where the run directory is now; manifests written before that rule still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from align.runs import RunDir, lineage_path, lineage_ref, lineage_weights


def _stage(root: Path, name: str, manifest: dict | None = None, adapter: bool = True) -> Path:
    d = root / name
    (d / "model").mkdir(parents=True)
    if adapter:
        (d / "model" / "adapter_config.json").write_text("{}")
    if manifest is not None:
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_lineage_path_is_relative_inside_the_run_root_and_absolute_outside(tmp_path, monkeypatch):
    run_root = tmp_path / "runs" / "x"
    dpo = run_root / "dpo"
    assert lineage_path(run_root / "sft" / "model", dpo) == "sft/model"
    monkeypatch.chdir(tmp_path)  # recipes give paths relative to the working directory
    assert lineage_path("runs/x/sft/model", "runs/x/dpo") == "sft/model"
    assert lineage_path("adapters/mine", "runs/x/dpo") == str(tmp_path / "adapters" / "mine")
    (tmp_path / "local-model").mkdir()
    assert lineage_ref("local-model", "runs/x/dpo") == str(tmp_path / "local-model")
    for ref in ("builtin:tiny-llama", "HuggingFaceTB/SmolLM2-135M-Instruct"):  # references, not paths: as given
        assert lineage_ref(ref, "runs/x/dpo") == ref
    weights = {
        "base": "builtin:tiny-llama",
        "merged": ["runs/x/sft/model"],
        "adapter": "runs/x/dpo/model",
        "head": "score",
    }
    assert lineage_weights(weights, "runs/x/dpo") == {
        "base": "builtin:tiny-llama",
        "merged": ["sft/model"],
        "adapter": "dpo/model",
        "head": "score",
    }


def test_relative_lineage_resolves_where_the_run_root_is_now_not_in_the_working_directory(tmp_path, monkeypatch):
    old_root = tmp_path / "old" / "x"
    manifest = {"run_root": str(old_root), "weights": {"base": "sft/model", "merged": ["sft/model"]}}
    new_root = tmp_path / "moved" / "x"
    _stage(new_root, "sft", adapter=False)  # a full model, recorded as the base and merged
    dpo = _stage(new_root, "dpo", manifest)
    decoy = tmp_path / "cwd"
    (decoy / "sft" / "model").mkdir(parents=True)  # an unrelated sft/model under the working directory
    monkeypatch.chdir(decoy)
    run = RunDir.of(dpo)
    assert run.merged() == [new_root / "sft" / "model"]
    assert run.base_ref() == str(new_root / "sft" / "model")


def test_a_stage_copied_out_of_its_run_finds_its_lineage_where_it_was_written(tmp_path):
    run_root = tmp_path / "runs" / "x"
    _stage(run_root, "sft")
    manifest = {"run_root": str(run_root), "weights": {"merged": ["sft/model"]}, "reward_model": "rm"}
    (run_root / "rm").mkdir()
    dpo = _stage(run_root, "dpo", manifest)
    copy = tmp_path / "elsewhere" / "ppo"
    shutil.copytree(dpo, copy)
    run = RunDir.of(copy)
    assert run.merged() == [run_root / "sft" / "model"]
    assert run.reward_model() == str(run_root / "rm")


def test_manifests_written_before_relative_lineage_still_load(tmp_path, monkeypatch):
    # Absolute paths, and paths relative to the directory the pipeline ran in, as align wrote them before.
    ran_in = tmp_path / "ran_here"
    sft = _stage(ran_in / "runs" / "x", "sft")
    absolute = {"weights": {"base": "builtin:tiny-llama", "merged": [str(sft / "model")]}}
    assert RunDir.of(_stage(ran_in / "runs" / "x", "rm", absolute)).merged() == [sft / "model"]
    cwd_relative = {"weights": {"base": "builtin:tiny-llama", "merged": ["runs/x/sft/model"]}}
    dpo = _stage(ran_in / "runs" / "x", "dpo", cwd_relative)
    monkeypatch.chdir(ran_in)
    assert RunDir.of(dpo).merged() == [Path("runs/x/sft/model")]
    moved = tmp_path / "moved"
    shutil.copytree(ran_in / "runs", moved)
    monkeypatch.chdir(tmp_path)
    run = RunDir.of(moved / "x" / "dpo")
    assert run.merged() == [moved / "x" / "sft" / "model"]
    assert run.base_ref() == "builtin:tiny-llama"
