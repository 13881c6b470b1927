"""What the critic-free online stages (GRPO, RLOO) share around TRL's ``GRPOTrainer`` / ``RLOOTrainer``.

TRL's trainers sample ``training.num_generations`` answers per prompt, score them with reward functions and take a
clipped policy-gradient step with each answer's reward measured against its prompt's group (GRPO: standardised
within the group, KL to the reference in the loss; RLOO: minus the mean of the other answers, KL folded into the
reward). align keeps TRL's loop and decides what goes into it, as it does for SFT, the RM and DPO:

- **Prompts** come from align's data layer (:func:`align.data.prompts.load_prompts`: prompt-only rows, or the prompt
  of any preference or SFT source, split by the same prompt hash as every stage) and are tokenized once by align's
  :class:`~align.templates.Encoder` (chat template or named fallback, no special tokens added twice);
  ``_tokenize_prompts`` is overridden so TRL generates from exactly those ids. Prompts longer than
  ``online.max_prompt_length`` tokens are skipped and counted.
- **Policy and reference** (as DPO and PPO): LoRA on one frozen base. ``reference: sft`` merges ``init_from`` into
  the base and trains a fresh adapter, so the adapter turned off is the SFT policy; ``reference: base`` keeps
  training the ``init_from`` adapter and the reference is the base (TRL would keep a frozen copy of that adapter as
  the reference; align removes the copy, so the word means what it means for DPO and PPO).
- **Rewards**: reward-model runs (:class:`align.reward_models.RewardModelScorer`: loaded through
  ``align.runs.load_reward_model``, the merged chain followed, text re-tokenised when the RM's tokenizer or chat
  template differs), ``module:function`` rewards (PPO's :class:`~align.stages.ppo.rewards.ProgrammaticReward`), or
  several with weights (TRL's ``reward_weights``). Each term is shaped as PPO shapes its one score: the
  missing-EOS penalty on answers that never emitted EOS, then, for reward models with ``online.reward_normalization:
  rm_stats``, standardisation with the RM's stored ``reward_stats.json``, then ``online.reward_clip``
  (:mod:`align.stages.ppo.losses`).
- **Sampling** uses only the recipe's ``training.temperature``, ``top_p``, ``top_k`` and ``max_completion_length``
  (and ``min_p``, ``repetition_penalty``, ``generation_kwargs`` when the recipe sets them): the generation config
  is complete, and the model's own ``generation_config.json`` is blanked while generating
  (:func:`align.eval.generation.neutral_defaults`, docs/faults.md #40). With ``training.use_vllm`` (GPU, the
  ``vllm`` extra) TRL builds vLLM's ``SamplingParams`` from the same fields.
- **Timing** per generation: ``time/generate``, ``time/score``, ``time/rollout`` (generation, log-prob passes and
  scoring), ``time/train`` (the rest of the step) and ``rollout_tokens_per_s`` in ``metrics.jsonl``.

Run directory as for every TRL stage (align/stages/common.py): ``checkpoints/`` (resumable), ``model/`` (adapter,
tokenizer, chat template, model card), ``config.yaml``, ``metrics.jsonl``, ``manifest.json``; with a ``watch``
section also ``watch.png`` (:mod:`align.stages.watch`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from align.config import ConfigError, LoraSection, ModelSection, RunSection, TemplateSection
from align.data.prompts import PromptRecord, load_prompts, prompt_text
from align.data.spec import DataConfig
from align.data.validate import DropReport
from align.eval.generation import Sampling, neutral_defaults
from align.reward_models import RewardModelScorer
from align.stages import common
from align.stages.ppo import losses as pm
from align.stages.ppo.rewards import ProgrammaticReward
from align.stages.watch import RewardHackingWatch, WatchCallback, WatchSection, check_judge

REFERENCES = ("sft", "base")
REWARD_NORMALIZATIONS = ("none", "rm_stats")
PROMPT_IDS = "align_prompt_ids"  # dataset column: align's prompt ids (TRL hands dataset columns to reward functions)


@dataclass
class RewardSource:
    """One reward term: a reward-model run or a ``module:function``, with its weight in the sum."""

    model: str | None = field(default=None, metadata={"help": "Reward-model run (runs/<name>/rm) or model dir."})
    fn: str | None = field(
        default=None, metadata={"help": "module:function (prompts: list[str], responses: list[str]) -> scores."}
    )
    kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "Keyword arguments for fn."})
    weight: float = field(default=1.0, metadata={"help": "Weight of this term in the summed reward."})

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.fn):
            raise ConfigError(
                f"rewards: each entry names exactly one of model (a reward-model run) or fn (module:function); "
                f"got model={self.model!r}, fn={self.fn!r}."
            )
        if self.fn:
            module, sep, func = self.fn.partition(":")
            if not module or not sep or not func:
                raise ConfigError(f"rewards: fn={self.fn!r}: write it as 'module:function'.")
        elif self.kwargs:
            raise ConfigError(f"rewards: kwargs are for fn rewards; the model entry {self.model!r} takes none.")
        if not math.isfinite(self.weight):
            raise ConfigError(f"rewards: weight={self.weight} must be a finite number.")

    @property
    def ref(self) -> str:
        return self.model or self.fn or ""


@dataclass
class OnlineSection:
    """Settings GRPO and RLOO share that TRL's config does not hold (TRL's are under ``training``)."""

    max_prompt_length: int = field(
        default=256, metadata={"help": "Prompts longer than this many tokens are skipped (counted in the manifest)."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from each reward term's score of answers without EOS (null = off)."},
    )
    reward_normalization: str = field(
        default="none",
        metadata={"help": "none, or rm_stats: standardise reward-model scores with the RM's reward_stats.json."},
    )
    reward_clip: float | None = field(
        default=None, metadata={"help": "Clip each (normalised) reward term to [-reward_clip, reward_clip]."}
    )

    def __post_init__(self) -> None:
        if self.max_prompt_length < 1:
            raise ConfigError(f"online.max_prompt_length={self.max_prompt_length}: must be >= 1.")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ConfigError(
                f"online.missing_eos_penalty={self.missing_eos_penalty}: must be >= 0 (it is subtracted) or null."
            )
        if self.reward_normalization not in REWARD_NORMALIZATIONS:
            raise ConfigError(
                f"online.reward_normalization={self.reward_normalization!r}: use one of "
                f"{', '.join(REWARD_NORMALIZATIONS)}."
            )
        if self.reward_clip is not None and self.reward_clip <= 0:
            raise ConfigError(f"online.reward_clip={self.reward_clip}: must be > 0 or null.")


@dataclass
class OnlineRecipe:
    """The recipe fields GRPO and RLOO share; each stage adds ``STAGE`` and ``training`` (TRL's config)."""

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
        default=None, metadata={"help": "Reward-model stage directory (weight 1); more terms go in rewards."}
    )
    reward_fn: str | None = field(
        default=None, metadata={"help": "Programmatic reward 'module:function' (weight 1); more terms in rewards."}
    )
    reward_fn_kwargs: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Keyword arguments passed to reward_fn, e.g. {target: e}."}
    )
    rewards: list[RewardSource] = field(
        default_factory=list,
        metadata={"help": "Further reward terms [{model: RUN | fn: module:function, kwargs, weight}], summed."},
    )
    online: OnlineSection = field(default_factory=OnlineSection)
    watch: WatchSection | None = field(
        default=None, metadata={"help": "Reward-hacking watch against a held-out judge (off when absent)."}
    )

    def reward_sources(self) -> list[RewardSource]:
        """Every reward term in order: reward_model, reward_fn, then the rewards list."""
        out = [RewardSource(model=self.reward_model)] if self.reward_model else []
        if self.reward_fn:
            out.append(RewardSource(fn=self.reward_fn, kwargs=dict(self.reward_fn_kwargs)))
        return out + list(self.rewards)

    def upstream_runs(self) -> list[str]:
        """Runs this stage reads besides init_from and reward_model (their identities join the config hash)."""
        runs = [s.model for s in self.rewards if s.model]
        if self.watch is not None and self.watch.judge and Path(self.watch.judge).exists():
            runs.append(self.watch.judge)
        return runs

    def __post_init__(self) -> None:
        stage = getattr(self, "STAGE", "online")
        if self.data is None:
            raise ConfigError(
                f"The {stage} recipe has no data section (the prompts). Add e.g.\n  data:\n    sources:\n"
                "      - path: builtin:bundled"
            )
        if self.reward_fn_kwargs and not self.reward_fn:
            raise ConfigError("reward_fn_kwargs is set but reward_fn is not; remove reward_fn_kwargs.")
        if self.reward_fn:
            RewardSource(fn=self.reward_fn, kwargs=self.reward_fn_kwargs)  # the same format check
        sources = self.reward_sources()
        if not sources:
            raise ConfigError(
                "No reward: set reward_model to a reward-model stage directory (e.g. runs/<name>/rm), reward_fn to a "
                "'module:function' (e.g. align.stages.ppo:reward_contains), or list terms under rewards."
            )
        if self.reference not in REFERENCES:
            raise ConfigError(f"reference={self.reference!r}: use sft (the init_from policy) or base.")
        if not self.lora.enabled:
            raise ConfigError(
                f"{stage} in align trains a LoRA adapter (the reference is the adapter-disabled model); "
                "set lora.enabled=true."
            )
        if self.online.reward_normalization == "rm_stats" and not any(s.model for s in sources):
            raise ConfigError(
                "online.reward_normalization=rm_stats standardises reward-model scores, but no reward term is a "
                "reward model; use none."
            )
        check_judge(self.watch, [s.ref for s in sources])
        args = getattr(self, "training", None)
        if args is not None:
            if args.reward_weights is not None:
                raise ConfigError(
                    "training.reward_weights is set from the reward terms' weights (rewards[].weight; "
                    "reward_model and reward_fn weigh 1); remove training.reward_weights."
                )
            if args.temperature <= 0:
                raise ConfigError(f"training.temperature={args.temperature}: online stages sample; use > 0.")
            if args.num_iterations > 1 and args.save_strategy == "steps" and args.save_steps % args.num_iterations:
                raise ConfigError(
                    f"training.save_steps={args.save_steps} is not a multiple of training.num_iterations="
                    f"{args.num_iterations}: a checkpoint inside a generation's updates cannot resume exactly "
                    "(the answers are not saved). Use a multiple."
                )
            if args.use_vllm:
                import importlib.util

                if importlib.util.find_spec("vllm") is None:
                    raise ConfigError(
                        "training.use_vllm=true needs vLLM, which is not installed: on a GPU machine run "
                        'pip install -e ".[vllm]" (TRL\'s colocate mode, training.vllm_mode=colocate, shares the '
                        "training GPU); on a CPU keep use_vllm false (generation through transformers)."
                    )
            args.reward_weights = [float(s.weight) for s in sources]


