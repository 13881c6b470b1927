"""Programmatic rewards: ``module:function`` rewards on texts (the demo rewards tests and tiny recipes use)."""

from __future__ import annotations

import math
from typing import Any

from align.config import import_callable


def reward_contains(prompts: list[str], responses: list[str], target: str = "e") -> list[float]:
    """Demo/test reward: how many times ``target`` occurs in each response. Only for demos and tests."""
    if not target:
        raise ValueError("reward_contains: target must be a non-empty string (reward_fn_kwargs: {target: e}).")
    return [float(r.count(target)) for r in responses]


def reward_short(prompts: list[str], responses: list[str], words: int = 5) -> list[float]:
    """Demo/test reward: 1 for a response of at most ``words`` words, less the longer it is. Only for demos."""
    return [1.0 - max(0, len(r.split()) - words) / max(words, 1) for r in responses]


class ProgrammaticReward:
    """A ``module:function`` reward on texts."""

    def __init__(self, ref: str, kwargs: dict[str, Any]):
        func = import_callable(ref, f"reward_fn={ref!r}")
        self.ref, self.func, self.kwargs = ref, func, dict(kwargs)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        out = list(self.func(prompts, responses, **self.kwargs))
        if len(out) != len(responses):
            raise ValueError(f"reward_fn {self.ref} returned {len(out)} scores for {len(responses)} responses.")
        scores = [float(x) for x in out]
        if not all(math.isfinite(x) for x in scores):
            raise ValueError(f"reward_fn {self.ref} returned a non-finite score: {scores[:8]}.")
        return scores
