"""Pairwise (Bradley-Terry) reward model: TRL ``RewardTrainer`` on a sequence-classification head, LoRA.

    align rm recipes/tiny/rm.yaml
    accelerate launch -m align rm recipes/smollm2-135m/rm.yaml init_from=runs/quickstart/sft

The score head is trained in full and saved with the adapter (``modules_to_save``), so a save/reload round trip
gives the same scores (docs/faults.md #16). Scores are read at the last non-pad token, which is the same position for left
and right padding (docs/faults.md #11). Evaluation stores accuracy, margin and the reward mean/std (``reward_stats.json``,
used by PPO to normalise), calibration of ``sigmoid(margin)`` (``eval_ece``, ``eval_brier``) and the correlation of
reward with reply length (``eval_reward_length_pearson``/``_spearman``; ``align.eval.calibration``), and compares the
model's preferences with the human annotators (``align.agreement.model_vs_humans``) when the eval split carries
labels: against everyone, and against the annotators the agreement gate kept, whose panel the verdict uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from trl import RewardConfig, RewardTrainer

from align.agreement import model_vs_humans
from align.config import ConfigError
from align.data.prepare import prepare_preferences
from align.eval.calibration import length_correlation, pair_calibration
from align.fast_head import install_bucketed_classifier
from align.models import load_sequence_classifier
from align.reward_models import score_sequences  # noqa: F401  (also imported from here by older code)
from align.runs import merge_chain
from align.stages import common
from align.stages.preference_recipe import PreferenceRecipe


@dataclass
class Recipe(PreferenceRecipe):
    STAGE: ClassVar[str] = "rm"
    training: RewardConfig | None = None
    use_margin: bool = field(default=False, metadata={"help": "Train with the records' margin column."})
    train_on: str = field(
        default="train",
        metadata={
            "help": "train (the usual split) or eval: train on the eval split's prompts only, giving a judge that "
            "no policy trained on the same pairs saw (the pipeline's judge stage)."
        },
    )

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        # eval_strategy no: the stage scores the eval split itself after training (accuracy, margins, reward stats,
        # model vs humans); TRL's epoch-end evaluation would score it a second time.
        return {
            "learning_rate": 1e-4,
            "per_device_train_batch_size": 8,
            "num_train_epochs": 1,
            "max_length": 512,
            "lr_scheduler_type": "cosine",
            "eval_strategy": "no",
        }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.train_on not in ("train", "eval"):
            raise ConfigError(f"train_on={self.train_on!r}: use train or eval.")
        if self.training.center_rewards_coefficient is not None and self.training.center_rewards_coefficient < 0:
            raise ConfigError("training.center_rewards_coefficient must be >= 0 (e.g. 0.01) or null.")


def evaluate_pairs(model: Any, rows: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Accuracy, mean margin and reward mean/std on the pairs; ``margins`` and ``rewards`` (chosen then rejected)
    per pair for the callers' own statistics."""
    chosen = score_sequences(model, [r["chosen_ids"] for r in rows], pad_id)
    rejected = score_sequences(model, [r["rejected_ids"] for r in rows], pad_id)
    margins = [c - r for c, r in zip(chosen, rejected)]
    allr = torch.tensor(chosen + rejected)
    return {
        "accuracy": sum(m > 0 for m in margins) / max(len(margins), 1),
        "mean_margin": sum(margins) / max(len(margins), 1),
        "reward_mean": allr.mean().item(),
        "reward_std": allr.std().item() if len(allr) > 1 else 0.0,
        "n_pairs": len(margins),
        "margins": margins,
        "rewards": chosen + rejected,
    }


def reliable_annotators(agreement: dict[str, Any] | None, names: list[str]) -> list[str] | None:
    """The annotators the agreement gate kept, among ``names``; None when no gate ran (then everyone counts).

    The gate runs once over both splits (``Prepared.agreement``, what the manifest records), so the eval pairs
    are judged against the same panel the training labels were voted by."""
    if agreement is None:
        return None
    dropped = set(agreement.get("dropped_annotators") or [])
    return [n for n in names if n not in dropped]