def online_training_defaults() -> dict[str, Any]:
    """Stage defaults for TRL's config (under the recipe's values): sized for a small model with LoRA on a CPU."""
    return {
        "learning_rate": 5e-5,
        "per_device_train_batch_size": 8,
        "num_generations": 4,
        "max_completion_length": 48,
        "temperature": 0.7,
        "top_p": 1.0,
        "top_k": 0,
        "beta": 0.05,
        "num_train_epochs": 1,
        "lr_scheduler_type": "constant",
        "eval_strategy": "no",  # TRL's eval would sample the eval prompts again; compare is the evaluation
        "disable_dropout": True,  # as align's PPO: rollout and training log-probs come from one deterministic model
        "log_completions": False,
    }


# --------------------------------------------------------------------------------------------------------------
# Rewards


class RewardBank:
    """What the reward terms saw last: one generation batch's prompts, texts, EOS flags and each term's shaped
    scores (the watch reads it), plus the time spent scoring and the tokens generated (the timing metrics)."""

    def __init__(self, weights: list[float]):
        self.weights = weights
        self._prompts: Any = None
        self.texts: list[str] = []
        self.ended: list[bool] = []
        self.scores: dict[int, list[float]] = {}
        self.score_seconds = 0.0
        self.tokens = 0

    def begin(self, prompts: Any, texts: list[str], ended: list[bool], completion_ids: list[list[int]]) -> None:
        if prompts is not self._prompts:  # TRL passes the same list to every term of one batch
            self._prompts, self.texts, self.ended, self.scores = prompts, texts, ended, {}
            self.tokens = sum(len(c) for c in completion_ids)

    def record(self, index: int, scores: list[float]) -> None:
        self.scores[index] = scores

    def samples(self) -> tuple[list, list[str], list[bool], list[float]] | None:
        """(prompts, texts, ended, proxy per answer = the weighted sum of the terms), or None before any batch."""
        if self._prompts is None or len(self.scores) != len(self.weights):
            return None
        proxy = [
            sum(self.weights[k] * self.scores[k][i] for k in range(len(self.weights))) for i in range(len(self.texts))
        ]
        return list(self._prompts), self.texts, self.ended, proxy

    def take_timing(self) -> tuple[float, int]:
        out = (self.score_seconds, self.tokens)
        self.score_seconds = 0.0
        return out


