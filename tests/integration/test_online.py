"""GRPO and RLOO on TRL's trainers with the tiny model: training, resume, rewards, reference, sampling, pipeline, watch."""

from __future__ import annotations

import importlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from align.config import ConfigError, load_recipe
from align.tracking import read_manifest
from tests.fixtures.interrupt import InterruptAt

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"grpo": "align.stages.grpo", "rloo": "align.stages.rloo"}
STAGES = tuple(MODULES)


def recipe_for(stage: str, root: Path, *overrides: str):
    module = importlib.import_module(MODULES[stage])
    path = ROOT / "recipes" / "tiny" / f"{stage}.yaml"
    return module, load_recipe(module.Recipe, path, [f"run.root={root}", *overrides])


def rows_of(run_dir: Path, key: str) -> dict[int, dict]:
    """metrics.jsonl rows holding ``key``, by step (a resumed run's later rows replace the earlier ones)."""
    out: dict[int, dict] = {}
    for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if key in row and "step" in row:
            out[row["step"]] = row
    return out


class Capture(TrainerCallback):
    def __init__(self):
        self.model = None

    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


@pytest.fixture(scope="module")
def sft_and_rm(tmp_path_factory, align_home, tiny_model_dir):
    """An SFT run and a reward model trained on top of it (as the pipeline wires them)."""
    from align.stages import reward, sft

    root = tmp_path_factory.mktemp("runs")
    sft_dir = sft.run(load_recipe(sft.Recipe, ROOT / "recipes/tiny/sft.yaml", [f"run.root={root}"]))
    rm_dir = reward.run(
        load_recipe(reward.Recipe, ROOT / "recipes/tiny/rm.yaml", [f"run.root={root}", f"init_from={sft_dir}"])
    )
    return sft_dir, rm_dir


