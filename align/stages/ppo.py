"""PPO for language models with LoRA, a critic and a reward model or reward function: align's own loop.

    align ppo recipes/tiny/ppo.yaml
    accelerate launch -m align ppo recipes/smollm2-135m/ppo.yaml ppo.num_iterations=20
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m align ppo recipes/tiny/ppo.yaml

(Two processes on a CPU need that last form: with accelerate 1.15, ``--cpu --num_processes 2`` starts one process
unless mpirun is installed.)

TRL removed its PPOTrainer, so this stage is written on torch + peft + accelerate; the maths (KL estimators, GAE,
clipped losses, KL controllers, running moments) lives in :mod:`align.stages.ppo_math` and is tested there. One
iteration:

1. rollout: each process takes its own shard of the seeded prompt order and samples responses with the KV cache
   on (left-padded prompts, temperature/top_p, stop at EOS); a response ends after its first EOS, which stays a
   response token;
2. scoring: the reward model scores prompt+response ids (re-tokenized with the reward model's own tokenizer and
   template when its vocabulary or template differs from the policy's, FAULTS 17) or a ``module:function``
   reward scores the texts; then the missing-EOS penalty, normalisation and clipping;
3. per-token rewards (KL to the reference on every token, score on the last), GAE over the critic's values,
   optional advantage whitening;
4. ``ppo_epochs`` over shuffled minibatches with gradient accumulation: clipped policy loss + ``vf_coef`` * clipped
   value loss - ``entropy_coef`` * entropy, gradient clipping, AdamW over the LoRA and value-head parameters.

The critic (``ppo.value_model``) is a linear value head on the policy's own last hidden state (``head``: one forward,
a shared backbone), or a second LoRA adapter on the same base weights with its own value head (``adapter``: a
separate critic, one more forward per step; it can start as the reward model, adapter and score head). With a
critic adapter the policy's and the critic's gradients are clipped apart.

One copy of the base weights serves policy and reference: the reference is the same model with the LoRA adapter
disabled (``reference: sft`` merges the ``init_from`` adapter into the base first; ``reference: base`` keeps
training the ``init_from`` adapter itself). Dropout is off throughout (the model stays in eval mode), as in TRL's
PPO, so the first minibatch of every iteration has probability ratio exactly 1.

Run directory: ``config.yaml``, ``manifest.json``, ``metrics.jsonl`` (one row per iteration), ``samples.jsonl``,
``checkpoints/checkpoint-<iteration>/`` (written under a temporary name, renamed when complete, ``state.json``
last) and ``model/`` (policy adapter, value head, tokenizer, chat template, and ``critic/``: the critic adapter).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from align.config import ConfigError, LoraSection, ModelSection, RunSection, TemplateSection, import_callable, to_plain
from align.data.prompts import load_prompts, prompt_text
from align.data.spec import DataConfig
from align.eval.generation import Sampling, left_pad, neutral_defaults
from align.models import load_causal_lm, load_tokenizer, lora_config
from align.reward_models import (  # noqa: F401  (public names recipes and tests use from here)
    RewardModelScorer,
    needs_retokenization,
    resolve_reward_model_dir,
    retokenize_for_reward_model,
    tokenizer_fingerprint,
)
from align.runs import merge_chain, merged_chain_of
from align.stages import common
from align.stages import ppo_math as pm
from align.stages.common import is_complete_checkpoint  # the one completeness check every stage uses
from align.templates import Encoder, apply_template_choice
from align.tracking import RunRecorder, atomic_write_text, process_state, setup_trackers

REWARD_NORMALIZATIONS = ("none", "running", "rm_stats")
VALUE_MODELS = ("head", "adapter")
VALUE_INITS = ("zero", "reward_model")
REFERENCES = ("sft", "base")
STATE_FILE = common.PPO_STATE_FILE  # written last; lists every file of the checkpoint with its size
VALUE_ADAPTER = "value"  # peft adapter name of the critic when ppo.value_model is adapter
CRITIC_DIR = "critic"  # the critic adapter's directory inside model/ and checkpoints (a loadable peft adapter)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


# --------------------------------------------------------------------------------------------------------------
# Recipe


@dataclass
class PPOSection:
    """PPO settings (names follow cleanrl/TRL). Defaults suit a 135M model with LoRA on a 2-core CPU."""

    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate of the policy adapter."})
    value_learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW learning rate of the critic (value head, critic adapter); null = learning_rate."},
    )
    num_iterations: int = field(
        default=10, metadata={"help": "PPO iterations: each is one rollout batch and its PPO epochs."}
    )
    rollout_batch_size: int = field(default=16, metadata={"help": "Prompts per iteration per process."})
    mini_batch_size: int = field(
        default=8, metadata={"help": "Samples per optimizer step per process; divides rollout_batch_size."}
    )
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per minibatch (micro-batch = mini_batch_size / this)."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest response sampled, in tokens."})
    max_prompt_length: int = field(
        default=256, metadata={"help": "Prompts longer than this many tokens are skipped (counted in the manifest)."}
    )
    temperature: float = field(
        default=0.7, metadata={"help": "Sampling temperature; log-probs use the same temperature."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1.0 = off)."})
    kl_coef: float = field(default=0.05, metadata={"help": "KL penalty coefficient (initial value when adaptive)."})
    kl_estimator: str = field(
        default="k1", metadata={"help": "Per-token KL estimator: k1 (log ratio, unbiased), k3 (>= 0) or k2."}
    )
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt kl_coef towards target_kl (Ziegler 2019)."})
    target_kl: float = field(default=6.0, metadata={"help": "Adaptive KL target: KL summed per sequence."})
    kl_horizon: float = field(default=10000.0, metadata={"help": "Adaptive KL horizon, in samples."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    cliprange: float = field(default=0.2, metadata={"help": "Policy ratio clip range."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range."})
    vf_coef: float = field(default=0.1, metadata={"help": "Value loss coefficient."})
    entropy_coef: float = field(default=0.0, metadata={"help": "Entropy bonus coefficient (0 = off)."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Standardise advantages per rollout batch."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of responses that never emit EOS (null = off)."}
    )
    reward_normalization: str = field(
        default="none",
        metadata={
            "help": "none; running (running mean/std of all scores so far); rm_stats (the reward model's "
            "reward_stats.json from its eval split)."
        },
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "Clip normalised scores to [-reward_clip, reward_clip] (null = off)."}
    )
    approx_kl_stop: float | None = field(
        default=None,
        metadata={"help": "Stop an iteration's PPO epochs once a minibatch's approx KL exceeds this (null = off)."},
    )
    value_model: str = field(
        default="head",
        metadata={
            "help": "head: a linear value head on the policy's own last hidden state (one forward, shared "
            "backbone); adapter: a second LoRA adapter on the same base weights plus a value head (a separate "
            "critic: policy and value gradients do not share weights; one more forward per step)."
        },
    )
    value_init: str = field(
        default="zero",
        metadata={
            "help": "zero, or reward_model: copy the reward model's score head when the shapes match (and, with "
            "value_model: adapter, its LoRA adapter too, so the critic starts as the reward model)."
        },
    )
    sample_every: int = field(
        default=5, metadata={"help": "Append a few (prompt, response, score) samples every K iterations (0 = off)."}
    )
    sample_count: int = field(default=4, metadata={"help": "Samples written each time (main process)."})
    save_every: int = field(default=5, metadata={"help": "Checkpoint every K iterations (0 = only the final model)."})
    keep_checkpoints: int | None = field(
        default=2, metadata={"help": "Keep the newest K checkpoints (null = keep all)."}
    )
    bf16: bool = field(
        default=False, metadata={"help": "Autocast forward passes and generation to bfloat16; log-probs stay fp32."}
    )

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"ppo.{msg}")

        for name in ("num_iterations", "rollout_batch_size", "mini_batch_size", "ppo_epochs"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)}: must be >= 1.")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps must be >= 1.")
        need(self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens}: must be >= 1.")
        need(self.max_prompt_length >= 1, f"max_prompt_length={self.max_prompt_length}: must be >= 1.")
        need(
            self.mini_batch_size <= self.rollout_batch_size and self.rollout_batch_size % self.mini_batch_size == 0,
            f"mini_batch_size={self.mini_batch_size} must divide rollout_batch_size={self.rollout_batch_size} "
            "(e.g. rollout 16 with minibatches of 8 or 4).",
        )
        need(
            self.mini_batch_size % self.gradient_accumulation_steps == 0,
            f"gradient_accumulation_steps={self.gradient_accumulation_steps} must divide mini_batch_size="
            f"{self.mini_batch_size} (each minibatch is split into that many micro-batches).",
        )
        need(self.learning_rate > 0, f"learning_rate={self.learning_rate}: must be > 0 (e.g. 5e-5).")
        need(
            self.value_learning_rate is None or self.value_learning_rate > 0,
            f"value_learning_rate={self.value_learning_rate}: must be > 0, or null for learning_rate.",
        )
        need(self.max_grad_norm > 0, f"max_grad_norm={self.max_grad_norm}: must be > 0 (e.g. 1.0).")
        need(self.temperature > 0, f"temperature={self.temperature}: must be > 0 (e.g. 0.7).")
        need(0 < self.top_p <= 1, f"top_p={self.top_p}: must be in (0, 1] (1.0 turns it off).")
        need(self.kl_coef >= 0, f"kl_coef={self.kl_coef}: must be >= 0.")
        need(
            self.kl_estimator in pm.KL_ESTIMATORS,
            f"kl_estimator={self.kl_estimator!r}: use one of {', '.join(pm.KL_ESTIMATORS)}.",
        )
        if self.adaptive_kl:
            need(
                self.kl_coef > 0 and self.target_kl > 0 and self.kl_horizon > 0,
                "adaptive_kl needs kl_coef, target_kl and kl_horizon > 0 (e.g. 0.05, 6.0, 10000).",
            )
        need(0 <= self.gamma <= 1 and 0 <= self.lam <= 1, "gamma and lam must lie in [0, 1].")
        need(self.cliprange > 0 and self.cliprange_value > 0, "cliprange and cliprange_value must be > 0 (0.2).")
        need(self.vf_coef >= 0 and self.entropy_coef >= 0, "vf_coef and entropy_coef must be >= 0.")
        need(
            self.missing_eos_penalty is None or self.missing_eos_penalty >= 0,
            f"missing_eos_penalty={self.missing_eos_penalty}: must be >= 0 (it is subtracted) or null.",
        )
        need(
            self.reward_normalization in REWARD_NORMALIZATIONS,
            f"reward_normalization={self.reward_normalization!r}: use one of {', '.join(REWARD_NORMALIZATIONS)}.",
        )
        need(self.reward_clip is None or self.reward_clip > 0, "reward_clip must be > 0 or null.")
        need(self.approx_kl_stop is None or self.approx_kl_stop > 0, "approx_kl_stop must be > 0 or null.")
        need(
            self.value_model in VALUE_MODELS,
            f"value_model={self.value_model!r}: use one of {', '.join(VALUE_MODELS)}.",
        )
        need(self.value_init in VALUE_INITS, f"value_init={self.value_init!r}: use one of {', '.join(VALUE_INITS)}.")
        need(self.sample_every >= 0 and self.sample_count >= 0, "sample_every and sample_count must be >= 0.")
        need(self.save_every >= 0, f"save_every={self.save_every}: must be >= 0 (0 = only the final model).")
        need(self.keep_checkpoints is None or self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1 or null.")


@dataclass
class Recipe:
    STAGE: ClassVar[str] = "ppo"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig | None = field(
        default=None, metadata={"help": "Prompt sources: prompt-only rows, or preference/SFT data (prompts used)."}
    )
    template: TemplateSection = field(default_factory=TemplateSection)
    lora: LoraSection = field(default_factory=LoraSection)
    run: RunSection = field(default_factory=RunSection)
    init_from: str | None = field(default=None, metadata={"help": "SFT stage directory or adapter to start from."})
    reference: str = field(
        default="sft",
        metadata={
            "help": "sft: init_from merged into the base, fresh LoRA on top, reference = adapter off; base: the "
            "init_from adapter trains on, reference = the base model."
        },
    )
    reward_model: str | None = field(
        default=None,
        metadata={"help": "Reward-model stage directory (runs/<name>/rm) or a sequence-classification model dir."},
    )
    reward_fn: str | None = field(
        default=None,
        metadata={
            "help": "Programmatic reward 'module:function' taking (prompts: list[str] (last user message), "
            "responses: list[str]) -> list[float]. Exactly one of reward_model / reward_fn."
        },
    )
    reward_fn_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keyword arguments passed to reward_fn, e.g. {target: e}."}
    )
    ppo: PPOSection = field(default_factory=PPOSection)

    def __post_init__(self) -> None:
        if self.data is None:
            raise ConfigError(
                "The ppo recipe has no data section (the prompts). Add e.g.\n  data:\n    sources:\n"
                "      - path: builtin:bundled"
            )
        if self.reward_model and self.reward_fn:
            raise ConfigError(
                f"Both reward_model ({self.reward_model!r}) and reward_fn ({self.reward_fn!r}) are set; PPO "
                "optimises exactly one reward. Remove one of them (e.g. reward_fn=null)."
            )
        if not self.reward_model and not self.reward_fn:
            raise ConfigError(
                "No reward: set reward_model to a reward-model stage directory (e.g. runs/<name>/rm) or reward_fn "
                "to a 'module:function' (e.g. align.stages.ppo:reward_contains)."
            )
        if self.reward_fn:
            module, sep, func = self.reward_fn.partition(":")
            if not module or not sep or not func:
                raise ConfigError(f"reward_fn={self.reward_fn!r}: write it as 'module:function'.")
        elif self.reward_fn_kwargs:
            raise ConfigError("reward_fn_kwargs is set but reward_fn is not; remove reward_fn_kwargs.")
        if self.reference not in REFERENCES:
            raise ConfigError(f"reference={self.reference!r}: use sft (the init_from policy) or base.")
        if not self.lora.enabled:
            raise ConfigError(
                "PPO in align trains a LoRA adapter (the reference is the adapter-disabled model); "
                "set lora.enabled=true."
            )
        if self.ppo.reward_normalization == "rm_stats" and not self.reward_model:
            raise ConfigError(
                "ppo.reward_normalization=rm_stats needs reward_model (its reward_stats.json); use running or none."
            )
        if self.ppo.value_init == "reward_model" and not self.reward_model:
            raise ConfigError("ppo.value_init=reward_model needs reward_model; use value_init: zero.")


# --------------------------------------------------------------------------------------------------------------
# Demo rewards (for tests, demos and the tiny recipe; not a measure of quality)


def reward_contains(prompts: list[str], responses: list[str], target: str = "e") -> list[float]:
    """Demo/test reward: how many times ``target`` occurs in each response. Only for demos and tests."""
    if not target:
        raise ValueError("reward_contains: target must be a non-empty string (reward_fn_kwargs: {target: e}).")
    return [float(r.count(target)) for r in responses]


def reward_short(prompts: list[str], responses: list[str], words: int = 5) -> list[float]:
    """Demo/test reward: 1 for a response of at most ``words`` words, less the longer it is. Only for demos."""
    return [1.0 - max(0, len(r.split()) - words) / max(words, 1) for r in responses]


# --------------------------------------------------------------------------------------------------------------
# Reward sources


class ProgrammaticReward:
    """A ``module:function`` reward on texts."""

    def __init__(self, ref: str, kwargs: dict[str, Any]):
        func = import_callable(ref, f"reward_fn={ref!r}")
        self.ref, self.func, self.kwargs = ref, func, dict(kwargs)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = list(self.func(prompts, responses, **self.kwargs))
        if len(out) != len(responses):
            raise ValueError(f"reward_fn {self.ref} returned {len(out)} scores for {len(responses)} responses.")
        scores = [float(x) for x in out]
        if not all(math.isfinite(x) for x in scores):
            raise ValueError(f"reward_fn {self.ref} returned a non-finite score: {scores[:8]}.")
        return scores


# --------------------------------------------------------------------------------------------------------------
# Small pure helpers


def prompt_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """``count`` prompt indices from position ``start`` of an endless seeded order (a fresh permutation of the
    ``n`` prompts per pass); deterministic, so a resumed run continues the same order from its cursor."""
    if n < 1:
        raise ValueError("prompt_indices: there are no prompts.")
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        take = min(count - len(out), n - offset)
        out += perm[offset : offset + take]
        pos += take
    return out


def response_mask(responses: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, R], has_eos [B]): 1 up to and including the first EOS (everything when there is none).

    Built from positions, never from ``token == pad``: with pad == EOS the EOS must stay a response token."""
    is_eos = responses == eos_id
    has_eos = is_eos.any(dim=1)
    first = torch.where(
        has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, responses.shape[1], dtype=torch.long)
    )
    positions = torch.arange(responses.shape[1], device=responses.device).expand_as(responses)
    return positions <= first.unsqueeze(1), has_eos


