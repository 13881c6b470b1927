"""``align pipeline RECIPE [key=value ...] [--from S | --only S] [--dry-run]``: arguments in, exit code out."""

from __future__ import annotations

from typing import Any

import yaml

from align.commands.console import emit
from align.config import ConfigError, redact, to_plain
from align.pipeline import build_pipeline, run_pipeline


def main(args: Any) -> int:
    if not args.recipe:
        raise ConfigError("give a pipeline recipe, e.g. align pipeline recipes/quickstart.yaml")
    if args.from_stage and args.only:
        raise ConfigError("use --from or --only, not both.")
    pipe = build_pipeline(args.recipe, args.overrides)
    if args.dry_run:
        plan = {
            "name": pipe.name,
            "root": pipe.root,
            "stages": pipe.stages,
            "recipes": {s: redact(to_plain(r)) for s, r in pipe.recipes.items()},
            "data": pipe.data,
            "compare": pipe.compare,
        }
        emit(yaml.safe_dump(plan, sort_keys=False).rstrip("\n"))
        return 0
    run_pipeline(pipe, from_stage=args.from_stage, only=args.only)
    return 0