class RewardTerm:
    """One reward TRL calls as ``term(prompts, completions, completion_ids, **dataset_columns)``; the shaping of
    PPO's scores (missing-EOS penalty, RM-stats normalisation, clip) applied to its raw scores."""

    def __init__(self, index: int, source: RewardSource, cfg: OnlineSection, bank: RewardBank, eos_id: int,
                 scorer: RewardModelScorer | None = None, batch_size: int = 16):  # fmt: skip
        self.index, self.source, self.cfg, self.bank, self.eos_id = index, source, cfg, bank, eos_id
        self.scorer, self.batch_size = scorer, batch_size
        self.fn = ProgrammaticReward(source.fn, source.kwargs) if source.fn else None
        # TRL names the metric rewards/<__name__>/mean after this
        self.__name__ = "rm" if scorer is not None else source.fn.partition(":")[2]
        if index > 0:
            self.__name__ += f"_{index}"
        self.normalize = None
        if scorer is not None and cfg.reward_normalization == "rm_stats":
            if not scorer.stats:
                raise ConfigError(
                    f"online.reward_normalization=rm_stats: {scorer.model_dir} has no reward_stats.json (the RM stage "
                    "writes it when it has an eval split). Use reward_normalization: none."
                )
            self.normalize = (float(scorer.stats["mean"]), float(scorer.stats["std"]))

    def __call__(self, prompts, completions, completion_ids, **columns) -> list[float]:
        t0 = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        ended = [bool(ids) and ids[-1] == self.eos_id for ids in completion_ids]
        self.bank.begin(prompts, texts, ended, completion_ids)
        if self.scorer is not None:
            seqs = [list(p) + list(c) for p, c in zip(columns[PROMPT_IDS], completion_ids, strict=True)]
            raw = self.scorer(prompts, seqs, texts, ended, batch_size=self.batch_size)
        else:
            raw = self.fn([prompt_text(p) for p in prompts], texts)
        scores = self.shape(torch.tensor(raw, dtype=torch.float32), torch.tensor(ended)).tolist()
        self.bank.record(self.index, scores)
        self.bank.score_seconds += time.perf_counter() - t0
        return scores

    def shape(self, raw: torch.Tensor, has_eos: torch.Tensor) -> torch.Tensor:
        scores = raw
        if self.cfg.missing_eos_penalty is not None:
            scores = pm.apply_missing_eos_penalty(scores, has_eos, self.cfg.missing_eos_penalty)
        if self.normalize is not None:
            return pm.normalize_scores(scores, *self.normalize, self.cfg.reward_clip)
        if self.cfg.reward_clip is not None:
            return pm.normalize_scores(scores, 0.0, 1.0, self.cfg.reward_clip)
        return scores


