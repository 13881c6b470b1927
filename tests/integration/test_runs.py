"""Run directories and weights (align/runs.py): one loader for reward models and policies, full-model init_from,
relocatable pipeline directories, and a model card from every stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from align.config import load_recipe
from align.pipeline import build_pipeline, run_pipeline
from align.tracking import read_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sft_then_rm(tmp_path_factory, align_home, tiny_model_dir):
    """The tiny pipeline's SFT and RM (initialised from SFT), run with a relative root from one directory."""
    here = tmp_path_factory.mktemp("ran_here")
    old = Path.cwd()
    import os

    os.chdir(here)
    try:
        pipe = build_pipeline(str(ROOT / "recipes/tiny/pipeline.yaml"), ["root=runs", "stages=[sft, rm]"])
        run_pipeline(pipe)
    finally:
        os.chdir(old)
    return here, pipe


def _eval_rows(recipe, tok):
    from align.data.prepare import prepare_preferences
    from align.templates import Encoder

    data = prepare_preferences(recipe.data, recipe.agreement)
    enc = Encoder(tok, max_length=recipe.training.max_length)
    return [enc.reward_pair(r.prompt, r.chosen, r.rejected) for r in data.eval]


def test_a_reward_model_on_sft_scores_the_same_through_every_loader(sft_then_rm, monkeypatch, capsys):
    from align.cli import main
    from align.models import load_reward_model as models_loader
    from align.reward_models import RewardModelScorer
    from align.runs import load_reward_model
    from align.stages.reward import evaluate_pairs, score_sequences

    here, pipe = sft_then_rm
    monkeypatch.chdir(here)
    rm = pipe.stage_dir("rm")
    assert read_manifest(rm)["weights"]["merged"], "the RM was meant to start from SFT"
    stats = json.loads((rm / "model" / "reward_stats.json").read_text())  # the RM stage's own eval
    model, tok, info = load_reward_model(str(rm))  # `align data agreement --model`
    assert info["merged"] and info["adapter_dir"] == rm / "model"
    rows = _eval_rows(pipe.recipes["rm"], tok)
    assert evaluate_pairs(model, rows, tok.pad_token_id)["reward_mean"] == pytest.approx(stats["mean"], abs=1e-5)
    seqs = [r["chosen_ids"] for r in rows]
    expected = score_sequences(model, seqs, tok.pad_token_id)
    scorer = RewardModelScorer(str(rm), tok)  # PPO's scorer and `align compare --judge`
    assert score_sequences(scorer.model, seqs, tok.pad_token_id) == pytest.approx(expected, abs=1e-5)
    old_name, _ = models_loader(str(rm))
    assert score_sequences(old_name, seqs, tok.pad_token_id) == pytest.approx(expected, abs=1e-5)
    capsys.readouterr()
    recipe = str(ROOT / "recipes/tiny/rm.yaml")
    assert main(["data", "agreement", recipe, "--model", str(rm), "--json", "--agreement-bootstrap", "0"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["vs_majority"]["accuracy"] <= 1.0


def test_lineage_inside_the_run_root_is_stored_relative_to_it(sft_then_rm):
    """The RM trained on SFT records SFT, itself and its parent relative to the run root (runs/<name>/), not as the
    paths the pipeline was given from the directory it ran in (runs/<name>/sft/model)."""
    here, pipe = sft_then_rm
    m = read_manifest(here / pipe.stage_dir("rm"))
    assert m["weights"]["merged"] == ["sft/model"] and m["weights"]["adapter"] == "rm/model"
    assert m["parent"] == "sft/model" and m["model_dir"] == "rm/model"
    assert m["weights"]["base"] == "builtin:tiny-llama"  # a model reference, not a path: as given
    assert m["run_root"] == str(here / pipe.stage_dir("rm").parent)


def test_a_moved_pipeline_directory_compares_from_another_working_directory(sft_then_rm, tmp_path, monkeypatch):
    from align.cli import main

    here, pipe = sft_then_rm
    moved = tmp_path / "elsewhere" / "moved-runs"
    shutil.copytree(here / "runs", moved)
    monkeypatch.chdir(tmp_path)
    name = pipe.name
    args = ["compare", f"{moved}/{name}/sft", "--judge", f"{moved}/{name}/rm", "--max-prompts", "2"]
    args += ["--max-new-tokens", "4", "--kl-samples", "1", "-o", str(tmp_path / "report")]
    assert main(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["judge"].startswith(str(moved)) and "sft" in report["checkpoints"]


def test_a_full_model_init_from_is_trained_from_recorded_and_rebuilt(tmp_path, tiny_model_dir):
    from align.models import load_causal_lm, load_tokenizer
    from align.runs import load_policy
    from align.stages import sft

    full = tmp_path / "full-model"
    model = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        model.get_input_embeddings().weight.add_(0.5)  # a model that differs from the base
    model.save_pretrained(str(full))
    load_tokenizer(str(tiny_model_dir)).save_pretrained(str(full))
    recipe = load_recipe(
        sft.Recipe,
        ROOT / "recipes/tiny/sft.yaml",
        [f"run.root={tmp_path}", f"init_from={full}", "training.max_steps=1", "training.save_steps=1"],
    )
    out = sft.run(recipe)
    weights = read_manifest(out)["weights"]
    assert weights["base"] == str(full) and weights["merged"] == []
    rebuilt, _, info = load_policy(str(out))  # what compare loads
    assert info["base"] == str(full)
    with rebuilt.disable_adapter():
        emb = rebuilt.get_input_embeddings().weight
    assert torch.allclose(emb, model.get_input_embeddings().weight)
