"""The recipe sections shared by the stages that train on preference rows through TRL: the reward model, DPO and
KTO. Each stage's ``Recipe`` subclasses one of these, names its TRL config as ``training`` and adds its own keys; the
fields keep the order they had when each stage spelled them out, so ``config.yaml`` reads as before."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from align.agreement import AgreementConfig
from align.config import ConfigError, LoraSection, ModelSection, RunSection, SpeedSection, TemplateSection
from align.data.spec import DataConfig
from align.stages.common import require_data

REFERENCES = ("sft", "base")


def referenced_training_defaults(**stage: Any) -> dict[str, Any]:
    """TRL config defaults DPO and KTO share (under the recipe's values), plus the stage's own (its loss)."""
    return {
        "learning_rate": 5e-5,
        "per_device_train_batch_size": 8,
        "num_train_epochs": 1,
        "beta": 0.1,
        "max_length": 512,
        "lr_scheduler_type": "cosine",
        **stage,
    }


@dataclass
class PreferenceRecipe:
    """Model, data (with the annotator gate), template, LoRA, speed, TRL's config, run and the start adapter."""

    STAGE: ClassVar[str] = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig | None = None
    agreement: AgreementConfig | None = field(default=None, metadata={"help": "Annotator agreement gate."})
    template: TemplateSection = field(default_factory=TemplateSection)
    lora: LoraSection = field(default_factory=LoraSection)
    speed: SpeedSection = field(default_factory=SpeedSection)
    training: Any = None  # each stage narrows it to its TRL config class (the loader builds that class)
    run: RunSection = field(default_factory=RunSection)
    init_from: str | None = field(default=None, metadata={"help": "SFT stage directory or adapter to start from."})

    def __post_init__(self) -> None:
        require_data(self)


@dataclass
class ReferencedRecipe(PreferenceRecipe):
    """A preference recipe whose loss measures the policy against a reference (DPO, KTO): the reference is the
    adapter-disabled model, so LoRA is required, and the step-0 check compares the two before training."""

    reference: str = field(default="sft", metadata={"help": "sft (init_from merged, adapter off) or base."})
    step0_check: bool = field(default=True, metadata={"help": "Check rewards == 0 at step 0 when policy == ref."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference not in REFERENCES:
            raise ConfigError(f"reference={self.reference!r}: use sft (the init_from policy) or base.")
        if not self.lora.enabled:
            raise ConfigError(
                f"{self.STAGE.upper()} in align trains a LoRA adapter (the reference is the adapter-disabled model); "
                "set lora.enabled=true."
            )
