"""scripts/bench.py's GRPO/RLOO rows: the overrides that turn a shipped recipe into a clean-machine bench load for
every shipped recipe, so the SmolLM2 bench does not stop at a setting only the tiny recipe lacks."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from align.config import load_recipe

ROOT = Path(__file__).resolve().parents[2]


def bench_module():
    spec = importlib.util.spec_from_file_location("align_bench", ROOT / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", ["tiny", "smollm2-135m"])
@pytest.mark.parametrize("stage", ["grpo", "rloo"])
def test_bench_overrides_load_every_shipped_online_recipe_without_runs_or_reward_models(stage, folder):
    bench = bench_module()
    module = importlib.import_module(f"align.stages.{stage}")
    recipe = load_recipe(module.Recipe, ROOT / "recipes" / folder / f"{stage}.yaml", bench.ONLINE_OVERRIDES)
    assert recipe.init_from is None and recipe.reward_model is None and recipe.watch is None
    assert recipe.reward_fn == bench.ONLINE_REWARD and recipe.online.reward_normalization == "none"
