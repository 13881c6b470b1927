"""The judge of a comparison: a reward model (loaded as it was trained, align/reward_models.py) or a reward function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align.config import ModelSection, import_callable
from align.data.prompts import prompt_text
from align.reward_models import RewardModelScorer


def load_judge(
    judge: str, policy_tokenizer: Any, dtype: str = "float32", log=print, settings: ModelSection | None = None
) -> dict[str, Any]:
    """A reward model (``align rm`` run dir, adapter dir or full model, rebuilt with the adapters merged under it)
    or a ``module:function`` reward. ``settings``: model loading settings (align.runs.load_settings)."""
    if ":" in judge and not Path(judge).exists():
        return {"kind": "function", "fn": import_callable(judge, f"--judge {judge!r}"), "id": judge}
    scorer = RewardModelScorer(judge, policy_tokenizer, dtype=dtype, log=log, settings=settings)
    return {"kind": "model", "scorer": scorer, "id": str(scorer.model_dir.resolve())}


def judge_scores(
    judge: dict[str, Any], prompts: list[list[dict]], texts: list[str], ended: list[bool], batch_size: int
) -> list[float]:
    if judge["kind"] == "function":
        return [float(x) for x in judge["fn"]([prompt_text(p) for p in prompts], texts)]
    return judge["scorer"].score_texts(prompts, texts, ended, batch_size=batch_size)