@pytest.mark.parametrize("stage", STAGES)
def test_stage_trains_the_lora_only_and_writes_metrics_manifest_and_card(stage, tmp_path, tiny_model_dir):
    module, recipe = recipe_for(stage, tmp_path)
    cap = Capture()
    out = module.run(recipe, callbacks=[cap])
    rows = rows_of(out, "loss")
    assert sorted(rows) == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in rows.values())
    for key in ("reward", "rewards/reward_contains/mean", "kl", "time/generate", "time/score", "time/rollout",
                "time/train", "rollout_tokens_per_s", "completions/mean_length"):  # fmt: skip
        assert key in rows[6], key
    assert rows[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter: policy == reference (adapter off)
    manifest = read_manifest(out)
    assert manifest["status"] == "complete" and manifest["stage"] == stage
    assert manifest["data"]["train"] + manifest["data"]["eval"] == 64 and manifest["data"]["fingerprint"]
    assert manifest["reward_fn"] == "align.stages.ppo:reward_contains" and manifest["reward_model"] is None
    assert manifest["sampling"]["temperature"] == 0.3 and manifest["weights"]["merged"] == []
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\nbase_model:") and f"- {stage}" in card and "- rlhf" in card
    # the adapter learned (LoRA B starts at zero); the base weights did not move
    from align.models import load_causal_lm

    base = load_causal_lm(str(tiny_model_dir)).state_dict()
    named = dict(cap.model.named_parameters())
    assert any(p.abs().sum() > 0 for n, p in named.items() if "lora_B" in n)
    for name, p in named.items():
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        if key in base:
            assert torch.equal(p.detach(), base[key]), name
    for f in ("adapter_model.safetensors", "adapter_config.json", "chat_template.jinja", "tokenizer_config.json"):
        assert (out / "model" / f).is_file(), f
    assert module.run(recipe_for(stage, tmp_path)[1]) == out  # the same recipe again is skipped
    with pytest.raises(ConfigError, match="different recipe"):
        module.run(recipe_for(stage, tmp_path, "training.beta=0.5")[1])


@pytest.mark.parametrize("stage", STAGES)
def test_resume_after_interruption_reproduces_the_uninterrupted_metrics(stage, tmp_path, tiny_model_dir):
    module, recipe = recipe_for(stage, tmp_path / "a")
    full_dir = module.run(recipe)
    full = rows_of(full_dir, "loss")

    module, recipe = recipe_for(stage, tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        module.run(recipe, callbacks=[InterruptAt(4)])
    cut = tmp_path / "b" / "tiny" / stage
    assert read_manifest(cut)["status"] == "failed"
    out = module.run(recipe_for(stage, tmp_path / "b")[1])
    assert read_manifest(out)["attempts"] == 2 and read_manifest(out)["status"] == "complete"
    resumed = rows_of(out, "loss")
    for step in (4, 5, 6):
        for key in ("loss", "reward", "kl", "completions/mean_length", "grad_norm"):
            assert resumed[step][key] == pytest.approx(full[step][key], rel=1e-5, abs=1e-6), (step, key)
    full_m, resumed_m = read_manifest(full_dir)["metrics"], read_manifest(out)["metrics"]
    assert resumed_m["train_loss"] == pytest.approx(full_m["train_loss"], rel=1e-5)
    if stage == "grpo":  # the recipe's watch: its series and verdict continue across the resume
        a, b = rows_of(full_dir, "watch/judge"), rows_of(out, "watch/judge")
        assert sorted(b) == list(range(1, 7))
        assert [b[s]["watch/proxy"] for s in b] == pytest.approx([a[s]["watch/proxy"] for s in a])
        assert read_manifest(out)["watch"]["points"] == 6


def test_generation_config_of_the_model_does_not_change_the_sampled_answers(tmp_path, tiny_model_dir):
    leaky = tmp_path / "leaky-model"
    shutil.copytree(tiny_model_dir, leaky)
    gen = json.loads((leaky / "generation_config.json").read_text())
    gen.update(repetition_penalty=50.0, no_repeat_ngram_size=1, min_p=0.9, top_k=2, temperature=0.1)
    (leaky / "generation_config.json").write_text(json.dumps(gen))
    settings = ("training.max_steps=2", "training.save_steps=2")
    module, clean = recipe_for("grpo", tmp_path / "clean", *settings, "watch=null")
    module, dirty = recipe_for("grpo", tmp_path / "dirty", *settings, "watch=null", f"model.name_or_path={leaky}")
    a, b = rows_of(module.run(clean), "reward"), rows_of(module.run(dirty), "reward")
    for step in (1, 2):
        assert b[step]["reward"] == a[step]["reward"] and b[step]["loss"] == pytest.approx(a[step]["loss"]), step


def test_reference_sft_trains_a_fresh_adapter_on_merged_sft_and_base_trains_the_sft_adapter(sft_and_rm, tmp_path):
    sft_dir, _ = sft_and_rm
    module, recipe = recipe_for("grpo", tmp_path, "training.max_steps=2", "watch=null", f"init_from={sft_dir}")
    out = module.run(recipe)
    manifest = read_manifest(out)
    assert manifest["reference"] == "sft" and manifest["weights"]["merged"] == [str(sft_dir / "model")]
    assert rows_of(out, "kl")[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # adapter off == the SFT policy

    module, recipe = recipe_for(
        "grpo", tmp_path, "training.max_steps=2", "watch=null", f"init_from={sft_dir}", "reference=base", "run.name=b"
    )
    out = module.run(recipe)
    manifest = read_manifest(out)
    assert manifest["reference"] == "base" and manifest["weights"]["merged"] == []
    # the policy starts as the SFT adapter and the reference is the base: they differ from step 1 (TRL's own
    # behaviour would be a frozen copy of the SFT adapter as reference, i.e. KL 0 here)
    assert rows_of(out, "kl")[1]["kl"] > 1e-6
    from safetensors.torch import load_file

    saved = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert not any(".ref." in k for k in saved)  # no reference copy saved beside the policy adapter


def test_reward_model_and_function_terms_are_shaped_weighted_and_summed(sft_and_rm, tmp_path):
    from align.stages import online

    sft_dir, rm_dir = sft_and_rm
    module, recipe = recipe_for(
        "rloo",
        tmp_path,
        f"init_from={sft_dir}",
        f"reward_model={rm_dir}",
        "reward_fn=null",
        "reward_fn_kwargs={}",
        "rewards=[{fn: align.stages.ppo:reward_contains, kwargs: {target: a}, weight: 0.5}]",
        "online.reward_normalization=rm_stats",
        "online.missing_eos_penalty=1.0",
        "training.max_steps=2",
    )
    assert recipe.training.reward_weights == [1.0, 0.5]
    out = module.run(recipe)
    rows = rows_of(out, "reward")
    for step in (1, 2):
        r = rows[step]
        assert r["reward"] == pytest.approx(r["rewards/rm/mean"] + 0.5 * r["rewards/reward_contains_1/mean"], abs=1e-4)
    manifest = read_manifest(out)
    assert [t["name"] for t in manifest["rewards"]] == ["rm", "reward_contains_1"]
    assert manifest["rewards"][0]["normalised_with_rm_stats"] and manifest["reward_model"].endswith(rm_dir.name)

    # One term by hand: the RM's raw score, minus the penalty where no EOS, standardised by reward_stats.json.
    from align.models import load_tokenizer
    from align.templates import Encoder

    tok = load_tokenizer(str(sft_dir / "model"))
    bank = online.RewardBank([1.0])
    (term,) = online.build_rewards(
        load_recipe(module.Recipe, ROOT / "recipes/tiny/rloo.yaml", [
            f"reward_model={rm_dir}", "reward_fn=null", "reward_fn_kwargs={}", "online.reward_normalization=rm_stats",
            "online.missing_eos_penalty=1.0"]),
        tok, bank,
    )  # fmt: skip
    prompts = [[{"role": "user", "content": "Hi there"}]] * 2
    ids = Encoder(tok).prompt(prompts[0])
    completions = [[5, 6, 7, tok.eos_token_id], [5, 6, 7]]
    texts = [tok.decode(c, skip_special_tokens=True) for c in completions]
    got = term(
        prompts, [[{"role": "assistant", "content": t}] for t in texts], completions, **{online.PROMPT_IDS: [ids, ids]}
    )
    raw = term.scorer(prompts, [ids + c for c in completions], texts, [True, False])
    mean, std = term.normalize
    assert got == pytest.approx([(raw[0] - mean) / std, (raw[1] - 1.0 - mean) / std], abs=1e-5)
    assert bank.samples()[3] == pytest.approx(got)  # the watch reads the same shaped scores


def test_watch_fires_and_stops_the_run_when_the_judge_penalises_what_the_proxy_rewards(tmp_path, tiny_model_dir):
    module, recipe = recipe_for(
        "grpo",
        tmp_path,
        "watch.judge=tests.fixtures.rewards:judge_fewer_e",
        "watch.stop_on_divergence=true",
        "training.per_device_train_batch_size=16",
        "training.max_steps=20",
        "training.save_steps=20",
    )
    out = module.run(recipe)
    manifest = read_manifest(out)
    watch = manifest["watch"]
    fired = watch["diverged"]
    assert fired is not None and watch["stopped_at"] == fired["iteration"] < 20
    assert fired["proxy_slope"] > 0 > fired["judge_slope"]
    rows = rows_of(out, "watch/judge")
    assert max(rows) == fired["iteration"] and rows[fired["iteration"]]["watch/diverged"] == 1.0
    # the judge is -(number of e), the proxy +(number of e): the gap is twice the proxy
    assert all(r["watch/gap"] == pytest.approx(2 * r["watch/proxy"]) for r in rows.values())
    assert manifest["status"] == "complete" and (out / "model" / "adapter_model.safetensors").is_file()
    assert (out / "watch.png").stat().st_size > 1000
    card = (out / "model" / "README.md").read_text()
    assert "## Reward-hacking watch" in card and f"diverged at iteration {fired['iteration']}" in card


def test_watch_without_a_judge_or_judged_by_the_optimised_reward_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="watch.judge is not set"):
        recipe_for("grpo", tmp_path, "watch.judge=null")
    with pytest.raises(ConfigError, match="a reward this stage optimises"):
        recipe_for("grpo", tmp_path, "watch.judge=align.stages.ppo:reward_contains")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("reward_fn=null", "reward_fn_kwargs={}"), "No reward"),
        ("reference=policy", "reference='policy'"),
        ("lora.enabled=false", "trains a LoRA adapter"),
        ("online.reward_normalization=rm_stats", "no reward term is a reward model"),
        ("training.reward_weights=[1.0]", "training.reward_weights is set from"),
        ("rewards=[{model: runs/x/rm, fn: m:f}]", "exactly one of model"),
        ("training.temperature=0", "online stages sample"),
        ("training.num_iterations=2", "not a multiple of training.num_iterations"),
    ],
)
def test_invalid_settings_fail_at_load_with_a_fix(override, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        recipe_for("rloo", tmp_path, *([override] if isinstance(override, str) else override), "training.save_steps=3")


def test_use_vllm_without_vllm_installed_says_how_to_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ConfigError, match=r"pip install -e \"\.\[vllm\]\""):
        recipe_for("grpo", tmp_path, "training.use_vllm=true")


