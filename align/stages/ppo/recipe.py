"""PPO's recipe: the ``ppo`` section's settings and the stage recipe, validated on load."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from align.config import ConfigError, LoraSection, ModelSection, RunSection, TemplateSection
from align.data.spec import DataConfig
from align.stages.ppo import losses as pm
from align.stages.resume import PPO_STATE_FILE
from align.stages.watch import WatchSection, check_judge

REWARD_NORMALIZATIONS = ("none", "running", "rm_stats")
VALUE_MODELS = ("head", "adapter")
VALUE_INITS = ("zero", "reward_model")
REFERENCES = ("sft", "base")
STATE_FILE = PPO_STATE_FILE  # written last; lists every file of the checkpoint with its size
VALUE_ADAPTER = "value"  # peft adapter name of the critic when ppo.value_model is adapter
CRITIC_DIR = "critic"  # the critic adapter's directory inside model/ and checkpoints (a loadable peft adapter)
ADAPTER_WEIGHTS = "adapter_model.safetensors"


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
    watch: WatchSection | None = field(
        default=None, metadata={"help": "Reward-hacking watch against a held-out judge (off when absent)."}
    )

    def upstream_runs(self) -> list[str]:
        """The watch's judge run, when it is one (its identity joins the config hash)."""
        judge = self.watch.judge if self.watch is not None else None
        return [judge] if judge and Path(judge).exists() else []

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
        check_judge(self.watch, [self.reward_model or "", self.reward_fn or ""])
