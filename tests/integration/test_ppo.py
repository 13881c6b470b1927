"""align's own PPO stage on the tiny model: learning, exact resume, reward models (and their tokenizers), prompts,
config errors, the non-finite guard and a real two-process run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.config import ConfigError, LoraSection, load_recipe
from align.stages import ppo
from tests.fixtures.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny" / "ppo.yaml"
SMOL = ROOT / "recipes" / "smollm2-135m" / "ppo.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model is faster on one thread, and a 2-core runner is often shared with another job."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_recipe(tmp_path: Path, *overrides: str, name: str = "t") -> ppo.Recipe:
    return load_recipe(ppo.Recipe, TINY, [f"run.root={tmp_path}", f"run.name={name}", *overrides])


def metrics_of(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------
# Recipes and configuration errors


@pytest.mark.parametrize("path", [TINY, SMOL], ids=["tiny", "smollm2"])
def test_recipe_first_line_is_its_command_and_it_loads(path):
    assert path.read_text().splitlines()[0] == f"# align ppo {path.relative_to(ROOT)}"
    recipe = load_recipe(ppo.Recipe, path)
    assert recipe.ppo.rollout_batch_size % recipe.ppo.mini_batch_size == 0


def test_unknown_ppo_key_names_the_key_and_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"ppo\.learnig_rate.*Did you mean 'learning_rate'"):
        load_recipe(ppo.Recipe, TINY, ["ppo.learnig_rate=1e-3"])


def test_both_reward_model_and_reward_fn_is_rejected():
    with pytest.raises(ConfigError, match="Both reward_model .* and reward_fn"):
        load_recipe(ppo.Recipe, TINY, ["reward_model=runs/x/rm"])


def test_no_reward_at_all_is_rejected_with_both_options_named():
    with pytest.raises(ConfigError, match="No reward: set reward_model .* or reward_fn"):
        load_recipe(ppo.Recipe, TINY, ["reward_fn=null", "reward_fn_kwargs={}"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.mini_batch_size=5", "mini_batch_size=5 must divide rollout_batch_size=16"),
        ("ppo.gradient_accumulation_steps=3", "gradient_accumulation_steps=3 must divide mini_batch_size=8"),
        ("ppo.value_model=critic", "value_model='critic': use one of head, adapter"),
        ("ppo.value_learning_rate=0", "value_learning_rate=0.0: must be > 0"),
        ("ppo.reward_normalization=rm_stats", "rm_stats needs reward_model"),
        ("ppo.kl_estimator=k9", "kl_estimator='k9'"),
        ("reward_fn=no_colon", "write it as 'module:function'"),
        ("lora.enabled=false", "set lora.enabled=true"),
    ],
)
def test_invalid_settings_fail_at_load_with_a_fix(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(ppo.Recipe, TINY, [override])


def test_missing_data_section_says_what_to_add(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("reward_fn: align.stages.ppo:reward_contains\n")
    with pytest.raises(ConfigError, match="no data section"):
        load_recipe(ppo.Recipe, recipe)


# --------------------------------------------------------------------------------------------------------------
# Prompts


def test_prompts_come_from_prompt_only_preference_and_sft_sources():
    from align.data.prompts import load_prompts
    from align.data.spec import DataConfig

    for source, n_rows in (("builtin:bundled-eval-prompts", 20), ("builtin:bundled", 20), ("builtin:bundled-sft", 20)):
        cfg = DataConfig.from_dict({"sources": [{"path": source, "max_rows": n_rows}], "eval_fraction": 0.0})
        train, report = load_prompts(cfg)
        assert len(train) + report.duplicate_prompts == n_rows, source
        assert all(p.prompt[-1]["role"] == "user" and p.prompt[-1]["content"].strip() for p in train), source
        assert report.eval == []


def test_prompt_split_matches_the_data_layer_split_of_the_same_records():
    from align.data.load import load_preferences
    from align.data.prompts import load_prompts
    from align.data.spec import DataConfig
    from align.data.split import prompt_key

    cfg = DataConfig.from_dict({"sources": [{"path": "builtin:bundled", "max_rows": 120}], "eval_fraction": 0.25})
    train, report = load_prompts(cfg)
    prefs = load_preferences(cfg)
    assert {prompt_key(p.prompt) for p in train} == {prompt_key(r.prompt) for r in prefs.train}
    assert {prompt_key(p.prompt) for p in report.eval} == {prompt_key(r.prompt) for r in prefs.eval}
    assert report.eval, "the split should hold some prompts out"


def test_repeated_prompts_are_deduplicated_and_not_counted_as_drops(tmp_path):
    from align.data.prompts import load_prompts
    from align.data.spec import DataConfig

    rows = [{"id": f"p{i}", "prompt": "Same question?" if i < 3 else f"Question {i}?"} for i in range(6)]
    rows.append({"id": "empty", "prompt": "  "})
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig.from_dict({"sources": [str(path)], "eval_fraction": 0.0, "max_drop_fraction": 0.2})
    train, report = load_prompts(cfg)
    assert [p.id for p in train] == ["p0", "p3", "p4", "p5"]
    assert report.duplicate_prompts == 2
    assert report.drops.dropped == {"empty_prompt": 1}


def test_prompt_order_is_seeded_covers_every_prompt_and_shards_are_disjoint():
    first = ppo.prompt_indices(10, seed=3, start=0, count=10)
    assert sorted(first) == list(range(10))
    assert ppo.prompt_indices(10, seed=3, start=4, count=8) == (first + ppo.prompt_indices(10, 3, 10, 10))[4:12]
    assert ppo.prompt_indices(10, seed=4, start=0, count=10) != first
    world, per = 2, 4
    order = ppo.prompt_indices(10, seed=3, start=0, count=world * per)
    shards = [order[r * per : (r + 1) * per] for r in range(world)]
    assert not set(shards[0]) & set(shards[1])


# --------------------------------------------------------------------------------------------------------------
# Rollout pieces


def test_response_mask_ends_at_the_first_eos_even_when_pad_equals_eos():
    eos = 2
    responses = torch.tensor([[5, 6, eos, eos, eos], [5, eos, 7, eos, eos], [5, 6, 7, 8, 9]])
    mask, has_eos = ppo.response_mask(responses, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert has_eos.tolist() == [True, True, False]


def test_log_probs_do_not_depend_on_left_padding(tiny_model_dir):
    from align.models import load_causal_lm

    model = load_causal_lm(str(tiny_model_dir)).eval()
    seqs = [[1, 10, 11, 12, 13, 14, 15], [1, 20, 21, 22], [1, 30]]
    ids, mask = ppo.left_pad(seqs, pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=ppo.position_ids_from_mask(mask)).logits
        for i, s in enumerate(seqs):
            alone = model(input_ids=torch.tensor([s])).logits[0]
            torch.testing.assert_close(logits[i, ids.shape[1] - len(s) :], alone, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# Learning, resume, guards


def test_policy_learns_the_programmatic_reward_while_kl_stays_finite(tiny_model_dir, tmp_path):
    out = ppo.run(tiny_recipe(tmp_path))
    rows = metrics_of(out)
    rewards = [r["reward/mean"] for r in rows]
    assert len(rows) == 10 and [r["iteration"] for r in rows] == list(range(1, 11))
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 3.0 and last > 1.4 * first, rewards
    assert all(abs(r["kl"]) < 1e3 for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # policy == reference before the first update
    # the first minibatch of every iteration sees the rollout policy: rollout and training forwards must agree
    assert all(r["ratio_first"] == pytest.approx(1.0, abs=1e-4) for r in rows)
    for key in ("time/generate", "time/score", "time/train", "time/generate_frac", "rollout_tokens_per_s",
                "entropy", "approx_kl", "clipfrac", "vf_clipfrac", "loss/policy", "loss/value",
                "explained_variance", "response_length/mean", "eos_rate", "kl_coef", "reward/std",
                "reward/non_score"):  # fmt: skip
        assert key in rows[-1], key
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["reward_fn"] == "align.stages.ppo:reward_contains" and manifest["reward_model"] is None
    assert manifest["metrics"]["reward/mean"] == rows[-1]["reward/mean"]
    model_dir = out / "model"
    for f in ("adapter_model.safetensors", "adapter_config.json", "value_head.safetensors", "chat_template.jinja"):
        assert (model_dir / f).is_file(), f
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["iteration"] for s in samples} == {5, 10} and all("response" in s for s in samples)
    # the same recipe again is skipped, a changed one is refused
    assert ppo.run(tiny_recipe(tmp_path)) == out
    with pytest.raises(ConfigError, match="different recipe"):
        ppo.run(tiny_recipe(tmp_path, "ppo.kl_coef=0.5"))


def test_separate_critic_adapter_learns_and_is_saved_apart_from_the_policy(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from align.models import load_causal_lm

    # Learning in 10 tiny iterations depends on the sample stream (not every seed clears the bar below, with either
    # critic); seed 1's stream does under the row-seeded sampler (align.eval.generation.RowSeededSampler).
    out = ppo.run(tiny_recipe(tmp_path, "ppo.value_model=adapter", "run.seed=1"))
    rows = metrics_of(out)
    rewards = [r["reward/mean"] for r in rows]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 3.0 and last > 1.4 * first, rewards
    assert all(abs(r["kl"]) < 1e3 for r in rows)
    assert all(r["ratio_first"] == pytest.approx(1.0, abs=1e-4) for r in rows)
    # policy and critic are clipped apart, and both groups did get gradients
    assert all(r["grad_norm/policy"] > 0 and r["grad_norm/critic"] > 0 for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["value_model"] == "adapter" and manifest["value_adapter_init"] == "fresh"
    assert manifest["weights"]["value_adapter"] == ppo.CRITIC_DIR
    model_dir = out / "model"
    policy = load_file(str(model_dir / "adapter_model.safetensors"))
    critic = load_file(str(model_dir / ppo.CRITIC_DIR / "adapter_model.safetensors"))
    assert policy.keys() == critic.keys()  # the same LoRA layout, saved as two adapters
    for weights in (policy, critic):  # both trained: LoRA B starts at zero
        assert max(float(t.abs().max()) for k, t in weights.items() if "lora_B" in k) > 1e-3
    assert not any(torch.equal(policy[k], critic[k]) for k in policy if "lora_B" in k)
    # model/ alone loads as the policy, model/critic as an adapter of its own on the same base
    base = load_causal_lm(str(tiny_model_dir))
    loaded = PeftModel.from_pretrained(base, str(model_dir))
    assert list(loaded.peft_config) == ["default"]
    loaded.load_adapter(str(model_dir / ppo.CRITIC_DIR), adapter_name="critic")
    assert (model_dir / "value_head.safetensors").is_file()


class StopAfter:
    """Test hook: raises KeyboardInterrupt after the given iteration, like Ctrl-C would."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def __call__(self, iteration: int, metrics: dict) -> None:
        if iteration == self.iteration:
            raise KeyboardInterrupt


