"""The registry of pipeline stages: the one list of stages in align.

Each entry names the stage, the module that trains it (``Recipe`` and ``run(recipe)``; None for the data check
and the comparison, which the pipeline runs itself), its one-line help, its model-card tags, what it makes, and how
a pipeline wires it to earlier stages. The CLI, the pipeline, model cards and the config hash read this list;
adding a stage is one module, one entry here, its recipes and its tests.

Stage modules are imported by name (``module_of``) when a stage runs: they import torch, transformers and TRL,
which ``align --help`` and ``align data`` should not pay for.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class StageSpec:
    name: str
    module: str | None  # the training module; None: a pipeline step the pipeline runs itself (data, compare)
    help: str
    makes: str  # "data", "policy", "reward_model", "pairs" or "report"
    tags: tuple[str, ...] = ()  # model-card tags besides "align" and "lora"
    command: bool = True  # `align <name> RECIPE` exists (the judge is a pipeline-only reward model)
    default: bool = False  # in a pipeline that does not list its stages
    starts_from: str | None = None  # pipeline wiring: init_from this stage's run when it is in the pipeline
    scores_with: str | None = None  # pipeline wiring: reward_model = this stage's run (unless reward_fn is set)
    trains_on: str | None = None  # pipeline wiring: data comes from this stage's output (pairs.jsonl)
    # pipeline wiring: a watch section without a judge gets this stage's run as its held-out judge
    watch_judge: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # section keys a pipeline sets unless the recipe does
    # Recipe sections whose bookkeeping keys (logging, saving, output paths) are left out of the config hash; the
    # hash covers every other setting plus the data files and the upstream runs (init_from, reward_model).
    hash_skips_bookkeeping_in: tuple[str, ...] = ("training",)

    @property
    def trains(self) -> bool:
        return self.module is not None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("data", None, "validate the data, apply the agreement gate and write the data card", "data",
              command=False, default=True),
    StageSpec("sft", "align.stages.sft", "supervised fine-tuning (TRL SFTTrainer, LoRA)", "policy", tags=("sft",),
              default=True),
    StageSpec("rm", "align.stages.reward", "pairwise reward model (Bradley-Terry, LoRA + score head)",
              "reward_model", tags=("reward-model",), default=True, starts_from="sft"),
    StageSpec("judge", "align.stages.reward", "a second reward model trained only on the eval split (a judge)",
              "reward_model", tags=("reward-model",), command=False, defaults={"train_on": "eval"}),
    StageSpec("pairs", "align.stages.pairs",
              "on-policy preference pairs: sample k answers, rank with a reward model", "pairs", tags=("pairs",),
              starts_from="sft", scores_with="rm"),
    StageSpec("dpo", "align.stages.dpo", "direct preference optimisation (TRL DPOTrainer, LoRA)", "policy",
              tags=("dpo",), default=True, starts_from="sft", trains_on="pairs"),
    StageSpec("ppo", "align.stages.ppo", "PPO with LoRA, value head and a reward model (align's own)", "policy",
              tags=("ppo", "rlhf"), starts_from="sft", scores_with="rm",
              hash_skips_bookkeeping_in=("training", "ppo"), watch_judge="judge"),
    StageSpec("grpo", "align.stages.grpo", "GRPO with LoRA: group-relative rewards, no critic (TRL GRPOTrainer)",
              "policy", tags=("grpo", "rlhf"), starts_from="sft", scores_with="rm", watch_judge="judge"),
    StageSpec("rloo", "align.stages.rloo", "RLOO with LoRA: leave-one-out baseline, no critic (TRL RLOOTrainer)",
              "policy", tags=("rloo", "rlhf"), starts_from="sft", scores_with="rm", watch_judge="judge"),
    StageSpec("kto", "align.stages.kto", "KTO on unpaired feedback, thumbs up / down (TRL KTOTrainer, LoRA)",
              "policy", tags=("kto",), starts_from="sft"),
    StageSpec("compare", None, "compare the policies under a judge on held-out prompts", "report", command=False,
              default=True),
)  # fmt: skip

BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}
ORDER: tuple[str, ...] = tuple(s.name for s in STAGES)  # dependency order: each stage only uses earlier ones
COMMANDS: dict[str, StageSpec] = {s.name: s for s in STAGES if s.command}
TRAINING: dict[str, StageSpec] = {s.name: s for s in STAGES if s.trains}
DEFAULT_PIPELINE: tuple[str, ...] = tuple(s.name for s in STAGES if s.default)


# A later round of a pipeline's on-policy loop (pairs -> DPO) runs the same stages again in their own directories,
# named ``<stage>-r<round>`` (``pairs-r2``, ``dpo-r2``); every lookup below maps such a name to its stage.
ROUND_NAME = re.compile(r"^(?P<stage>[a-z_]+)-r(?P<round>[2-9]|[1-9][0-9]+)$")


def round_name(stage: str, round_: int) -> str:
    """The directory (and manifest) name of ``stage`` in round ``round_`` of the on-policy loop (round 1: plain)."""
    return stage if round_ == 1 else f"{stage}-r{round_}"


def stage_of(name: str) -> str:
    """The registry stage a pipeline name stands for: ``dpo-r2`` -> ``dpo``; any other name as it is."""
    m = ROUND_NAME.match(name)
    return m["stage"] if m and m["stage"] in BY_NAME else name


def round_of(name: str) -> int:
    m = ROUND_NAME.match(name)
    return int(m["round"]) if m and m["stage"] in BY_NAME else 1


def find(name: str) -> StageSpec | None:
    return BY_NAME.get(stage_of(name))


def spec(name: str) -> StageSpec:
    return BY_NAME[stage_of(name)]


def module_of(name: str) -> ModuleType:
    """The stage's training module (imported now: it brings in torch, transformers and TRL)."""
    module = spec(name).module
    if module is None:
        raise KeyError(f"stage {name!r} has no training module")
    return importlib.import_module(module)


def tags_of(name: str) -> list[str]:
    s = find(name)
    return list(s.tags) if s is not None and s.tags else [name]


def makes(name: str) -> str | None:
    s = find(name)
    return s.makes if s is not None else None
