"""REINFORCE leave-one-out: TRL ``RLOOTrainer`` with LoRA, align's prompts, rewards and sampling.

    align rloo recipes/tiny/rloo.yaml
    accelerate launch -m align rloo recipes/smollm2-135m/rloo.yaml training.num_generations=8

Each prompt gets ``training.num_generations`` answers; the KL to the reference (``training.beta``, the log ratio
summed over the answer) is subtracted from each answer's reward, and its advantage is that reward minus the mean of
the other answers to the same prompt (Ahmadian et al. 2024); ``training.normalize_advantages`` standardises them
over the batch. No critic. What align adds around TRL is in :mod:`align.stages.online`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from trl import RLOOConfig, RLOOTrainer

from align.stages import online


@dataclass
class Recipe(online.OnlineRecipe):
    STAGE: ClassVar[str] = "rloo"
    training: RLOOConfig | None = None

    @staticmethod
    def training_defaults() -> dict[str, Any]:
        return online.online_training_defaults()


class AlignRLOOTrainer(online.OnlineTrainerMixin, RLOOTrainer):
    """RLOOTrainer with align's prompt ids, sampling settings, reference and timing (align.stages.online)."""


def run(recipe: Recipe, callbacks: list | None = None):
    return online.run(recipe, AlignRLOOTrainer, callbacks)