@pytest.mark.parametrize("value_model", ["head", "adapter"])
def test_interrupted_run_resumes_to_exactly_the_uninterrupted_metrics(tiny_model_dir, tmp_path, value_model):
    settings = (
        f"ppo.value_model={value_model}",
        "ppo.num_iterations=5",
        "ppo.save_every=2",
        "ppo.rollout_batch_size=8",
        "ppo.mini_batch_size=4",
        "ppo.gradient_accumulation_steps=2",
        "ppo.adaptive_kl=true",
        "ppo.target_kl=1.0",
        "ppo.kl_horizon=100",
        "ppo.reward_normalization=running",
    )
    straight = metrics_of(ppo.run(tiny_recipe(tmp_path, *settings, name="straight")))
    with pytest.raises(KeyboardInterrupt):
        ppo.run(tiny_recipe(tmp_path, *settings, name="cut"), callbacks=[StopAfter(3)])
    stage = tmp_path / "cut" / "ppo"
    assert json.loads((stage / "manifest.json").read_text())["status"] == "failed"
    state = json.loads((stage / "checkpoints" / "checkpoint-2" / "state.json").read_text())
    assert state["iteration"] == 2 and state["prompt_cursor"] == 16
    assert state["running_moments"]["count"] == 16 and state["kl_controller"]["type"] == "adaptive"
    resumed = metrics_of(ppo.run(tiny_recipe(tmp_path, *settings, name="cut")))
    assert [r["iteration"] for r in resumed] == [1, 2, 3, 4, 5]  # iteration 3 was redone, not duplicated
    for a, b in zip(straight, resumed):
        for key in ("reward/mean", "reward/shaped_mean", "kl", "kl_coef", "loss/policy", "loss/value", "approx_kl",
                    "explained_variance"):  # fmt: skip
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["iteration"], key)
    assert straight[-1]["kl_coef"] != straight[0]["kl_coef"]  # the adaptive controller did move (and was restored)
    assert json.loads((stage / "manifest.json").read_text())["status"] == "complete"


