"""The policy and its critic: one copy of the base weights, the LoRA policy, the value head or critic adapter."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from align.config import ConfigError
from align.models import load_causal_lm, lora_config
from align.reward_models import (
    RewardModelScorer,
)
from align.runs import merge_chain, merged_chain_of
from align.stages import common
from align.stages.ppo.recipe import (
    VALUE_ADAPTER,
    Recipe,
)


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