def build_rewards(
    recipe: OnlineRecipe, tokenizer: Any, bank: RewardBank, device: Any = "cpu", log=print
) -> list[RewardTerm]:
    terms = []
    for i, source in enumerate(recipe.reward_sources()):
        scorer = None
        if source.model:
            scorer = RewardModelScorer(
                source.model, tokenizer, dtype=recipe.model.dtype, device=device, log=log, settings=recipe.model
            )
        terms.append(RewardTerm(i, source, recipe.online, bank, tokenizer.eos_token_id, scorer))
    return terms


# --------------------------------------------------------------------------------------------------------------
# The trainer


class OnlineTrainerMixin:
    """Mixed in front of TRL's GRPOTrainer / RLOOTrainer: align's prompt ids, neutral complete sampling settings,
    align's meaning of ``reference: base``, and timing (see the module docstring)."""

    def __init__(self, *args, align_encoder: Any, reward_bank: RewardBank, reference_is_base_model: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.align_encoder = align_encoder
        self.reward_bank = reward_bank
        tok = self.processing_class
        # Answers end at the tokenizer's EOS only (as in PPO and compare), not at every id the model's
        # generation_config lists.
        self.eos_token_ids = [tok.eos_token_id]
        a = self.args
        sampling = Sampling(
            max_new_tokens=a.max_completion_length, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k
        )
        gen = sampling.config(tok.eos_token_id, tok.pad_token_id)
        gen.min_p = a.min_p
        gen.repetition_penalty = a.repetition_penalty
        gen.cache_implementation = a.cache_implementation
        gen.disable_compile = True
        if a.generation_kwargs:
            gen.update(**a.generation_kwargs)
        self.generation_config = gen
        self.generation_kwargs = None  # TRL's override of the model's config is a no-op on transformers 5
        model = self.accelerator.unwrap_model(self.model)
        if reference_is_base_model and "ref" in getattr(model, "peft_config", {}):
            # TRL keeps a frozen copy of a pre-trained adapter as the reference; align's reference: base is the base
            # model (adapters off), as in DPO and PPO.
            model.delete_adapter("ref")
        self._align_gen_seconds = 0.0

    def _tokenize_prompts(self, prompts: list):
        return [self.align_encoder.prompt(p) for p in prompts], None, {}

    def _generate_single_turn(self, *args, **kwargs):
        t0 = time.perf_counter()
        with neutral_defaults(self.accelerator.unwrap_model(self.model)):
            out = super()._generate_single_turn(*args, **kwargs)
        self._align_gen_seconds += time.perf_counter() - t0
        return out

    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        out = super()._generate_and_score_completions(inputs)
        rollout = time.perf_counter() - t0
        mode = "train" if self.model.training else "eval"
        score, tokens = self.reward_bank.take_timing()
        gen, self._align_gen_seconds = self._align_gen_seconds, 0.0
        m = self._metrics[mode]
        m["time/generate"].append(gen)
        m["time/score"].append(score)
        m["time/rollout"].append(rollout)
        m["rollout_tokens_per_s"].append(tokens * self.accelerator.num_processes / max(gen, 1e-9))
        return out

    def training_step(self, model, inputs, num_items_in_batch):
        t0 = time.perf_counter()
        rollouts_before = len(self._metrics["train"]["time/rollout"])
        out = super().training_step(model, inputs, num_items_in_batch)
        spent = time.perf_counter() - t0
        if len(self._metrics["train"]["time/rollout"]) > rollouts_before:
            spent -= self._metrics["train"]["time/rollout"][-1]
        self._metrics["train"]["time/train"].append(spent)
        return out


@dataclass
class PromptData:
    """The prompts as :meth:`common.StageContext.start` records data: manifest facts and the drop report."""

    info: dict[str, Any]
    report: DropReport

    def manifest_info(self) -> dict[str, Any]:
        return self.info


def prepare_prompts(recipe: OnlineRecipe, encoder: Any, log=print) -> tuple[list[dict[str, Any]], PromptData]:
    """Dataset rows ``{prompt (messages), align_prompt_ids, prompt_id}`` of the training prompts that fit."""
    train, report = load_prompts(recipe.data)
    kept: list[PromptRecord] = []
    rows: list[dict[str, Any]] = []
    too_long = 0
    for p in train:
        ids = encoder.prompt(p.prompt)
        if len(ids) > recipe.online.max_prompt_length:
            too_long += 1
            continue
        kept.append(p)
        rows.append({"prompt": p.prompt, PROMPT_IDS: ids, "prompt_id": p.id})
    if not rows:
        raise ConfigError(
            f"All {len(train)} training prompts are longer than online.max_prompt_length="
            f"{recipe.online.max_prompt_length} tokens; raise it."
        )
    if too_long:
        log(f"[align] {too_long} prompt(s) longer than online.max_prompt_length skipped")
    info = report.manifest_info(kept)
    info["prompts_too_long"] = too_long
    return rows, PromptData(info, report.drops)


def build_policy(ctx: common.StageContext, recipe: OnlineRecipe) -> tuple[Any, Any]:
    """(model, peft_config) for TRL: a fresh adapter on base + merged init_from, or the init_from adapter itself."""
    if ctx.init_from is not None and recipe.reference == "base":
        from peft import PeftModel

        base = ctx.load_start_model(merge_init=False)  # merges what lies under the init adapter, not the adapter
        return PeftModel.from_pretrained(base, str(ctx.init_from), is_trainable=True), None
    return ctx.load_start_model(), ctx.peft_config("CAUSAL_LM")


# Over 80 lines on purpose: the stage's life in order (plan, prompts, policy, rewards, watch, train, save, card), as
# in dpo.run; its parts are the functions above.
def run(recipe: OnlineRecipe, trainer_cls: type, callbacks: list | None = None) -> Path:
    """Run (or resume, or skip) a GRPO/RLOO stage on ``trainer_cls`` (TRL's trainer); returns the stage directory."""
    ctx = common.begin(recipe)
    if ctx.plan.action == "skip":
        return ctx.done_already()
    log = ctx.log if ctx.is_main else (lambda *a, **k: None)
    encoder = ctx.encoder(max_length=None)
    rows, data = prepare_prompts(recipe, encoder, log)
    model, peft_config = build_policy(ctx, recipe)
    sources = recipe.reward_sources()
    bank = RewardBank([s.weight for s in sources])
    terms = build_rewards(recipe, ctx.tokenizer, bank, device=ctx.state.device, log=log)
    watch = None
    extra_callbacks: list = []
    if recipe.watch is not None:
        watch = RewardHackingWatch(recipe.watch, ctx.tokenizer, ctx.out_dir, dtype=recipe.model.dtype,
                                   device=ctx.state.device, is_main=ctx.is_main, log=ctx.log,
                                   settings=recipe.model)  # fmt: skip
        extra_callbacks.append(WatchCallback(watch, bank.samples, lambda: ctx.recorder, ctx.out_dir / "metrics.jsonl"))
    trainer = common.guarded(trainer_cls)(
        model=model,
        reward_funcs=terms,
        args=recipe.training,
        train_dataset=common.to_dataset(rows),
        processing_class=ctx.tokenizer,
        peft_config=peft_config,
        callbacks=[*extra_callbacks, *(callbacks or [])],
        align_encoder=encoder,
        reward_bank=bank,
        reference_is_base_model=ctx.init_from is not None and recipe.reference == "base",
    )
    if watch is not None:
        extra_callbacks[0].trainer = trainer
        acc = trainer.accelerator
        watch.reduce_mean = lambda values: acc.reduce(torch.tensor(values, device=acc.device), "mean").tolist()
    ctx.start(trainer, data)
    ctx.train(trainer)
    metrics = dict(ctx.final_metrics())
    ctx.save(trainer)
    rm_terms = [t for t in terms if t.scorer is not None]
    extra: dict[str, Any] = {
        "reference": recipe.reference if ctx.init_from else "base (no init_from)",
        "reward_model": rm_terms[0].scorer.path if rm_terms else None,
        "reward_fn": recipe.reward_fn,
        "rewards": [
            {
                "name": t.__name__,
                "model": t.scorer.path if t.scorer is not None else None,
                "fn": t.source.fn,
                "weight": t.source.weight,
                "normalised_with_rm_stats": t.normalize is not None,
                "retokenized": bool(t.scorer is not None and t.scorer.retokenize),
            }
            for t in terms
        ],
        "sampling": {
            k: getattr(recipe.training, k)
            for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_completion_length")
        },
        "use_vllm": bool(recipe.training.use_vllm),
    }
    if watch is not None:
        extra["watch"] = watch.finish(recipe.STAGE)
    return ctx.finish(metrics, **extra)
