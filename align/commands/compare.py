"""``align compare CHECKPOINT ... [--judge J] [options]``: arguments in, exit code out."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from align.commands.console import emit
from align.config import ConfigError
from align.eval.compare import CompareConfig, run_compare


def main(args: Any) -> int:
    cfg = CompareConfig(checkpoints=list(args.checkpoints), output=args.output or "runs/compare")
    for f in dataclasses.fields(CompareConfig):  # every flag the user gave (the parser has one per field)
        value = getattr(args, f.name, None)
        if value is not None and f.name not in ("checkpoints", "output"):
            setattr(cfg, f.name, value)
    try:
        report = run_compare(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for w in report["warnings"]:
        emit(f"WARNING: {w}")
    emit(f"report: {Path(cfg.output) / 'report.md'}")
    return 0
