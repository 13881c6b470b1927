"""Direct preference optimisation: TRL ``DPOTrainer`` with LoRA and an explicit reference model.

    align dpo recipes/tiny/dpo.yaml
    accelerate launch -m align dpo recipes/smollm2-135m/dpo.yaml training.beta=0.2 training.loss_type=[ipo]

The reference is an explicit choice (docs/faults.md #12):

- ``reference: sft`` (default): the ``init_from`` adapter (the SFT output) is merged into the base weights and a
  fresh LoRA trains on top; the reference is that model with the adapter disabled, i.e. the SFT policy.
- ``reference: base``: the ``init_from`` adapter itself keeps training; the reference is the base model with the
  adapter disabled. Policy and reference then differ from step 0 by design.

Step-0 check: when policy and reference start equal, the first batch must give rewards 0 (and loss ln 2 for the
sigmoid loss); otherwise the reference is not what the recipe says and the run stops before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from trl import DPOConfig, DPOTrainer

from align import fast_head
from align.data.prepare import prepare_preferences
from align.errors import ReferenceCheckError  # noqa: F401  (re-exported: importable here as before)
from align.stages import common
from align.stages.preference_recipe import ReferencedRecipe, referenced_training_defaults


@dataclass
class Recipe(ReferencedRecipe):
    STAGE: ClassVar[str] = "dpo"
    training: DPOConfig | None = None

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        return referenced_training_defaults(loss_type=["sigmoid"])


class PreTokenizedDPOTrainer(common.BaseReferenceMixin, fast_head.CompactHeadMixin, DPOTrainer):
    """DPOTrainer that accepts align's pre-tokenized rows (prompt_ids/chosen_ids/rejected_ids) as they are, and
    computes log-probs with align's compact LM head (``speed`` section; see align/fast_head.py). With
    ``reference_is_base`` the reference is the adapter-disabled base, not TRL's copy of the starting adapter.

    TRL 1.16 always re-tokenizes from text; align tokenizes once with its template guards instead."""

    def __init__(self, *args, reference_is_base: bool = False, **kwargs):
        self._align_reference_is_base = reference_is_base
        super().__init__(*args, **kwargs)
        self.drop_copied_reference()

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" in dataset.column_names:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, *args, **kwargs):
        self.drop_copied_reference()  # runs inside DPOTrainer.__init__, after TRL added its "ref" adapter
        self.use_compact_head()  # the precomputation runs inside DPOTrainer.__init__, after TRL patched its head
        return super()._precompute_ref_logps(*args, **kwargs)


def step0_tolerance(recipe: Any) -> float:
    """How close to 0 the step-0 rewards must be. In fp32 the policy and reference passes agree to ~1e-6; under
    bf16 (weights or autocast) batches padded differently (e.g. precomputed reference log-probs) differ by rounding,
    ~1e-3 in the mean reward, while a wrong reference moves rewards by beta x (several nats), i.e. >= 0.1."""
    low_precision = recipe.model.dtype in ("bfloat16", "float16") or recipe.training.bf16 or recipe.training.fp16
    return 2e-2 if low_precision else 1e-4


def step0_check(trainer: Any, loss_types: list[str], tol: float = 1e-4) -> dict[str, float]:
    """Rewards must be 0 (and the sigmoid loss ln 2) on the first batch when policy == reference."""
    model = trainer.model
    was_training = model.training
    model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    batch = trainer._prepare_inputs(batch)
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
    m = {k: sum(v) / len(v) for k, v in trainer._metrics["eval"].items() if v}
    trainer._metrics["eval"].clear()
    model.train(was_training)
    out = {
        "loss": loss,
        "rewards_chosen": m.get("rewards/chosen", 0.0),
        "rewards_rejected": m.get("rewards/rejected", 0.0),
    }
    bad = abs(out["rewards_chosen"]) > tol or abs(out["rewards_rejected"]) > tol
    if loss_types == ["sigmoid"]:
        bad = bad or abs(loss - math.log(2)) > tol
    if bad:
        raise ReferenceCheckError(
            f"Step-0 check failed: with policy == reference the rewards must be 0 and the sigmoid loss ln 2 = 0.6931, "
            f"got {out}. The reference model is not the starting policy: check `reference` and `init_from`, and "
            "that the adapter starts at zero (a fresh LoRA)."
        )
    return out


def run(recipe: Recipe, callbacks: list | None = None):
    ctx = common.begin(recipe)
    if ctx.plan.action == "skip":
        return ctx.done_already()
    data = prepare_preferences(recipe.data, recipe.agreement)
    enc = ctx.encoder(max_length=recipe.training.max_length)

    def encode(r):
        row = enc.preference(r.prompt, r.chosen, r.rejected)
        # For train_sampling_strategy=group_by_length: batches of similar length waste less compute on padding.
        row["length"] = len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
        return row

    train = ctx.tokenize(data, data.train, encode)
    evals = ctx.tokenize(data, data.eval, encode)
    args = recipe.training
    if not evals:
        args.eval_strategy = "no"

    policy_equals_ref = ctx.init_from is None or recipe.reference == "sft"
    if ctx.init_from is not None and recipe.reference == "base":
        from peft import PeftModel

        base = ctx.load_start_model(
            merge_init=False
        )  # merges what lies under the init adapter, not the adapter itself
        model = PeftModel.from_pretrained(base, str(ctx.init_from), is_trainable=True)
        peft_config = None
    else:
        model = ctx.load_start_model()
        peft_config = ctx.peft_config("CAUSAL_LM")
    trainer = common.guarded(PreTokenizedDPOTrainer)(
        speed=recipe.speed,
        model=model,
        args=args,
        train_dataset=common.to_dataset(train),
        eval_dataset=common.to_dataset(evals) if evals else None,
        processing_class=ctx.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
        reference_is_base=ctx.init_from is not None and recipe.reference == "base",
    )
    ctx.start(trainer, data)
    extra: dict[str, Any] = {"reference": recipe.reference if ctx.init_from else "base (no init_from)"}
    if recipe.step0_check and policy_equals_ref and ctx.plan.action == "start":
        extra["step0"] = step0_check(trainer, list(args.loss_type), tol=step0_tolerance(recipe))
        ctx.recorder.log({"step0_check": extra["step0"]}, step=0)
    ctx.train(trainer)
    extra["compact_lm_head"] = trainer.use_compact_head()
    metrics = dict(ctx.final_metrics())
    if evals:
        metrics.update(trainer.evaluate())
    ctx.save(trainer)
    return ctx.finish(metrics, **extra)