def leading_pad_columns(attention_mask: torch.Tensor) -> int:
    """How many leading columns are padding in every row. A micro-batch drops them before its forward: with left
    padding and explicit position ids the result is the same, and short prompts stop paying for the longest one."""
    used = attention_mask.bool().any(dim=0).nonzero()
    return int(used[0]) if len(used) else 0


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as ``generate`` does for left-padded rows."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


# --------------------------------------------------------------------------------------------------------------
# Model


@contextlib.contextmanager
def adapter_active(model: nn.Module, name: str, trainable: list[str]):
    """Run with the peft adapter ``name`` active, then switch back; every adapter in ``trainable`` stays trainable.

    peft's ``set_adapter`` freezes the adapters it switches off, so when a policy adapter and a critic adapter train
    together both are marked trainable again after each switch (peft ``set_requires_grad``). Both walk the model's
    modules: about 66 ms there and back on SmolLM2, under 1% of a PPO iteration."""
    previous = model.active_adapter
    if previous == name:
        yield
        return
    model.set_adapter(name)
    model.set_requires_grad(trainable, True)
    try:
        yield
    finally:
        model.set_adapter(previous)
        model.set_requires_grad(trainable, True)


class PolicyWithValue(nn.Module):
    """The peft policy plus a linear value head: one module, so DDP sees every trainable weight in one forward.

    ``value_adapter`` None: the head reads the policy's own last hidden state (one forward gives logits and values).
    Otherwise the head reads the last hidden state of a second forward with the critic adapter ``value_adapter``
    active on the same base weights: a separate critic whose gradients never touch the policy's adapter."""

    def __init__(self, policy: nn.Module, value_head: nn.Linear, value_adapter: str | None = None):
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.value_adapter = value_adapter
        self.policy_adapter: str = policy.active_adapter
        self.trainable_adapters = list(policy.peft_config) if value_adapter else [self.policy_adapter]

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep: int = 0):
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": False,
        }
        if self.value_adapter is None:
            out = self.policy(**inputs, output_hidden_states=True, logits_to_keep=logits_to_keep)
            return out.logits, self.value_head(out.hidden_states[-1].float()).squeeze(-1)
        logits = self.policy(**inputs, logits_to_keep=logits_to_keep).logits
        with adapter_active(self.policy, self.value_adapter, self.trainable_adapters):
            hidden = self.policy(**inputs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
        return logits, self.value_head(hidden.float()).squeeze(-1)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters: ``policy`` (the policy adapter) and ``critic`` (the value head, and the critic
        adapter when there is one)."""
        from peft.tuners.lora import LoraLayer

        marks = tuple(f".{layer}.{self.value_adapter}." for layer in LoraLayer.adapter_layer_names)
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        in_critic_adapter = self.value_adapter is not None
        critic = {
            n
            for n, _ in trainable
            if n.startswith("value_head.") or (in_critic_adapter and any(m in n for m in marks))
        }
        return {
            "policy": [p for n, p in trainable if n not in critic],
            "critic": [p for n, p in trainable if n in critic],
        }

    def clip_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by gradient-clipping group: one group when the value head shares the policy's backbone (the
        value loss trains the policy's adapter too); ``policy`` and ``critic`` apart with a critic adapter, so the
        value loss's gradients (often far larger) never shrink the policy's step."""
        groups = self.parameter_groups()
        return groups if self.value_adapter else {"all": groups["policy"] + groups["critic"]}

    @contextlib.contextmanager
    def reference(self):
        """The reference model: the policy with every adapter off. peft freezes the inactive adapters when it turns
        adapters back on, so the trainable ones (the critic's included) are marked trainable again afterwards."""
        try:
            with self.policy.disable_adapter():
                yield self.policy
        finally:
            self.policy.set_requires_grad(self.trainable_adapters, True)


def policy_weights(recipe: Recipe, init_from: Path | None) -> tuple[list[str], bool]:
    """(adapters merged into the base, whether ``init_from`` itself is the trainable adapter).

    Follows the manifests' ``weights`` convention (:mod:`align.checkpoints`): ``reference: sft`` merges the init
    adapter's own chain and then the init adapter; ``reference: base`` merges only what lies under the init adapter
    and keeps training the adapter itself."""
    if init_from is None or not (init_from / "adapter_config.json").is_file():
        if init_from is not None and recipe.reference == "base":
            raise ConfigError(
                f"reference=base needs init_from to be a LoRA adapter (the adapter keeps training on the base); "
                f"{init_from} is a full model. Use reference: sft, or set model.name_or_path to it."
            )
        return [], False
    chain = merged_chain_of(init_from)
    if recipe.reference == "base":
        return chain, True
    return [*chain, str(init_from)], False


def build_policy(model_path: str, recipe: Recipe, init_from: Path | None) -> tuple[nn.Module, list[str]]:
    """The peft policy on one copy of the base weights, and the adapters merged under it (for the manifest)."""
    from peft import PeftModel, get_peft_model

    full_init = init_from is not None and not (init_from / "adapter_config.json").is_file()
    base = load_causal_lm(model_path, **common.model_kwargs(recipe.model, full_init))  # a full init_from is the base
    chain, init_trains = policy_weights(recipe, init_from)
    base = merge_chain(base, chain)
    if init_trains:
        policy = PeftModel.from_pretrained(base, str(init_from), is_trainable=True)
    else:
        policy = get_peft_model(base, lora_config(recipe.lora, "CAUSAL_LM"))
    policy.config.use_cache = False
    policy.eval()  # no dropout anywhere: rollout and training forwards agree (ratio 1 on the first minibatch)
    return policy, chain


def hidden_size(model: nn.Module) -> int:
    cfg = model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(cfg.hidden_size)


def init_value_head(
    head: nn.Linear, how: str, rm: RewardModelScorer | None, log=print, normalize: tuple[float, float] | None = None
) -> str:
    """Zero the value head, or copy the reward model's score head into it when the shapes match.

    ``normalize`` (mean, std): the scores PPO optimises are the reward model's normalised by these (reward_normalization
    rm_stats), so the copied head is rescaled to predict ``(score - mean) / std``, the scale of the returns."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        if how == "reward_model" and rm is not None:
            score = rm.score_head()
            if score is not None and score.weight.shape == head.weight.shape:
                mean, std = normalize or (0.0, 1.0)
                head.weight.copy_(score.weight.float() / std)
                bias = score.bias.float() if score.bias is not None else torch.zeros_like(head.bias)
                head.bias.copy_((bias - mean) / std)
                return "reward_model"
            shape = None if score is None else tuple(score.weight.shape)
            log(
                f"[align] warning: value_init=reward_model: the reward model's score head {shape} does not match "
                f"the value head {tuple(head.weight.shape)}; starting from zero"
            )
    return "zero"


def add_value_adapter(
    policy: nn.Module, recipe: Recipe, rm: RewardModelScorer | None, merged_chain: list[str], log=print
) -> str:
    """Add the critic adapter (``VALUE_ADAPTER``) to the peft policy, trainable, the policy adapter still active.

    With ``value_init: reward_model`` and a LoRA reward model, the critic takes the reward model's adapter config
    and LoRA weights (with its score head in the value head, the critic starts as the reward model); otherwise a
    fresh adapter from the recipe's ``lora`` section. Returns where it started: reward_model or fresh."""
    started = "fresh"
    if recipe.ppo.value_init == "reward_model" and rm is not None and rm.adapter_dir is not None:
        if _value_adapter_from_reward_model(policy, rm, log):
            started = "reward_model"
            if [Path(c).resolve() for c in rm.merged] != [Path(c).resolve() for c in merged_chain]:
                log(
                    "[align] note: the reward model's adapter was trained on other merged weights "
                    f"({rm.merged or 'the base'}) than the policy's ({merged_chain or 'the base'}); the critic "
                    "starts near the reward model, not equal to it"
                )
    if started == "fresh":
        policy.add_adapter(VALUE_ADAPTER, lora_config(recipe.lora, "CAUSAL_LM"))
    policy.set_requires_grad(list(policy.peft_config), True)  # add_adapter leaves the new adapter frozen
    return started


def _value_adapter_from_reward_model(policy: nn.Module, rm: RewardModelScorer, log=print) -> bool:
    """Add ``VALUE_ADAPTER`` with the reward model's LoRA config and weights; False (nothing added) if they do not
    fit this policy's base."""
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    def give_up(why: str) -> bool:
        log(f"[align] warning: value_init=reward_model: {why}; the critic adapter starts fresh (lora section)")
        if VALUE_ADAPTER in policy.peft_config:
            policy.delete_adapter(VALUE_ADAPTER)
        return False

    try:
        cfg = LoraConfig.from_pretrained(str(rm.adapter_dir))
    except (TypeError, ValueError) as e:
        return give_up(f"{rm.adapter_dir} is not a LoRA adapter ({e})")
    cfg.task_type, cfg.modules_to_save, cfg.inference_mode = "CAUSAL_LM", None, False  # the score head is separate
    weights = {k: v for k, v in load_file(str(rm.adapter_dir / "adapter_model.safetensors")).items() if "lora_" in k}
    try:
        policy.add_adapter(VALUE_ADAPTER, cfg)
    except (ValueError, KeyError, RuntimeError) as e:
        return give_up(f"its adapter does not fit the policy's base ({e})")
    result = set_peft_model_state_dict(policy, weights, adapter_name=VALUE_ADAPTER)
    missing = [k for k in result.missing_keys if f".{VALUE_ADAPTER}." in k and "lora_" in k]
    if missing or result.unexpected_keys:
        return give_up(f"its LoRA weights do not fit (missing {missing[:2]}, unexpected {result.unexpected_keys[:2]})")
    return True


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def find_checkpoint(root: Path, log=print) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are reported and skipped."""
    found = common.find_resume_checkpoint(root, log=log)
    return Path(found) if found else None


def _rng_state() -> dict[str, Any]:
    import numpy as np

    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_rng(directory: Path, rank: int, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {"torch": state["torch"].contiguous()}
    for i, s in enumerate(state.get("cuda", [])):
        tensors[f"cuda_{i}"] = s.contiguous()
    save_file(tensors, str(directory / f"rng_state_{rank}.safetensors"))
    (directory / f"rng_state_{rank}.json").write_text(json.dumps({"python": state["python"], "numpy": state["numpy"]}))


def _read_rng(directory: Path, rank: int) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    js, st = directory / f"rng_state_{rank}.json", directory / f"rng_state_{rank}.safetensors"
    if not (js.is_file() and st.is_file()):
        return None
    state = json.loads(js.read_text())
    tensors = load_file(str(st))
    state["torch"] = tensors["torch"]
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda_"))]
    if cuda:
        state["cuda"] = cuda
    return state


# --------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class Rollout:
    """One process's rollout batch; sequence tensors are [B, P + R] (prompt left-padded, response right-padded)."""

    prompt_idx: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_width: int
    responses: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] bool
    has_eos: torch.Tensor  # [B] bool
    texts: list[str]
    raw_scores: torch.Tensor  # [B]
    scores: torch.Tensor  # [B] after penalty, normalisation, clipping
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    non_score_reward: torch.Tensor
    kl: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def _forget_other_mixed_precision() -> None:
    """Let this process's Accelerator be created with mixed_precision="no" even when an earlier stage in the same
    process (``align pipeline``, tests) set accelerate's process-wide state up with bf16/fp16: accelerate refuses to
    change it otherwise. Only that state is cleared; the distributed process group is kept."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", "no") != "no":
        AcceleratorState._reset_state(reset_partial_state=False)


class PPOTrainer:
    """Runs the iterations of one PPO stage (built by :func:`run`)."""

    def __init__(self, recipe: Recipe, plan: common.StagePlan, log=print):
        from accelerate import Accelerator
        from accelerate.utils import GradientAccumulationPlugin, set_seed

        common.quiet_known_warnings()
        self.recipe, self.cfg = recipe, recipe.ppo
        trackers = setup_trackers(recipe.run.report_to, recipe.run.wandb_project)
        _forget_other_mixed_precision()
        # Mixed precision is PPO's own bf16 autocast (ppo.bf16): accelerate's would autocast only the prepared
        # (training) forward, so rollout and training log-probs would differ and the first ratio would not be 1.
        # An explicit plugin: the micro-batch loop below assumes exactly ppo.gradient_accumulation_steps (an
        # ACCELERATE_GRADIENT_ACCUMULATION_STEPS from `accelerate launch` must not change it), and there is no
        # prepared dataloader whose end should force a sync.
        accumulation = GradientAccumulationPlugin(
            num_steps=self.cfg.gradient_accumulation_steps, sync_with_dataloader=False
        )
        self.accelerator = Accelerator(
            mixed_precision="no",
            gradient_accumulation_plugin=accumulation,
            log_with=trackers or None,
            cpu=not torch.cuda.is_available(),  # without it, launched CPU processes would not join one group
        )
        self.is_main = self.accelerator.is_main_process
        self.log = log if self.is_main else (lambda *a, **k: None)
        self.plan = plan
        self.out_dir = self.plan.out_dir
        self.device = self.accelerator.device
        self.trackers = trackers

        self.init_from = common.resolve_init_from(recipe.init_from)
        # the model the run trains from: the recipe's, or a full model directory given as init_from
        self.base_ref, self.model_path = common.base_of(recipe, self.init_from, self.log)
        tok_src = (
            str(self.init_from)
            if self.init_from and (self.init_from / "tokenizer_config.json").exists()
            else self.model_path
        )
        self.tokenizer = load_tokenizer(
            tok_src, revision=recipe.model.revision, trust_remote_code=recipe.model.trust_remote_code
        )
        self.chat_template = apply_template_choice(self.tokenizer, recipe.template.chat_template)
        self.encoder = Encoder(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id

        set_seed(recipe.run.seed)  # same LoRA / value-head initialisation on every process
        self.rm: RewardModelScorer | None = None
        self.reward_fn: ProgrammaticReward | None = None
        if recipe.reward_model:
            self.rm = RewardModelScorer(
                recipe.reward_model, self.tokenizer, dtype=recipe.model.dtype, device=self.device, log=self.log
            )
            if self.cfg.reward_normalization == "rm_stats" and not self.rm.stats:
                raise ConfigError(
                    f"ppo.reward_normalization=rm_stats: {self.rm.model_dir} has no reward_stats.json (the RM "
                    "stage writes it when it has an eval split). Use reward_normalization: running."
                )
        else:
            self.reward_fn = ProgrammaticReward(recipe.reward_fn, recipe.reward_fn_kwargs)

        policy, self.merged_chain = build_policy(self.model_path, recipe, self.init_from)
        head = nn.Linear(hidden_size(policy), 1)
        normalize = None
        if self.cfg.reward_normalization == "rm_stats":
            normalize = (float(self.rm.stats["mean"]), float(self.rm.stats["std"]))
        self.value_init = init_value_head(head, self.cfg.value_init, self.rm, log=self.log, normalize=normalize)
        self.value_adapter_init: str | None = None
        if self.cfg.value_model == "adapter":
            self.value_adapter_init = add_value_adapter(policy, recipe, self.rm, self.merged_chain, log=self.log)
        model = PolicyWithValue(policy, head, VALUE_ADAPTER if self.cfg.value_model == "adapter" else None)
        groups = model.parameter_groups()
        # trainable weights stay fp32 on a bf16/fp16 base (peft already keeps LoRA in fp32)
        for p in groups["policy"] + groups["critic"]:
            if p.dtype in (torch.bfloat16, torch.float16):
                p.data = p.data.float()
        critic_lr = self.cfg.value_learning_rate or self.cfg.learning_rate
        optimizer = torch.optim.AdamW(
            [{"params": groups["policy"]}, {"params": groups["critic"], "lr": critic_lr}], lr=self.cfg.learning_rate
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped: PolicyWithValue = self.accelerator.unwrap_model(self.model)
        self.params = [p for p in self.unwrapped.parameters() if p.requires_grad]
        self.clip_groups = self.unwrapped.clip_groups()

        if self.cfg.adaptive_kl:
            self.kl_ctl = pm.AdaptiveKLController(self.cfg.kl_coef, self.cfg.target_kl, self.cfg.kl_horizon)
        else:
            self.kl_ctl = pm.FixedKLController(self.cfg.kl_coef)
        self.moments = pm.RunningMoments()
        self.iteration = 0
        self.prompt_cursor = 0
        self.nonfinite_skipped = 0
        self.nonfinite_in_a_row = 0
        set_seed(recipe.run.seed, device_specific=True)  # each process samples differently
        if self.cfg.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("ppo.bf16=true but this GPU has no bfloat16 support; set ppo.bf16=false.")

    # -- helpers --------------------------------------------------------------------------------------------------

    def autocast(self):
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @property
    def micro_batch_size(self) -> int:
        return self.cfg.mini_batch_size // self.cfg.gradient_accumulation_steps

    def _response_logprobs(self, logits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        # logits are the last R + 1 positions; position t predicts response token t (the last one predicts nothing)
        return pm.logprobs_from_logits(logits[:, :-1] / self.cfg.temperature, responses)

    # -- data -----------------------------------------------------------------------------------------------------

    def prepare_prompts(self) -> dict[str, Any]:
        """Load, tokenize and filter the prompts; returns the manifest's data entry."""
        train, report = load_prompts(self.recipe.data)
        kept, too_long = [], []
        for p in train:
            ids = self.encoder.prompt(p.prompt)
            (kept if len(ids) <= self.cfg.max_prompt_length else too_long).append((p, ids))
        if not kept:
            raise ConfigError(
                f"All {len(train)} training prompts are longer than ppo.max_prompt_length="
                f"{self.cfg.max_prompt_length} tokens; raise it."
            )
        if too_long:
            self.log(f"[align] {len(too_long)} prompt(s) longer than ppo.max_prompt_length skipped")
        self.prompts = [p for p, _ in kept]
        self.prompt_ids = [ids for _, ids in kept]
        info = report.manifest_info(self.prompts)
        info["prompts_too_long"] = len(too_long)
        return info

    # -- rollout --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """(prompt ids, prompt mask, responses, response mask, has_eos): sampled with the KV cache, cut after EOS.

        Through the shared generation settings (align.eval.generation): only ``ppo.temperature``/``top_p``/
        ``max_new_tokens`` shape the rollout distribution, never the model's own generation_config.json, so the
        responses come from the distribution whose log-probs PPO then computes."""
        ids, mask = left_pad(prompt_ids, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        sampling = Sampling(
            max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p
        )
        gen = sampling.config(self.eos_id, self.pad_id)
        policy = self.unwrapped.policy
        with self.autocast(), neutral_defaults(policy):
            out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
        responses = out[:, ids.shape[1] :]
        rmask, has_eos = response_mask(responses, self.eos_id)
        responses = torch.where(rmask, responses, torch.full_like(responses, self.pad_id))
        return ids, mask, responses, rmask, has_eos

    @torch.no_grad()
    def forward_logprobs(self, input_ids, attention_mask, position_ids, responses) -> tuple[torch.Tensor, ...]:
        """Old log-probs and values (adapter on) and reference log-probs (adapter off), in micro-batches of rows of
        similar prompt length (each trimmed of its all-padding leading columns), returned in row order."""
        R = responses.shape[1]
        n = input_ids.shape[0]
        P = input_ids.shape[1] - R
        lps = torch.zeros((n, R), device=self.device)
        refs, vals = torch.zeros_like(lps), torch.zeros_like(lps)
        order = torch.argsort(attention_mask[:, :P].sum(dim=1), stable=True)
        for s in range(0, n, self.micro_batch_size):
            rows = order[s : s + self.micro_batch_size]
            lead = leading_pad_columns(attention_mask[rows])
            ids, att, pos = (t[rows, lead:] for t in (input_ids, attention_mask, position_ids))
            with self.autocast():
                logits, values = self.unwrapped(ids, att, pos, R + 1)
            lps[rows] = self._response_logprobs(logits, responses[rows]).float()
            vals[rows] = values[:, P - lead - 1 : P - lead + R - 1].float()
            with self.unwrapped.reference() as reference, self.autocast():
                ref_logits = reference(
                    input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, logits_to_keep=R + 1
                ).logits
            refs[rows] = self._response_logprobs(ref_logits, responses[rows]).float()
        return lps, refs, vals

    def score(self, idx: list[int], responses, rmask, has_eos) -> tuple[torch.Tensor, list[str]]:
        """Raw scores of this process's responses, and the response texts (without EOS)."""
        lengths = rmask.sum(dim=1).tolist()
        resp_lists = [responses[i, : lengths[i]].tolist() for i in range(len(idx))]
        texts = self.tokenizer.batch_decode(
            [r[:-1] if bool(has_eos[i]) else r for i, r in enumerate(resp_lists)], skip_special_tokens=True
        )
        messages = [self.prompts[i].prompt for i in idx]
        if self.rm is not None:
            seqs = [self.prompt_ids[i] + r for i, r in zip(idx, resp_lists)]
            raw = self.rm(messages, seqs, texts, has_eos.tolist(), batch_size=self.micro_batch_size * 2)
        else:
            raw = self.reward_fn([prompt_text(m) for m in messages], texts)
        return torch.tensor(raw, dtype=torch.float32, device=self.device), texts

    def shape_scores(self, raw: torch.Tensor, has_eos: torch.Tensor) -> torch.Tensor:
        """Missing-EOS penalty, normalisation (running moments over every process's scores, or RM stats), clip."""
        cfg = self.cfg
        scores = raw
        if cfg.missing_eos_penalty is not None:
            scores = pm.apply_missing_eos_penalty(scores, has_eos, cfg.missing_eos_penalty)
        if cfg.reward_normalization == "running":
            self.moments.update(self.accelerator.gather(scores).cpu())
            mean, std = self.moments.mean, self.moments.std
        elif cfg.reward_normalization == "rm_stats":
            mean, std = float(self.rm.stats["mean"]), float(self.rm.stats["std"])
        elif cfg.reward_clip is None:
            return scores
        else:
            mean, std = 0.0, 1.0
        return pm.normalize_scores(scores, mean, std, cfg.reward_clip)

    def rollout(self, timings: dict[str, float]) -> Rollout:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        B = self.cfg.rollout_batch_size
        order = prompt_indices(len(self.prompts), self.recipe.run.seed, self.prompt_cursor, B * world)
        idx = order[rank * B : (rank + 1) * B]
        t0 = time.perf_counter()
        query, qmask, responses, rmask, has_eos = self.generate([self.prompt_ids[i] for i in idx])
        t1 = time.perf_counter()
        input_ids = torch.cat([query, responses], dim=1)
        attention_mask = torch.cat([qmask, rmask.long()], dim=1)
        position_ids = position_ids_from_mask(attention_mask)
        logprobs, ref_logprobs, values = self.forward_logprobs(input_ids, attention_mask, position_ids, responses)
        t2 = time.perf_counter()
        raw, texts = self.score(idx, responses, rmask, has_eos)
        scores = self.shape_scores(raw, has_eos)
        t3 = time.perf_counter()
        fill = torch.zeros((), device=self.device)
        logprobs = torch.where(rmask, logprobs, fill)
        ref_logprobs = torch.where(rmask, ref_logprobs, fill)
        values = torch.where(rmask, values, fill)
        rewards, non_score, kl = pm.token_rewards(
            scores, logprobs, ref_logprobs, rmask, self.kl_ctl.value, self.cfg.kl_estimator
        )
        advantages, returns = pm.gae(rewards, values, rmask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            advantages = pm.masked_whiten(advantages, rmask)
        timings.update(generate=t1 - t0, logprobs=t2 - t1, score=t3 - t2)
        return Rollout(
            idx, input_ids, attention_mask, position_ids, query.shape[1], responses, rmask, has_eos, texts, raw,
            scores, logprobs, ref_logprobs, values, rewards, non_score, kl, advantages, returns,
        )  # fmt: skip

    # -- optimisation ---------------------------------------------------------------------------------------------

    def _zero_loss(self) -> torch.Tensor:
        # A zero that depends on every trainable weight: backward runs on every process (DDP needs the same
        # collectives everywhere) and leaves zero gradients; the step is then skipped.
        return sum(p.sum() * 0.0 for p in self.params)

    def train_on(self, ro: Rollout) -> dict[str, float]:
        cfg, acc = self.cfg, self.accelerator
        B, R, P = ro.responses.shape[0], ro.responses.shape[1], ro.prompt_width
        gen = torch.Generator().manual_seed(self.recipe.run.seed * 7919 + self.iteration * 104729 + acc.process_index)
        sums: dict[str, float] = {}
        n_minibatches = 0
        stopped = False
        first_ratio: float | None = None  # before any update: must be 1 (rollout and training forwards agree)
        for _epoch in range(cfg.ppo_epochs):
            perm = torch.randperm(B, generator=gen).to(self.device)
            for start in range(0, B, cfg.mini_batch_size):
                mb = perm[start : start + cfg.mini_batch_size]
                bad = torch.zeros((), device=self.device)
                mb_stats: dict[str, float] = {}
                for mstart in range(0, len(mb), self.micro_batch_size):
                    mi = mb[mstart : mstart + self.micro_batch_size]
                    with acc.accumulate(self.model):
                        lead = leading_pad_columns(ro.attention_mask[mi])
                        with self.autocast():
                            logits, values = self.model(
                                ro.input_ids[mi, lead:],
                                ro.attention_mask[mi, lead:],
                                ro.position_ids[mi, lead:],
                                R + 1,
                            )
                        mask = ro.mask[mi]
                        new_lp = self._response_logprobs(logits, ro.responses[mi])
                        new_v = values[:, P - lead - 1 : P - lead + R - 1].float()
                        pl, ps = pm.policy_loss(new_lp, ro.logprobs[mi], ro.advantages[mi], mask, cfg.cliprange)
                        vl, vs = pm.value_loss(new_v, ro.values[mi], ro.returns[mi], mask, cfg.cliprange_value)
                        with torch.set_grad_enabled(cfg.entropy_coef > 0):
                            ent = pm.masked_mean(pm.entropy_from_logits(logits[:, :-1] / cfg.temperature), mask)
                        loss = pl + cfg.vf_coef * vl - cfg.entropy_coef * ent
                        if not torch.isfinite(loss.detach()):
                            bad += 1
                            loss = self._zero_loss()
                        acc.backward(loss)
                        for k, v in {
                            "loss/policy": pl, "loss/value": vl, "loss/total": loss, "entropy": ent,
                            "approx_kl": ps["approx_kl"], "clipfrac": ps["clipfrac"], "ratio_mean": ps["ratio_mean"],
                            "vf_clipfrac": vs["vf_clipfrac"],
                        }.items():  # fmt: skip
                            mb_stats[k] = mb_stats.get(k, 0.0) + float(v.detach()) / cfg.gradient_accumulation_steps
                        if first_ratio is None:
                            first_ratio = float(ps["ratio_mean"])
                        if acc.sync_gradients:
                            for k, v in self._step(bad).items():
                                mb_stats[f"grad_norm/{k}"] = v
                n_minibatches += 1
                for k, v in mb_stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                if cfg.approx_kl_stop is not None:
                    akl = float(acc.reduce(torch.tensor(mb_stats["approx_kl"], device=self.device), "mean"))
                    if akl > cfg.approx_kl_stop:
                        stopped = True
                        break
            if stopped:
                break
        out = {k: v / max(n_minibatches, 1) for k, v in sums.items()}
        out.update({"ppo/minibatches": n_minibatches, "ppo/early_stopped": int(stopped), "ratio_first": first_ratio})
        return out

    def _step(self, bad: torch.Tensor) -> dict[str, float]:
        """Clip each group's gradients, step, and return each group's norm before clipping ({} when skipped)."""
        acc = self.accelerator
        skip = float(acc.reduce(bad, "sum")) > 0
        norms: dict[str, float] = {}
        if not skip:
            for name, group in self.clip_groups.items():
                norms[name] = float(acc.clip_grad_norm_(group, self.cfg.max_grad_norm))
            skip = not all(math.isfinite(v) for v in norms.values())
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_skipped += 1
            self.nonfinite_in_a_row += 1
            self.log(f"[align] warning: non-finite loss or gradient at iteration {self.iteration + 1}; step skipped")
            if self.nonfinite_in_a_row >= self.recipe.run.max_nonfinite_steps:
                raise common.NonFiniteError(
                    f"{self.nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient "
                    f"(iteration {self.iteration + 1}). The last complete checkpoint is kept. Lower "
                    "ppo.learning_rate, normalise or clip the rewards (ppo.reward_normalization, ppo.reward_clip), "
                    "or check the reward for extreme values."
                )
            return {}
        self.nonfinite_in_a_row = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norms

    # -- one iteration --------------------------------------------------------------------------------------------

    def step(self) -> tuple[dict[str, Any], Rollout]:
        """One PPO iteration; returns its metrics (reduced over processes) and this process's rollout."""
        acc = self.accelerator
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        ro = self.rollout(timings)
        kl_coef = self.kl_ctl.value
        t0 = time.perf_counter()
        train_stats = self.train_on(ro)
        timings["train"] = time.perf_counter() - t0

        lengths = ro.mask.sum(dim=1).float()
        per_sample = torch.stack(
            [ro.raw_scores, ro.scores, ro.non_score_reward, ro.kl.sum(dim=1), lengths, ro.has_eos.float()], dim=1
        )
        g = acc.gather(per_sample).cpu()
        raw, scores, non_score, kl_sum, lens, eos = g.unbind(dim=1)
        local = {
            "explained_variance": pm.explained_variance(ro.values, ro.returns, ro.mask),
            **train_stats,
            **{f"time/{k}": v for k, v in timings.items()},
        }
        keys = sorted(local)
        vec = torch.tensor([float(local[k]) for k in keys], dtype=torch.float64, device=self.device)
        vec = acc.reduce(vec, "mean").cpu().tolist()
        reduced = dict(zip(keys, vec))
        self.kl_ctl.update(kl_sum.mean(), n_steps=int(g.shape[0]))
        self.iteration += 1
        self.prompt_cursor += self.cfg.rollout_batch_size * acc.num_processes
        total = time.perf_counter() - t_start
        metrics: dict[str, Any] = {
            "iteration": self.iteration,
            "reward/mean": raw.mean().item(),
            "reward/std": raw.std().item() if raw.numel() > 1 else 0.0,
            "reward/shaped_mean": scores.mean().item(),
            "reward/non_score": non_score.mean().item(),
            "reward/total": (scores + non_score).mean().item(),
            "kl": kl_sum.mean().item(),
            "kl_coef": kl_coef,
            "kl_coef_next": self.kl_ctl.value,
            "response_length/mean": lens.mean().item(),
            "eos_rate": eos.mean().item(),
            # processes generate in parallel: all tokens over the mean generation time
            "rollout_tokens_per_s": lens.sum().item() / max(reduced["time/generate"], 1e-9),
            "nonfinite_steps_skipped": self.nonfinite_skipped,
            "time/iteration": total,
        }
        metrics.update(reduced)
        for k in ("generate", "logprobs", "score", "train"):
            metrics[f"time/{k}_frac"] = reduced[f"time/{k}"] / max(total, 1e-9)
        return metrics, ro

    # -- state ----------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "prompt_cursor": self.prompt_cursor,
            "kl_controller": self.kl_ctl.state_dict(),
            "running_moments": self.moments.state_dict(),
            "nonfinite": {"skipped": self.nonfinite_skipped, "in_a_row": self.nonfinite_in_a_row},
            "world_size": self.accelerator.num_processes,
            "config_hash": self.plan.config_hash,
        }

    def write_weights(self, directory: Path) -> None:
        """The policy adapter alone (``adapter_model.safetensors`` + config, loadable as the policy), the value head
        (``value_head.safetensors``) and, with ``value_model: adapter``, the critic adapter as its own loadable peft
        adapter in ``critic/``."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        model = self.unwrapped
        model.policy.save_pretrained(str(directory), selected_adapters=[model.policy_adapter])
        head = {k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()}
        save_file(head, str(directory / "value_head.safetensors"))
        if model.value_adapter:
            critic = directory / CRITIC_DIR
            critic.mkdir()
            model.policy.peft_config[model.value_adapter].save_pretrained(str(critic))
            weights = get_peft_model_state_dict(model.policy, adapter_name=model.value_adapter)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(critic / ADAPTER_WEIGHTS))

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint-<iteration>`` atomically: a temporary directory renamed when complete."""
        from accelerate.utils import gather_object

        rng = gather_object([(self.accelerator.process_index, _rng_state())])
        root = self.out_dir / "checkpoints"
        final = root / f"checkpoint-{self.iteration}"
        if self.is_main:
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f".tmp-checkpoint-{self.iteration}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self.write_weights(tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            for rank, state in rng:
                _write_rng(tmp, rank, state)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            state = {**self.state_dict(), "files": files, "saved_at": time.time()}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))  # last: marks the checkpoint complete
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune(root)
        self.accelerator.wait_for_everyone()
        return final

    def _prune(self, root: Path) -> None:
        keep = self.cfg.keep_checkpoints
        if keep is None:
            return
        complete = [p for p in checkpoint_dirs(root) if is_complete_checkpoint(p)]
        for p in complete[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        """Restore adapter, value head, optimizer, KL controller, running moments, counters and RNG states."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((path / STATE_FILE).read_text())
        if state.get("config_hash") not in (None, self.plan.config_hash):
            self.log(f"[align] warning: {path} was saved by a different recipe (config hash differs); resuming anyway")
        model = self.unwrapped
        adapters = {model.policy_adapter: path / ADAPTER_WEIGHTS}
        if model.value_adapter:
            adapters[model.value_adapter] = path / CRITIC_DIR / ADAPTER_WEIGHTS
        for name, file in adapters.items():
            if not file.is_file():
                raise ConfigError(
                    f"checkpoint {path} has no {file.relative_to(path)}: it was saved with another ppo.value_model. "
                    "Resume with the recipe that wrote it, or start a new run.name."
                )
            result = set_peft_model_state_dict(model.policy, load_file(str(file)), adapter_name=name)
            unexpected = getattr(result, "unexpected_keys", None)
            if unexpected:
                raise RuntimeError(
                    f"checkpoint {path}: {name} adapter does not fit this model (e.g. {unexpected[:3]})."
                )
        model.value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
        try:
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        except ValueError as e:
            raise ConfigError(
                f"checkpoint {path}: its optimizer state does not fit this run ({e}); it was written by another "
                "align version or recipe. Start a new run.name (or run.resume=never to start this one over)."
            ) from e
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["running_moments"])
        self.iteration = int(state["iteration"])
        self.prompt_cursor = int(state["prompt_cursor"])
        self.nonfinite_skipped = int(state["nonfinite"]["skipped"])
        self.nonfinite_in_a_row = int(state["nonfinite"]["in_a_row"])
        rng = _read_rng(path, self.accelerator.process_index)
        if state.get("world_size") != self.accelerator.num_processes or rng is None:
            self.log(
                f"[align] warning: {path} was saved by {state.get('world_size')} process(es), this run has "
                f"{self.accelerator.num_processes}; the prompt order continues, sampling RNG streams are re-seeded"
            )
            from accelerate.utils import set_seed

            set_seed(self.recipe.run.seed + self.iteration, device_specific=True)
        else:
            _set_rng_state(rng)

    def save_final(self) -> Path:
        model_dir = self.out_dir / "model"
        if self.is_main:
            tmp = self.out_dir / f".tmp-model-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.write_weights(tmp)
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / "chat_template.jinja").write_text(self.chat_template)
            if model_dir.exists():
                shutil.rmtree(model_dir)
            os.replace(tmp, model_dir)
        self.accelerator.wait_for_everyone()
        return model_dir


def _trim_jsonl(path: Path, last_iteration: int) -> None:
    """Drop rows logged after ``last_iteration`` (they are redone after a resume)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if int(json.loads(line).get("iteration", 0)) <= last_iteration]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _write_samples(path: Path, iteration: int, trainer: PPOTrainer, ro: Rollout, count: int) -> None:
    with open(path, "a") as f:
        for j in range(min(count, len(ro.prompt_idx))):
            p = trainer.prompts[ro.prompt_idx[j]]
            row = {
                "iteration": iteration,
                "prompt_id": p.id,
                "prompt": prompt_text(p.prompt),
                "response": ro.texts[j],
                "score": float(ro.raw_scores[j]),
                "ended_with_eos": bool(ro.has_eos[j]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(recipe: Recipe, callbacks: list[Callable[[int, dict[str, Any]], None]] | None = None):
    """Run (or resume, or skip) the PPO stage; returns the stage directory.

    ``callbacks``: callables ``cb(iteration, metrics)`` run on every process after each iteration (and after its
    checkpoint, when one is due). Tests use one that raises ``KeyboardInterrupt`` to simulate an interruption.
    """
    from tqdm.auto import tqdm

    plan = common.plan_stage(recipe, log=lambda *a: None)  # its checkpoint finder knows HF checkpoints only
    if plan.action == "skip":
        if process_state().is_main_process:
            print(f"[align] ppo already complete in {plan.out_dir} (same config); skipping. Use a new run.name.")
        return plan.out_dir
    trainer = PPOTrainer(recipe, plan)
    log, cfg, acc = trainer.log, recipe.ppo, trainer.accelerator
    checkpoint: Path | None = None
    if trainer.plan.checkpoint and recipe.run.resume not in ("auto", "never"):
        checkpoint = Path(trainer.plan.checkpoint)
        common.require_complete_checkpoint(checkpoint, f"run.resume={recipe.run.resume!r}")
        if not (checkpoint / STATE_FILE).is_file():
            raise ConfigError(f"run.resume={recipe.run.resume!r} is not a complete PPO checkpoint (no state.json).")
    elif recipe.run.resume == "auto":
        checkpoint = find_checkpoint(trainer.out_dir / "checkpoints", log=log)
    data_info = trainer.prepare_prompts()
    if trainer.is_main:
        trainer.out_dir.mkdir(parents=True, exist_ok=True)
        if checkpoint is None:  # a fresh start: nothing of an earlier attempt may mix into this run
            for name in ("metrics.jsonl", "samples.jsonl"):
                (trainer.out_dir / name).unlink(missing_ok=True)
            shutil.rmtree(trainer.out_dir / "checkpoints", ignore_errors=True)
    recorder = RunRecorder(
        run_dir=trainer.out_dir,
        stage=recipe.STAGE,
        config=to_plain(recipe),
        config_hash=trainer.plan.config_hash,
        model_ref=recipe.model.name_or_path,
        parent=str(trainer.init_from) if trainer.init_from else None,
        data=data_info,
        is_main=trainer.is_main,
    )
    recorder.start()
    extra = {
        "reward_model": trainer.rm.path if trainer.rm else None,
        "reward_fn": recipe.reward_fn,
        "reference": recipe.reference if trainer.init_from else "base (no init_from)",
        "value_model": cfg.value_model,
        "value_init": trainer.value_init,
        "value_adapter_init": trainer.value_adapter_init,
        "reward_retokenized": bool(trainer.rm and trainer.rm.retokenize),
        "processes": acc.num_processes,
        # how to rebuild the policy (align.checkpoints): base -> merge each adapter -> this stage's adapter
        "weights": {
            "base": trainer.base_ref,
            "merged": trainer.merged_chain,
            "adapter": str(trainer.out_dir / "model"),
            "value_head": "value_head.safetensors",
            "value_adapter": CRITIC_DIR if cfg.value_model == "adapter" else None,
        },
    }
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
        log(f"[align] resuming ppo from {checkpoint} (iteration {trainer.iteration})")
        if trainer.is_main:
            for name in ("metrics.jsonl", "samples.jsonl"):
                _trim_jsonl(trainer.out_dir / name, trainer.iteration)
    if trainer.trackers:
        acc.init_trackers(recipe.run.wandb_project, config=to_plain(recipe))
    last: dict[str, Any] = {}
    bar = tqdm(total=cfg.num_iterations, initial=trainer.iteration, desc="ppo", disable=not trainer.is_main)
    try:
        while trainer.iteration < cfg.num_iterations:
            metrics, ro = trainer.step()
            it = trainer.iteration
            recorder.log(metrics, step=it)
            if trainer.trackers:
                acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=it)
            if trainer.is_main and cfg.sample_every and it % cfg.sample_every == 0:
                _write_samples(trainer.out_dir / "samples.jsonl", it, trainer, ro, cfg.sample_count)
            if cfg.save_every and it % cfg.save_every == 0 and it < cfg.num_iterations:
                trainer.save_checkpoint()
            last = metrics
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", kl=f"{metrics['kl']:.3f}")
            for cb in callbacks or []:
                cb(it, metrics)
        bar.close()
        trainer.save_final()
    except BaseException as e:
        bar.close()
        recorder.finish(last, status="failed", error=f"{type(e).__name__}: {e}", **extra)
        raise
    final = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    recorder.finish(final, status="complete", model_dir=str(trainer.out_dir / "model"), **extra)
    if trainer.trackers:
        acc.end_training()
    if trainer.is_main:
        common.write_stage_card(trainer.out_dir, recipe.STAGE)  # the same card every stage's finish step writes
    log(f"[align] ppo complete: {trainer.out_dir}")
    return trainer.out_dir