def quality_report(
    margins: list[float], rewards: list[float], lengths: list[int], records: list[Any], recipe: Recipe, agreement
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Calibration, length bias and model vs humans on the eval pairs -> (metrics, manifest extras)."""
    # A fixed orientation seed, so two reward models scored on the same eval split see the same pairs flipped.
    calibration = pair_calibration(margins, seed=0)
    length = length_correlation(rewards, lengths)
    metrics = {
        "eval_ece": calibration["ece"],
        "eval_brier": calibration["brier"],
        "eval_reward_length_pearson": length["pearson"],
        "eval_reward_length_spearman": length["spearman"],
    }
    metrics = {k: v for k, v in metrics.items() if v is not None}  # undefined figures stay in the extras only
    extra: dict[str, Any] = {"calibration": {**calibration, "length_correlation": length}}
    labelled = [(r, m) for r, m in zip(records, margins) if r.annotations]
    if labelled:
        names = sorted({a for r, _ in labelled for a in r.annotations})
        ann = {a: [r.annotations.get(a) for r, _ in labelled] for a in names}
        threshold = recipe.agreement.drop_annotators_below if recipe.agreement else None
        reason = (
            None
            if threshold is None
            else f"dropped by the agreement gate (leave-one-out kappa below {threshold} over both splits)"
        )
        extra["model_vs_humans"] = model_vs_humans(
            [m for _, m in labelled], ann, annotators=reliable_annotators(agreement, names), left_out_reason=reason
        )
    return metrics, extra


def _start_model(ctx: common.StageContext, recipe: Recipe, pad_id: int) -> Any:
    """The sequence classifier the reward model trains from: the base (or a full init_from model) with a new score
    head, and the init_from adapter chain merged under the adapter this stage trains."""
    ctx.seed_init()  # the score head is new: draw it (and the LoRA init after it) from the run's seed
    model = load_sequence_classifier(
        ctx.model_path, pad_token_id=pad_id, **common.model_kwargs(recipe.model, ctx.model_path != ctx.base_ref)
    )
    if ctx.init_from is not None:
        model = merge_chain(model, ctx.merged_chain())
        ctx.weights = {
            "base": ctx.base_ref,
            "merged": ctx.merged_chain(),
            "adapter": str(ctx.out_dir / "model"),
            "head": "score",
        }
    model.config.use_cache = False
    if recipe.speed.length_buckets:
        install_bucketed_classifier(model)
    return model


def run(recipe: Recipe, callbacks: list | None = None):
    ctx = common.begin(recipe)
    if ctx.plan.action == "skip":
        return ctx.done_already()
    data = prepare_preferences(recipe.data, recipe.agreement)
    enc = ctx.encoder(max_length=recipe.training.max_length)

    def encode(r):
        row = enc.reward_pair(r.prompt, r.chosen, r.rejected)
        row["length"] = max(len(row["chosen_ids"]), len(row["rejected_ids"]))  # for group_by_length batching
        if recipe.use_margin:
            row["margin"] = float(r.margin or 0.0)
        return row

    if recipe.train_on == "eval":
        # A judge: fit on the held-out prompts, and report accuracy on the training split (never trained on).
        data.train, data.eval = data.eval, data.train
    train = ctx.tokenize(data, data.train, encode)
    # Encode eval rows keeping each row's record (tokenization may drop some), so per-item scores line up with the
    # annotators' labels for model_vs_humans.
    eval_records: list[Any] = []
    reply_lengths: list[tuple[int, int]] = []

    def encode_eval(r):
        row = encode(r)
        eval_records.append(r)
        # Reply length in tokens (for the reward-length correlation): the sequence less its rendered prompt.
        n_prompt = len(enc.prompt(r.prompt))
        reply_lengths.append((len(row["chosen_ids"]) - n_prompt, len(row["rejected_ids"]) - n_prompt))
        return row

    evals = ctx.tokenize(data, list(data.eval), encode_eval)
    args = recipe.training
    if not evals:
        args.eval_strategy = "no"

    pad_id = ctx.tokenizer.pad_token_id
    model = _start_model(ctx, recipe, pad_id)
    trainer = common.guarded(RewardTrainer)(
        model=model,
        args=args,
        train_dataset=common.to_dataset(train),
        eval_dataset=common.to_dataset(evals) if evals else None,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config("SEQ_CLS", modules_to_save=["score"]),
        callbacks=callbacks,
    )
    ctx.start(trainer, data)
    ctx.train(trainer)
    metrics = dict(ctx.final_metrics())
    extra: dict[str, Any] = {"length_buckets": recipe.speed.length_buckets}
    model_dir = ctx.save(trainer)
    if evals:
        ev = evaluate_pairs(trainer.model, evals, pad_id)
        margins, rewards = ev.pop("margins"), ev.pop("rewards")
        metrics.update({f"eval_{k}": v for k, v in ev.items()})
        if ctx.is_main:
            common.write_json(
                model_dir / "reward_stats.json",
                {"mean": ev["reward_mean"], "std": ev["reward_std"], "n": 2 * ev["n_pairs"]},
            )
        assert len(eval_records) == len(margins) == len(reply_lengths)
        lengths = [c for c, _ in reply_lengths] + [r for _, r in reply_lengths]  # same order as rewards
        quality, more = quality_report(margins, rewards, lengths, eval_records, recipe, data.agreement)
        metrics.update(quality)
        extra.update(more)
    return ctx.finish(metrics, **extra)
