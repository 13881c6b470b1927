"""Group relative policy optimisation: TRL ``GRPOTrainer`` with LoRA, align's prompts, rewards and sampling.

    align grpo recipes/tiny/grpo.yaml
    accelerate launch -m align grpo recipes/smollm2-135m/grpo.yaml training.num_generations=8

Each prompt gets ``training.num_generations`` answers; an answer's advantage is its reward standardised within its
prompt's group (``training.scale_rewards``), the KL to the reference (``training.beta``, k3 per token) is in the
loss, and TRL's ``training.loss_type`` (default ``dapo``) sets how token losses are averaged. No critic. What align
adds around TRL (prompts, reference, rewards, neutral sampling, timing, the watch) is in
:mod:`align.stages.online`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trl import GRPOConfig, GRPOTrainer

from align.stages import online


@dataclass
class Recipe(online.OnlineRecipe):
    STAGE: ClassVar[str] = "grpo"
    training: GRPOConfig | None = None

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        return online.online_training_defaults()


class AlignGRPOTrainer(online.OnlineTrainerMixin, GRPOTrainer):
    """GRPOTrainer with align's prompt ids, sampling settings, reference and timing (align.stages.online)."""


def run(recipe: Recipe, callbacks: list | None = None):
    return online.run(recipe, AlignGRPOTrainer, callbacks)
