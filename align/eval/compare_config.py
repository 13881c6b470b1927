"""``align compare``'s settings, apart from the comparison itself so the command line can list them as flags
without loading torch (``align --help`` stays fast)."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.config import ModelSection


@dataclass
class CompareConfig:
    checkpoints: list[str] = field(
        default_factory=list,
        metadata={"help": "Stage dirs, adapters or model refs; bon:<run>@<n> = best of n under bon_reward_model."},
    )
    names: list[str] | None = field(default=None, metadata={"help": "Display names (default: stage or path)."})
    prompts: str = field(default="builtin:bundled-eval-prompts", metadata={"help": "Held-out prompt source."})
    judge: str | None = field(default=None, metadata={"help": "Reward-model run/dir, or module:function."})
    pairs: str | None = field(default=None, metadata={"help": "Held-out preference pairs (implicit reward acc)."})
    reference: str | None = field(default=None, metadata={"help": "Checkpoint name that others are compared to."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use the first N prompts (default: all)."})
    max_pairs: int = field(default=32, metadata={"help": "Use the first N held-out pairs."})
    max_new_tokens: int = field(default=160, metadata={"help": "Generation length limit (answers should end)."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (temperature > 0)."})
    batch_size: int = field(default=64, metadata={"help": "Generation and scoring batch size."})
    kl_samples: int = field(
        default=2, metadata={"help": "Answers sampled per prompt at temperature 1 for the KL estimate (0 = none)."}
    )
    kl_max_prompts: int | None = field(default=None, metadata={"help": "Prompts used for the KL samples (all)."})
    kl_along_answers: bool = field(
        default=False, metadata={"help": "Also sum the exact KL along the shown (greedy) answers: one more pass."}
    )
    kl_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Length of the KL samples (default max_new_tokens): KL of answer prefixes."}
    )
    bon_reward_model: str | None = field(
        default=None, metadata={"help": "Reward-model run that picks the best of n for bon:<run>@<n> checkpoints."}
    )
    bon_temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of best-of-n candidates."})
    checks: bool = field(default=True, metadata={"help": "Run the prompts' objective checks (no reward model)."})
    custom_checks: str | None = field(
        default=None, metadata={"help": "module:function adding check families (see align.eval.checks)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling and bootstrap seed."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap resamples for CIs."})
    tie_tolerance: float = field(default=0.0, metadata={"help": "|reward difference| <= this is a tie."})
    n_examples: int = field(default=3, metadata={"help": "Side-by-side examples in the report."})
    output: str = field(default="runs/compare", metadata={"help": "Report directory."})
    dtype: str = field(default="float32", metadata={"help": "Dtype for generation and scoring."})
    model: ModelSection | None = field(
        default=None,
        metadata={
            "help": "Loading settings of the compared models and judges: revision (of model.name_or_path), "
            "trust_remote_code, attn_implementation; the pipeline passes its model section. Weights load in "
            "compare.dtype, so model.dtype is refused."
        },
    )
