"""The kto stage on the tiny model: trains LoRA only, resumes to the uninterrupted run's metrics, writes a manifest,
a model card and a data card, keeps its reference explicit, and runs in the tiny pipeline (seconds each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from transformers import TrainerCallback

from align.config import ConfigError, load_recipe
from align.data.card import card_hash_for
from align.pipeline import build_pipeline, run_pipeline
from align.stages import kto
from align.tracking import read_manifest
from tests.fixtures.interrupt import InterruptAt

ROOT = Path(__file__).resolve().parents[2]


def recipe(root: Path, *overrides: str):
    return load_recipe(kto.Recipe, ROOT / "recipes" / "tiny" / "kto.yaml", [f"run.root={root}", *overrides])


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if key in row and "step" in row:
            out[row["step"]] = row[key]
    return out


class Capture(TrainerCallback):
    def __init__(self):
        self.model = None
        self.labels: list[bool] = []

    def on_train_begin(self, args, state, control, train_dataloader=None, **kw):
        self.labels = list(train_dataloader.dataset["label"])  # the order the sequential sampler reads

    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


def test_kto_trains_lora_only_and_writes_manifest_model_card_and_data_card(tmp_path, tiny_model_dir):
    cap = Capture()
    out = kto.run(recipe(tmp_path), callbacks=[cap])
    steps = losses(out)
    assert sorted(steps) == list(range(1, 7)) and all(math.isfinite(v) for v in steps.values())
    m = read_manifest(out)
    assert m["status"] == "complete" and m["stage"] == "kto" and m["data"]["fingerprint"]
    drops = m["data"]["drops"]
    assert drops["total"] == 64 and drops["kept"] + sum(drops["dropped"].values()) == drops["total"]
    balance = m["label_balance"]
    assert balance["train"]["desirable"] == balance["train"]["undesirable"] > 0  # pairs unpaired: one of each
    assert m["data"]["train"] == 2 * balance["train"]["desirable"]
    # Read in order (TRL's KL estimate pairs neighbours) but shuffled once: not the file's chosen, rejected, ... order.
    assert len(cap.labels) == m["data"]["train"] and cap.labels != [True, False] * (len(cap.labels) // 2)
    # Policy == reference at step 0: rewards and KL 0, loss 1 - sigmoid(0) per row.
    assert m["step0"]["loss"] == pytest.approx(0.5, abs=1e-6) and m["step0"]["rewards_chosen"] == 0
    assert m["compact_lm_head"] is True and "kl" in m["metrics"] and "rewards/margins" in m["metrics"]
    assert m["data_card"] == card_hash_for(out / "data.json")
    assert "### Label balance" in (out / "data.md").read_text()
    facts = json.loads((out / "data.json").read_text())
    assert facts["labels"]["train"] == balance["train"] and facts["agreement"]["n_items"] > 0
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and "- kto" in card
    assert (out / "model" / "adapter_model.safetensors").is_file()
    lora_b = [p for n, p in cap.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    assert all("lora_" in n for n, p in cap.model.named_parameters() if p.requires_grad)


def test_kto_resumes_after_an_interruption_to_the_uninterrupted_runs_metrics(tmp_path, tiny_model_dir):
    full_dir = kto.run(recipe(tmp_path / "a"))
    full = losses(full_dir)
    with pytest.raises(KeyboardInterrupt):
        kto.run(recipe(tmp_path / "b"), callbacks=[InterruptAt(4)])
    assert read_manifest(tmp_path / "b" / "tiny" / "kto")["status"] == "failed"
    out = kto.run(recipe(tmp_path / "b"))
    resumed = losses(out)
    assert read_manifest(out)["attempts"] == 2
    for step in (4, 5, 6):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    for key in ("kl", "rewards/margins"):
        assert losses(out, key)[6] == pytest.approx(losses(full_dir, key)[6], rel=1e-5, abs=1e-6), key
    full_m, resumed_m = read_manifest(full_dir)["metrics"], read_manifest(out)["metrics"]
    assert resumed_m["train_loss"] == pytest.approx(full_m["train_loss"], rel=1e-5)
    assert resumed_m["num_tokens"] == full_m["num_tokens"]
    assert resumed_m["eval_loss"] == pytest.approx(full_m["eval_loss"], rel=1e-5)


def test_kto_step0_check_catches_a_reference_that_differs_from_the_policy(tmp_path, tiny_model_dir, monkeypatch):
    from align.stages import common
    from align.stages.dpo import ReferenceCheckError

    real = common.StageContext.peft_config

    def random_adapter(self, task_type, modules_to_save=None):
        cfg = real(self, task_type, modules_to_save)
        cfg.init_lora_weights = False  # B != 0: the policy no longer equals the adapter-off reference
        return cfg

    monkeypatch.setattr(common.StageContext, "peft_config", random_adapter)
    with pytest.raises(ReferenceCheckError, match="Step-0 check failed"):
        kto.run(recipe(tmp_path))


def test_kto_reference_base_scores_against_the_base_not_a_copy_of_the_sft_adapter(tmp_path, tiny_model_dir):
    # TRL copies a PEFT model's adapter as a frozen "ref" adapter, which would make the reference the SFT policy and
    # the step-0 rewards exactly 0; with the base as reference they are beta x log(pi_sft / pi_base), not 0.
    from align.stages import sft

    sft_dir = sft.run(load_recipe(sft.Recipe, ROOT / "recipes" / "tiny" / "sft.yaml", [f"run.root={tmp_path}"]))
    out = kto.run(
        recipe(tmp_path, f"init_from={sft_dir}", "reference=base", "run.name=base-ref", "training.max_steps=1")
    )
    m = read_manifest(out)
    assert m["reference"] == "base" and m["weights"]["merged"] == []
    assert abs(m["step0"]["rewards_chosen"]) > 1e-5 and abs(m["step0"]["rewards_rejected"]) > 1e-5


def test_kto_recipe_refuses_shuffled_sampling_and_batches_of_one_before_loading_anything(tmp_path):
    with pytest.raises(ConfigError, match="sequential"):
        recipe(tmp_path, "training.train_sampling_strategy=random")
    with pytest.raises(ConfigError, match="at least 2"):
        recipe(tmp_path, "training.per_device_train_batch_size=1")
    assert recipe(tmp_path, "training.loss_type=apo_zero_unpaired", "training.train_sampling_strategy=random")


def test_kto_runs_in_the_tiny_pipeline_from_sft_and_is_compared(tmp_path, align_home, tiny_model_dir):
    pipe = build_pipeline(
        str(ROOT / "recipes" / "tiny" / "pipeline.yaml"),
        [f"root={tmp_path}", "stages=[data,sft,judge,kto,compare]", "compare.max_prompts=4", "compare.kl_samples=1"],
    )
    run_pipeline(pipe)
    m = read_manifest(pipe.stage_dir("kto"))
    assert m["status"] == "complete"
    assert m["weights"]["merged"] == ["sft/model"]  # started from SFT (reference = SFT), relative to the run root
    assert m["step0"]["loss"] == pytest.approx(0.5, abs=1e-6)
    report = json.loads((pipe.stage_dir("compare") / "report.json").read_text())
    assert set(report["checkpoints"]) == {"tiny-llama", "sft", "kto"}
    assert report["checkpoints"]["kto"]["vs_reference"]["reference"] == "sft"
