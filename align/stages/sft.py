"""Supervised fine-tuning: TRL ``SFTTrainer`` on align's tokenized SFT records, LoRA or full.

    align sft recipes/tiny/sft.yaml
    accelerate launch -m align sft recipes/smollm2-135m/sft.yaml training.num_train_epochs=2

Tokenization happens in :mod:`align.templates` (loss on every assistant turn including its EOS, masks from
positions); TRL receives ``input_ids`` + ``assistant_masks`` and builds labels, truncation, padding-free batches or
packing from them. Output: ``runs/<name>/sft/model`` (adapter, or merged model with ``merge_adapter: true``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trl import SFTConfig

from align import fast_head
from align.config import LoraSection, ModelSection, RunSection, SpeedSection, TemplateSection
from align.data.prepare import prepare_sft, sft_messages
from align.data.spec import DataConfig
from align.stages import common


@dataclass
class Recipe:
    """An SFT recipe. Raises ConfigError at load for unknown keys, wrong types and incompatible options."""

    STAGE: ClassVar[str] = "sft"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig | None = field(default=None, metadata={"help": "SFT data (messages or prompt/completion)."})
    template: TemplateSection = field(default_factory=TemplateSection)
    lora: LoraSection = field(default_factory=LoraSection)
    speed: SpeedSection = field(default_factory=SpeedSection)
    training: SFTConfig | None = None
    run: RunSection = field(default_factory=RunSection)
    init_from: str | None = field(default=None, metadata={"help": "Adapter or model directory to start from."})
    merge_adapter: bool = field(default=False, metadata={"help": "Also save the adapter merged into the base."})

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        return {
            "learning_rate": 2e-4,
            "per_device_train_batch_size": 8,
            "num_train_epochs": 1,
            "max_length": 512,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0,
            "packing": False,
            "assistant_only_loss": False,
            "completion_only_loss": None,
        }

    def __post_init__(self) -> None:
        common.require_data(self)


def run(recipe: Recipe, callbacks: list | None = None):
    from trl import SFTTrainer

    ctx = common.begin(recipe)
    if ctx.plan.action == "skip":
        return ctx.done_already()
    data = prepare_sft(recipe.data)
    enc = ctx.encoder(max_length=recipe.training.max_length)
    train = ctx.tokenize(data, data.train, lambda r: enc.sft(sft_messages(r)))
    evals = ctx.tokenize(data, data.eval, lambda r: enc.sft(sft_messages(r)))
    model = ctx.load_start_model()
    args = recipe.training
    if not evals:
        args.eval_strategy = "no"
    trainer_cls = common.guarded(fast_head.with_compact_head(SFTTrainer))
    trainer = trainer_cls(
        speed=recipe.speed,
        model=model,
        args=args,
        train_dataset=common.to_dataset(train),
        eval_dataset=common.to_dataset(evals) if evals else None,
        processing_class=ctx.tokenizer,
        peft_config=ctx.peft_config("CAUSAL_LM"),
        callbacks=callbacks,
    )
    ctx.start(trainer, data)
    ctx.train(trainer)
    metrics = dict(ctx.final_metrics())
    if evals:
        ev = trainer.evaluate()
        metrics.update(ev)
        if "eval_loss" in ev:
            metrics["eval_perplexity"] = math.exp(min(ev["eval_loss"], 50.0))
    model_dir = ctx.save(trainer)
    if recipe.merge_adapter and recipe.lora.enabled:
        ctx.save_merged(trainer, model_dir.parent / "merged")
    return ctx.finish(metrics, compact_lm_head=trainer.use_compact_head())