def test_pipeline_wires_grpo_and_rloo_to_sft_rm_and_the_judge_and_compares_them(tmp_path, align_home, tiny_model_dir):
    from align.pipeline import build_pipeline, run_pipeline

    small = ("learning_rate=1.0e-2", "max_steps=2", "save_steps=2", "num_generations=2", "max_completion_length=8")
    pipe = build_pipeline(
        str(ROOT / "recipes" / "tiny" / "pipeline.yaml"),
        [
            f"root={tmp_path}",
            "stages=[data, sft, rm, judge, grpo, rloo, compare]",
            *(f"{stage}.training.{kv}" for stage in ("grpo", "rloo") for kv in small),
            "grpo.watch.window=3",
        ],
    )
    grpo, rloo = pipe.recipes["grpo"], pipe.recipes["rloo"]
    for r in (grpo, rloo):
        assert r.init_from == str(pipe.stage_dir("sft")) and r.reward_model == str(pipe.stage_dir("rm"))
    assert grpo.watch.judge == str(pipe.stage_dir("judge")) and rloo.watch is None
    run_pipeline(pipe)
    for stage in ("grpo", "rloo"):
        m = read_manifest(pipe.stage_dir(stage))
        assert m["status"] == "complete" and m["weights"]["merged"] == ["sft/model"]  # relative to the run root
    watch = read_manifest(pipe.stage_dir("grpo"))["watch"]
    assert watch["judge"].endswith("judge/model") and watch["judge_standardised"] and watch["points"] == 2
    report = json.loads((pipe.stage_dir("compare") / "report.json").read_text())
    assert {"sft", "grpo", "rloo"} <= set(report["checkpoints"]) and report["warnings"] == []