def test_incomplete_checkpoint_is_skipped_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    good, torn = root / "checkpoint-2", root / "checkpoint-4"
    good.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(1, 2)}, str(good / "value_head.safetensors"))  # headers are verified too
    size = (good / "value_head.safetensors").stat().st_size
    (good / ppo.STATE_FILE).write_text(json.dumps({"files": {"value_head.safetensors": size}}))
    torn.mkdir()
    (torn / "value_head.safetensors").write_bytes(b"x" * 10)  # no state.json: cut off while saving
    warnings: list[str] = []
    assert ppo.find_checkpoint(root, log=warnings.append) == good
    assert len(warnings) == 1 and "checkpoint-4 is incomplete" in warnings[0]
    (good / "value_head.safetensors").write_bytes(b"x" * 3)  # a listed file with the wrong size
    assert not ppo.is_complete_checkpoint(good)


def test_non_finite_losses_skip_steps_and_abort_after_max_in_a_row(tiny_model_dir, tmp_path):
    from align.stages.common import NonFiniteError

    recipe = tiny_recipe(
        tmp_path, "reward_fn=tests.fixtures.rewards:reward_huge", "reward_fn_kwargs={}", "ppo.rollout_batch_size=8"
    )
    with pytest.raises(NonFiniteError, match="3 optimizer steps in a row"):
        ppo.run(recipe)
    manifest = json.loads((tmp_path / "t" / "ppo" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "NonFiniteError" in manifest["error"]


def test_broken_reward_function_fails_naming_it(tiny_model_dir, tmp_path):
    recipe = tiny_recipe(tmp_path, "reward_fn=tests.fixtures.rewards:reward_nan", "reward_fn_kwargs={}")
    with pytest.raises(ValueError, match="reward_fn tests.fixtures.rewards:reward_nan returned a non-finite"):
        ppo.run(recipe)
    with pytest.raises(ConfigError, match="no function 'nope'"):
        ppo.run(tiny_recipe(tmp_path, "reward_fn=tests.fixtures.rewards:nope", "reward_fn_kwargs={}", name="u"))


# --------------------------------------------------------------------------------------------------------------
# Reward models


def shifted_tokenizer(src: Path, out: Path, shift: int = 7) -> Path:
    """The tiny tokenizer with every id rotated by ``shift``: same texts, different ids (another vocabulary)."""
    data = json.loads((src / "tokenizer.json").read_text())
    size = len(data["model"]["vocab"])
    data["model"]["vocab"] = {tok: (i + shift) % size for tok, i in data["model"]["vocab"].items()}
    for added in data["added_tokens"]:
        added["id"] = (added["id"] + shift) % size
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(data))
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


def make_reward_model(tiny_model_dir: Path, stage: Path, *, tokenizer_dir: Path | None = None) -> Path:
    """A reward-model stage directory like `align rm` leaves: a SEQ_CLS LoRA adapter (score head saved with it),
    tokenizer, reward_stats.json, manifest. The adapter and head are random so scores differ between sequences."""
    from peft import get_peft_model

    from align.models import load_sequence_classifier, load_tokenizer, lora_config

    tok = load_tokenizer(str(tokenizer_dir or tiny_model_dir))
    torch.manual_seed(0)
    model = load_sequence_classifier(str(tiny_model_dir), pad_token_id=tok.pad_token_id)
    peft_model = get_peft_model(model, lora_config(LoraSection(r=4, alpha=8), "SEQ_CLS", ["score"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "score" in name:
                p.normal_(0.0, 0.5)
    model_dir = stage / "model"
    peft_model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    (model_dir / "reward_stats.json").write_text(json.dumps({"mean": 0.5, "std": 2.0, "n": 100}))
    manifest = {
        "stage": "rm",
        "status": "complete",
        "model": str(tiny_model_dir),
        "weights": {"base": str(tiny_model_dir), "merged": [], "adapter": str(model_dir), "head": "score"},
    }
    (stage / "manifest.json").write_text(json.dumps(manifest))
    return stage


def reference_scores(tiny_model_dir: Path, stage: Path, sequences: list[list[int]], pad_id: int) -> list[float]:
    """Scores from the adapter as saved (not merged), as the RM stage itself would compute them."""
    from peft import PeftModel

    from align.models import load_sequence_classifier
    from align.stages.reward import score_sequences

    model = load_sequence_classifier(str(tiny_model_dir), pad_token_id=pad_id)
    model = PeftModel.from_pretrained(model, str(stage / "model"))
    return score_sequences(model, sequences, pad_id)


def test_tokenizer_difference_detection(tiny_model_dir, tmp_path):
    from align.models import load_tokenizer

    policy = load_tokenizer(str(tiny_model_dir))
    assert not ppo.needs_retokenization(policy, load_tokenizer(str(tiny_model_dir)))
    shifted = load_tokenizer(str(shifted_tokenizer(tiny_model_dir, tmp_path / "shifted")))
    assert ppo.tokenizer_fingerprint(policy) != ppo.tokenizer_fingerprint(shifted)
    assert ppo.needs_retokenization(policy, shifted)
    other_template = load_tokenizer(str(tiny_model_dir))
    other_template.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert ppo.needs_retokenization(policy, other_template)  # same ids, but the RM expects another rendering


def test_retokenization_renders_with_the_reward_models_own_tokenizer(tiny_model_dir, tmp_path):
    from align.models import load_tokenizer
    from align.templates import Encoder

    policy = load_tokenizer(str(tiny_model_dir))
    shifted = load_tokenizer(str(shifted_tokenizer(tiny_model_dir, tmp_path / "shifted")))
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    reply = "Paris is the capital."
    policy_ids = Encoder(policy).reward_pair(prompt, *[[{"role": "assistant", "content": reply}]] * 2)["chosen_ids"]
    done, cut = ppo.retokenize_for_reward_model(Encoder(shifted), [prompt, prompt], [reply, reply], [True, False])
    assert shifted.decode(done) == policy.decode(policy_ids)  # the same conversation ...
    assert done != policy_ids  # ... in the reward model's ids, never the policy's
    assert done[-1] == shifted.eos_token_id and shifted.eos_token_id != policy.eos_token_id
    assert cut[-1] != shifted.eos_token_id and shifted.decode(cut).endswith(reply)


def test_reward_model_stage_dir_scores_like_the_saved_adapter(tiny_model_dir, tmp_path):
    from align.models import load_tokenizer

    policy_tok = load_tokenizer(str(tiny_model_dir))
    stage = make_reward_model(tiny_model_dir, tmp_path / "rm")
    scorer = ppo.RewardModelScorer(str(stage), policy_tok)
    assert not scorer.retokenize and scorer.stats["std"] == 2.0
    seqs = [[1, 3, 40, 41, 42, 2], [1, 3, 50, 2], [1, 3, 60, 61, 62, 63, 64, 2]]
    got = scorer([[{"role": "user", "content": "x"}]] * 3, seqs, ["", "", ""], [True] * 3)
    want = reference_scores(tiny_model_dir, stage, seqs, policy_tok.pad_token_id)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)  # merged vs unmerged LoRA: fp32 rounding only
    assert len(set(round(g, 4) for g in got)) == 3


def test_reward_model_with_another_vocabulary_gets_retokenized_text(tiny_model_dir, tmp_path):
    from align.models import load_tokenizer
    from align.stages.reward import score_sequences
    from align.templates import Encoder

    policy_tok = load_tokenizer(str(tiny_model_dir))
    tok_dir = shifted_tokenizer(tiny_model_dir, tmp_path / "shifted")
    stage = make_reward_model(tiny_model_dir, tmp_path / "rm", tokenizer_dir=tok_dir)
    scorer = ppo.RewardModelScorer(str(stage), policy_tok)
    assert scorer.retokenize
    prompts = [[{"role": "user", "content": "Name a colour."}], [{"role": "user", "content": "Count to two."}]]
    texts, ended = ["Blue.", "One, two"], [True, False]
    policy_seqs = [Encoder(policy_tok).prompt(p) + policy_tok(t, add_special_tokens=False)["input_ids"]
                   for p, t in zip(prompts, texts)]  # fmt: skip
    got = scorer(prompts, policy_seqs, texts, ended)
    rm_seqs = ppo.retokenize_for_reward_model(Encoder(scorer.tokenizer), prompts, texts, ended)
    assert got == pytest.approx(score_sequences(scorer.model, rm_seqs, scorer.tokenizer.pad_token_id), abs=1e-6)
    assert got != pytest.approx(score_sequences(scorer.model, policy_seqs, scorer.tokenizer.pad_token_id), abs=1e-6)


def test_ppo_against_a_reward_model_records_it_and_starts_the_critic_from_its_head(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    stage = make_reward_model(tiny_model_dir, tmp_path / "rm")
    recipe = tiny_recipe(
        tmp_path,
        "reward_fn=null",
        "reward_fn_kwargs={}",
        f"reward_model={stage}",
        "ppo.reward_normalization=rm_stats",
        "ppo.reward_clip=50",
        "ppo.value_init=reward_model",
        "ppo.missing_eos_penalty=1.0",
        "ppo.num_iterations=2",
        "ppo.save_every=1",
        "ppo.rollout_batch_size=8",
        "ppo.mini_batch_size=4",
    )
    out = ppo.run(recipe)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["reward_model"] == str(stage.resolve())
    assert manifest["value_init"] == "reward_model" and manifest["reward_retokenized"] is False
    assert manifest["weights"]["adapter"] == "ppo/model"  # relative to the run root (issue 13); was str(out / "model")
    card = (out / "model" / "README.md").read_text()  # PPO finishes like every stage: with a model card
    assert card.startswith("---\nbase_model:") and "- rlhf" in card and "# ppo checkpoint" in card
    # shaped score = clip((raw - 1.0 * missing_eos - stats mean 0.5) / stats std 2.0, 50)
    for r in metrics_of(out):
        expected = (r["reward/mean"] - 1.0 * (1.0 - r["eos_rate"]) - 0.5) / 2.0
        assert r["reward/shaped_mean"] == pytest.approx(expected, abs=1e-4)
    score_w = load_file(str(stage / "model" / "adapter_model.safetensors"))
    score_key = next(k for k in score_w if "score" in k)
    head = load_file(str(out / "checkpoints" / "checkpoint-1" / "value_head.safetensors"))
    assert head["weight"].shape == score_w[score_key].shape
    # one iteration of updates moves the head only a little from the RM score head it started from
    assert torch.nn.functional.cosine_similarity(head["weight"].flatten(), score_w[score_key].flatten(), dim=0) > 0.9


def test_critic_adapter_from_the_reward_model_starts_as_the_reward_model(tiny_model_dir, tmp_path):
    from align.models import load_tokenizer
    from align.stages import common

    stage = make_reward_model(tiny_model_dir, tmp_path / "rm")
    recipe = tiny_recipe(
        tmp_path, "reward_fn=null", "reward_fn_kwargs={}", f"reward_model={stage}", "ppo.value_model=adapter",
        "ppo.value_init=reward_model", "ppo.value_learning_rate=3e-4", "ppo.reward_normalization=rm_stats",
    )  # fmt: skip
    trainer = ppo.PPOTrainer(recipe, common.plan_stage(recipe, log=lambda *a: None))
    assert trainer.value_adapter_init == "reward_model" and trainer.value_init == "reward_model"
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [recipe.ppo.learning_rate, 3e-4]
    model = trainer.unwrapped
    seq = [1, 3, 40, 41, 42, 43, 44, 2]
    ids = torch.tensor([seq])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits, values = model(ids, mask, ppo.position_ids_from_mask(mask))
        with model.reference() as reference:
            ref_logits = reference(input_ids=ids, attention_mask=mask, use_cache=False).logits
    # the value at position k is the reward model's score of the prefix that ends there, on the scale PPO optimises
    # (normalised by the reward model's stored stats: mean 0.5, std 2.0)
    pad = load_tokenizer(str(tiny_model_dir)).pad_token_id
    want = reference_scores(tiny_model_dir, stage, [seq[: k + 1] for k in range(1, len(seq))], pad)
    assert values[0, 1:].tolist() == pytest.approx([(w - 0.5) / 2.0 for w in want], rel=1e-4, abs=1e-4)
    assert len(set(round(v, 3) for v in want)) > 3  # the check can tell prefixes apart
    # the critic adapter never reaches the policy's logits (a fresh policy LoRA still equals the reference)
    torch.testing.assert_close(logits, ref_logits)
    # after the reference pass (peft re-freezes inactive adapters) policy and critic are both trainable, and they
    # are clipped as two disjoint groups covering every trainable weight
    groups = model.clip_groups()
    assert set(groups) == {"policy", "critic"}
    assert all(p.requires_grad for g in groups.values() for p in g)
    policy_ids, critic_ids = ({id(p) for p in g} for g in groups.values())
    assert not policy_ids & critic_ids
    assert len(policy_ids | critic_ids) == sum(p.requires_grad for p in model.parameters())
    assert {id(p) for p in model.value_head.parameters()} <= critic_ids


# --------------------------------------------------------------------------------------------------------------
# Two processes (gloo)


@pytest.mark.parametrize("value_model", ["head", "adapter"])
def test_two_process_cpu_run_leaves_one_model_and_one_manifest(tiny_model_dir, align_home, tmp_path, value_model):
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is installed (accelerate 1.15);
    # a real two-process gloo run on CPU is `--multi_gpu` with ACCELERATE_USE_CPU=1.
    env = {**os.environ, "ALIGN_HOME": str(align_home), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(free_port()),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "align", "ppo", str(TINY), f"run.root={tmp_path}", "run.name=dist",
        "ppo.num_iterations=2", "ppo.rollout_batch_size=4", "ppo.mini_batch_size=2", "ppo.save_every=1",
        "ppo.sample_every=1", f"ppo.value_model={value_model}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "dist" / "ppo"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["processes"] == 2
    assert [p.name for p in tmp_path.rglob("manifest.json")] == ["manifest.json"]
    per_dir = 2 if value_model == "adapter" else 1  # the policy, and the critic adapter when there is one
    assert len(list(tmp_path.rglob("adapter_model.safetensors"))) == 2 * per_dir  # model/ and the kept checkpoint
    assert (out / "model" / "value_head.safetensors").is_file()
    rows = metrics_of(out)
    assert [r["iteration"] for r in rows] == [1, 2]  # one row per iteration, not one per process
    ckpt = out / "checkpoints" / "checkpoint-1"
    assert (ckpt / "rng_state_0.json").is_file() and (ckpt / "rng_state_1.json").is_file()
    assert json.loads((ckpt / "state.json").read_text())["prompt_cursor"] == 8  # 4 prompts x 2 processes


def test_gradient_accumulation_gives_the_same_update_as_one_big_minibatch(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    # every tiny-model response runs to max_new_tokens, so micro-batch means average to the minibatch mean
    # Seed 1: with the default seed's sample stream one of 512 weights lands 1.3e-4 apart, where its gradient nearly
    # cancels and Adam divides the summation-order noise by a tiny second moment; the other 511 agree to 1e-5.
    common = (
        "ppo.num_iterations=1", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4", "ppo.ppo_epochs=1", "run.seed=1",
    )  # fmt: skip
    one = ppo.run(tiny_recipe(tmp_path, *common, name="one"))
    two = ppo.run(tiny_recipe(tmp_path, *common, "ppo.gradient_accumulation_steps=2", name="two"))
    assert metrics_of(one)[0]["eos_rate"] == 0.0
    a = load_file(str(one / "model" / "adapter_model.safetensors"))
    b = load_file(str(two / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    moved = max(float(t.abs().max()) for k, t in a.items() if "lora_B" in k)
    assert moved > 1e-3  # the update did something (LoRA B starts at zero)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_watch_in_ppo_fires_stops_and_resumes_its_series(tiny_model_dir, tmp_path):
    watch = ("watch.judge=tests.fixtures.rewards:judge_fewer_e", "watch.window=3", "watch.stop_on_divergence=true")
    out = ppo.run(tiny_recipe(tmp_path, *watch))
    manifest = json.loads((out / "manifest.json").read_text())
    fired = manifest["watch"]["diverged"]
    assert fired is not None and manifest["watch"]["stopped_at"] == fired["iteration"] < 10
    rows = metrics_of(out)
    assert [r["iteration"] for r in rows] == list(range(1, fired["iteration"] + 1))  # stopped there
    # the judge is -(number of e), the proxy PPO's shaped score +(number of e): the judge mirrors it
    assert all(r["watch/judge"] == pytest.approx(-r["watch/proxy"]) for r in rows)
    assert (out / "watch.png").is_file() and "## Reward-hacking watch" in (out / "model" / "README.md").read_text()

    # interrupted after a checkpoint, the resumed run's watch continues from the logged points
    settings = (*watch[:2], "ppo.save_every=2", "ppo.num_iterations=4")
    straight = ppo.run(tiny_recipe(tmp_path, *settings, name="straight"))
    with pytest.raises(KeyboardInterrupt):
        ppo.run(tiny_recipe(tmp_path, *settings, name="cut"), callbacks=[StopAfter(3)])
    resumed = ppo.run(tiny_recipe(tmp_path, *settings, name="cut"))
    a, b = metrics_of(straight), metrics_of(resumed)
    assert [r["watch/judge"] for r in b] == pytest.approx([r["watch/judge"] for r in a])
    assert json.loads((resumed / "manifest.json").read_text())["watch"]["points"] == 4
