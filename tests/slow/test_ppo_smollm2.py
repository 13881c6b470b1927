"""PPO's critic adapter on the real SmolLM2-135M-Instruct (marked slow: it loads the real model; about a minute)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from align.config import load_recipe
from align.stages import common, ppo
from tests.integration.test_ppo import make_reward_model, metrics_of, reference_scores

ROOT = Path(__file__).resolve().parents[2]
SMOL = ROOT / "recipes" / "smollm2-135m" / "ppo.yaml"

pytestmark = pytest.mark.slow


def test_smollm2_critic_adapter_starts_as_the_reward_model_and_a_run_saves_it(real_align_home, tmp_path):
    from align.models import fetch_builtin, load_tokenizer

    base = fetch_builtin("smollm2-135m-instruct")
    stage = make_reward_model(base, tmp_path / "rm")  # a random LoRA reward model on SmolLM2
    recipe = load_recipe(
        ppo.Recipe,
        SMOL,
        [
            f"run.root={tmp_path}", "run.name=smol", "init_from=null", f"reward_model={stage}",
            "model.dtype=float32", "ppo.bf16=false", "ppo.value_model=adapter", "ppo.value_init=reward_model",
            "ppo.num_iterations=1", "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4", "ppo.max_new_tokens=8",
            "ppo.save_every=0", "ppo.sample_every=0",
        ],
    )  # fmt: skip
    trainer = ppo.PPOTrainer(recipe, common.plan_stage(recipe, log=lambda *a: None))
    assert trainer.value_adapter_init == "reward_model"
    tok = load_tokenizer(base)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue, like the sky."}]
    )
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    seq = torch.tensor([ids])
    mask = torch.ones_like(seq)
    with torch.no_grad():
        _, values = trainer.unwrapped(seq, mask, ppo.position_ids_from_mask(mask))
    # sequence classifiers score the last token that is not padding; SmolLM2 pads with its end-of-turn token, so
    # prefixes that end with it are scored one token earlier and are left out of the comparison
    cuts = [k for k in range(len(ids) - 8, len(ids)) if ids[k] != tok.pad_token_id]
    want = reference_scores(base, stage, [ids[: k + 1] for k in cuts], tok.pad_token_id)
    # the recipe normalises scores by the RM's stored stats (mean 0.5, std 2.0): the critic predicts on that scale
    assert values[0, cuts].tolist() == pytest.approx([(w - 0.5) / 2.0 for w in want], rel=1e-3, abs=1e-3)
    del trainer

    out = ppo.run(recipe)
    rows = metrics_of(out)
    assert len(rows) == 1 and rows[0]["ratio_first"] == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["grad_norm/critic"] > 0 and rows[0]["grad_norm/policy"] > 0
    assert (out / "model" / ppo.CRITIC_DIR / "adapter_model.safetensors").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["value_model"] == "adapter" and manifest["value_adapter_init"] == "reward_model"
