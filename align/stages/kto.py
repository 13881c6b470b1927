"""Kahneman-Tversky optimisation on unpaired feedback: TRL ``KTOTrainer`` with LoRA and an explicit reference.

    align kto recipes/tiny/kto.yaml
    accelerate launch -m align kto recipes/smollm2-135m/kto.yaml training.beta=0.2

Data: rows of one response with a thumbs up or down (``prompt``, ``completion``, ``label``; or ``messages`` and
``label``), labelled by the row or by the annotators' ratings through the agreement gate; ``data.unpair: true`` reads
preference pairs as two rows each (chosen -> desirable, rejected -> undesirable), split by prompt so a pair's rows
share a side.

The reference is an explicit choice, as in DPO (docs/faults.md #12):

- ``reference: sft`` (default): the ``init_from`` adapter is merged into the base weights and a fresh LoRA trains on
  top; the reference is that model with the adapter disabled, i.e. the SFT policy.
- ``reference: base``: the ``init_from`` adapter itself keeps training and the reference is the base model with the
  adapter disabled. TRL's trainer would instead copy the adapter as a frozen "ref" adapter (reference = the SFT
  policy); align removes that copy so the reference is what the recipe says.

Step-0 check: when policy and reference start equal, the first batch must give rewards 0, a KL estimate of 0 and a
loss of 0.5 per row (1 - sigmoid(0), times its desirable or undesirable weight); otherwise the run stops.

Order: TRL estimates KTO's KL reference point from each row's prompt with the completion of its neighbour in the
batch, so it reads the training rows in order (``train_sampling_strategy: sequential``). align shuffles the rows
once with the run's seed, so a pair's two rows (or a file sorted by label) are not neighbours.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from trl import KTOConfig, KTOTrainer

from align import fast_head
from align.config import ConfigError, to_plain
from align.data.card import build_card_facts, card_hash_for, summarise_agreement, write_card
from align.data.card_facts import label_balance
from align.data.prepare import Prepared, prepare_unpaired
from align.errors import ReferenceCheckError
from align.stages import common
from align.stages.dpo import step0_tolerance
from align.stages.preference_recipe import ReferencedRecipe, referenced_training_defaults

DATA_CARD = "data"  # <stage dir>/data.md and data.json: the card of the rows this run trained on


@dataclass
class Recipe(ReferencedRecipe):
    STAGE: ClassVar[str] = "kto"
    training: KTOConfig | None = None

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        return referenced_training_defaults(loss_type="kto")

    def __post_init__(self) -> None:
        super().__post_init__()
        args = self.training
        if args.loss_type == "kto":
            # TRL checks these only once the data is tokenized and the model loaded; say so before any of that.
            if args.train_sampling_strategy != "sequential":
                raise ConfigError(
                    f"training.train_sampling_strategy={args.train_sampling_strategy!r}: the kto loss estimates its "
                    "KL term from each row and its neighbour in the batch, so rows must be read in order (sequential; "
                    "align shuffles them once with the seed). Use sequential, or loss_type=apo_zero_unpaired."
                )
            if args.per_device_train_batch_size < 2:
                raise ConfigError(
                    "training.per_device_train_batch_size must be at least 2 for the kto loss: with one row the KL "
                    "estimate is that row's own reward."
                )


def with_kl_completions(batch: dict[str, list]) -> dict[str, list]:
    """KTO's KL reference point pairs each row's prompt with the completion of the row before it in its batch (the
    first row takes the batch's last), so the mismatched completions are the batch's own. TRL builds this column
    only while tokenizing text; align gives it ids, so the same rotation is written here."""
    completions = batch["completion_ids"]
    batch["KL_completion_ids"] = completions[-1:] + completions[:-1]
    return batch


class PreTokenizedKTOTrainer(common.BaseReferenceMixin, fast_head.CompactHeadMixin, KTOTrainer):
    """KTOTrainer that accepts align's pre-tokenized rows (prompt_ids / completion_ids / label) as they are, computes
    log-probs with align's compact LM head (``speed`` section), and with ``reference_is_base`` keeps the reference
    at the adapter-disabled base instead of TRL's copy of the adapter being trained."""

    def __init__(self, *args, reference_is_base: bool = False, **kwargs):
        self._align_reference_is_base = reference_is_base
        super().__init__(*args, **kwargs)
        self.drop_copied_reference()

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if "prompt_ids" not in dataset.column_names:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if not self.calculate_KL:
            return dataset
        return dataset.map(with_kl_completions, batched=True, batch_size=args.per_device_train_batch_size)

    def _precompute_ref_logps(self, *args, **kwargs):
        self.drop_copied_reference()  # runs inside KTOTrainer.__init__, after TRL added its "ref" adapter
        self.use_compact_head()  # and after TRL patched its own head
        return super()._precompute_ref_logps(*args, **kwargs)


def step0_check(trainer: Any, tol: float = 1e-4, enforce: bool = True) -> dict[str, float]:
    """On the first batch with policy == reference: rewards 0, KL estimate 0, and every row's loss 1 - sigmoid(0) =
    0.5 times its weight. ``enforce=False`` only measures (``reference: base`` differs from the policy by design)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer._metrics["eval"].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
    m = {k: sum(v) / len(v) for k, v in trainer._metrics["eval"].items() if v}
    trainer._metrics["eval"].clear()
    model.train(was_training)
    labels = batch["label"].bool()
    n_desirable, n_undesirable = int(labels.sum()), int((~labels).sum())
    args = trainer.args
    weighted = args.desirable_weight * n_desirable + args.undesirable_weight * n_undesirable
    out = {
        "loss": loss,
        "expected_loss": 0.5 * weighted / (n_desirable + n_undesirable),
        "rewards_chosen": m.get("rewards/chosen", 0.0),
        "rewards_rejected": m.get("rewards/rejected", 0.0),
        "kl": m.get("kl", 0.0),
    }
    bad = any(abs(out[k]) > tol for k in ("rewards_chosen", "rewards_rejected", "kl"))
    if enforce and (bad or abs(loss - out["expected_loss"]) > tol):
        raise ReferenceCheckError(
            "Step-0 check failed: with policy == reference the rewards and the KL estimate must be 0 and the loss "
            f"0.5 per row (weighted: {out['expected_loss']:.4f}), got {out}. The reference model is not the starting "
            "policy: check `reference` and `init_from`, and that the adapter starts at zero (a fresh LoRA)."
        )
    return out


def write_data_card(ctx: common.StageContext, data: Prepared) -> str | None:
    """The card of the rows this run trains on (label balance, drops, lengths, agreement) in the stage directory."""
    cfg = ctx.recipe.data
    agreement = None
    if data.agreement is not None:  # the gate's figures on the training split (pairs, or each response's ratings)
        gate = ctx.recipe.agreement
        agreement = summarise_agreement(
            data.agreement, data.agreement["item_annotations"], bootstrap=gate.bootstrap, seed=gate.seed
        )
    facts = build_card_facts(
        DATA_CARD,
        kind="unpaired",
        train=data.train,
        eval_records=data.eval,
        report=data.report,
        sources=data.sources,
        leakage=data.leakage,
        settings={
            "split_method": "eval_sources" if cfg.eval_sources else "prompt hash",
            "eval_fraction": cfg.eval_fraction,
            "split_seed": cfg.split_seed,
            "dedupe": cfg.dedupe,
            "unpair": cfg.unpair,
            "max_drop_fraction": cfg.max_drop_fraction,
            "agreement_applied": None if data.agreement is None else to_plain(ctx.recipe.agreement),
        },
        agreement=agreement,
        tokenizer=ctx.tokenizer,
        tokenizer_name=ctx.recipe.model.name_or_path,
        source_ref=f"the {ctx.recipe.STAGE} recipe's data section",
    )
    _, json_path = write_card(facts, ctx.out_dir, DATA_CARD)
    return card_hash_for(json_path)


def run(recipe: Recipe, callbacks: list | None = None):
    ctx = common.begin(recipe)
    if ctx.plan.action == "skip":
        return ctx.done_already()
    data = prepare_unpaired(recipe.data, recipe.agreement)
    enc = ctx.encoder(max_length=recipe.training.max_length)

    def encode(r):
        return {**enc.unpaired(r.prompt, r.completion), "label": bool(r.label)}

    train = ctx.tokenize(data, data.train, encode)
    evals = ctx.tokenize(data, data.eval, encode)
    args = recipe.training
    # Sequential sampling (see the module docstring): one seeded shuffle, the same on a resume.
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed + 1).shuffle(evals)
    if not evals:
        args.eval_strategy = "no"

    policy_equals_ref = ctx.init_from is None or recipe.reference == "sft"
    if ctx.init_from is not None and recipe.reference == "base":
        from peft import PeftModel

        base = ctx.load_start_model(merge_init=False)  # merges what lies under the init adapter, not the adapter
        model = PeftModel.from_pretrained(base, str(ctx.init_from), is_trainable=True)
        peft_config = None
    else:
        model = ctx.load_start_model()
        peft_config = ctx.peft_config("CAUSAL_LM")
    trainer = common.guarded(PreTokenizedKTOTrainer)(
        speed=recipe.speed,
        reference_is_base=not policy_equals_ref,
        model=model,
        args=args,
        train_dataset=common.to_dataset(train),
        eval_dataset=common.to_dataset(evals) if evals else None,
        processing_class=ctx.tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    ctx.start(trainer, data)
    extra: dict[str, Any] = {
        "reference": recipe.reference if ctx.init_from else "base (no init_from)",
        "label_balance": {"train": label_balance(data.train), "eval": label_balance(data.eval)},
    }
    if ctx.is_main:
        extra["data_card"] = write_data_card(ctx, data)
    if ctx.plan.action == "start" and (recipe.step0_check or not policy_equals_ref):
        enforce = recipe.step0_check and policy_equals_ref
        extra["step0"] = step0_check(trainer, tol=step0_tolerance(recipe), enforce=enforce)
        ctx.recorder.log({"step0_check": extra["step0"]}, step=0)
    ctx.train(trainer)
    extra["compact_lm_head"] = trainer.use_compact_head()
    metrics = dict(ctx.final_metrics())
    if evals:
        metrics.update(trainer.evaluate())
    ctx.save(trainer)
    return ctx.finish(metrics, **extra)
