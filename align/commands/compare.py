"""``align compare CHECKPOINT ... [--judge J] [options]``: arguments in, exit code out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align.commands.console import emit
from align.config import ConfigError
from align.eval.compare import CompareConfig, run_compare


def main(args: Any) -> int:
    cfg = CompareConfig(
        checkpoints=list(args.checkpoints),
        judge=args.judge,
        prompts=args.prompts or CompareConfig.prompts,
        output=args.output or "runs/compare",
    )
    keys = ("max_prompts", "max_new_tokens", "temperature", "pairs", "reference", "seed", "kl_samples", "dtype")
    for key in (*keys, "bon_reward_model", "batch_size"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    try:
        report = run_compare(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for w in report["warnings"]:
        emit(f"WARNING: {w}")
    emit(f"report: {Path(cfg.output) / 'report.md'}")
    return 0
