"""The ``align`` command. Parses arguments and calls library functions; no logic of its own.

Works the same as ``align <cmd>``, ``python -m align <cmd>`` and ``accelerate launch -m align <cmd>``.
Errors a user can fix (a wrong recipe key, a bad data row, a template, a missing model, a diverging learning rate,
an unreadable file, a wandb key wandb rejects) print one paragraph and exit with code 2, without a Python
traceback; ``ALIGN_DEBUG=1`` shows it. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import typing

import yaml

from align import models
from align.commands import console
from align.commands import data as data_command
from align.commands.console import emit, emit_obj
from align.config import list_keys, load_recipe, mask_secret_overrides, redact, to_plain
from align.errors import UserError
from align.stages import registry

# `align <stage>` commands: name -> (module, help), read from the stage registry (the one list of stages).
STAGES = {name: (s.module, s.help) for name, s in registry.COMMANDS.items()}


def explain_error(command: str, exc: BaseException) -> tuple[str, int] | None:
    """The one paragraph (and exit code) for an error the user can fix, or None for an internal error.

    ``UserError`` (align's own: recipe, data, template, model, divergence, ...) is printed as its message. A few
    failures raised by libraries are still the user's to fix and are explained here: a file that cannot be read,
    a hub model that is not cached while offline, and an experiment tracker (wandb) that rejects its key or cannot
    reach its server."""
    prefix = f"align {command}: error:"
    if isinstance(exc, UserError):
        return f"{prefix} {_one_paragraph(str(exc))}", 2
    mod = type(exc).__module__ or ""
    if mod.split(".")[0] == "wandb":
        return (
            f"{prefix} wandb failed ({type(exc).__name__}: {_one_paragraph(str(exc))}). Check WANDB_API_KEY (or "
            "`wandb login`) and the network, or run without it: run.report_to=[none] or WANDB_MODE=offline.",
            2,
        )
    if isinstance(exc, PermissionError | IsADirectoryError | FileNotFoundError) and exc.filename:
        return (
            f"{prefix} cannot read {exc.filename} ({exc.strerror}). Check that the path is right and readable by "
            "this user.",
            2,
        )
    if isinstance(exc, OSError) and any(
        s in str(exc) for s in ("huggingface.co", "offline mode", "HF_HUB_OFFLINE", "is not a local folder")
    ):
        return (
            f"{prefix} a model or dataset could not be loaded from the Hugging Face hub or its cache "
            f"({_one_paragraph(str(exc))[:400]}). Without network access use a local directory or a builtin: model "
            "(`align models list`), or download it once where the hub is reachable.",
            2,
        )
    return None


def _close_progress_bars() -> None:
    """End a training progress bar's line, so the error paragraph starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", None) or []):
        with contextlib.suppress(Exception):
            bar.close()


def _one_paragraph(text: str) -> str:
    """Blank lines removed, so a message stays one paragraph (indented examples keep their lines)."""
    return "\n".join(line for line in text.strip().splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="align",
        description="Alignment post-training: check preference data, train SFT / reward model / DPO / PPO with "
        "LoRA, compare checkpoints. Every stage takes a YAML recipe plus key=value overrides.",
        epilog="Example: accelerate launch -m align dpo recipes/smollm2-135m/dpo.yaml training.beta=0.2",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    for stage, (_, help_) in STAGES.items():
        sp = sub.add_parser(stage, help=help_, description=f"{help_}. Run a {stage} recipe.")
        _recipe_args(sp)

    sp = sub.add_parser("pipeline", help="run a recipe's stages in order (data, SFT, RM, DPO/PPO, compare)")
    _recipe_args(sp)
    sp.add_argument("--from", dest="from_stage", help="re-run from this stage on")
    sp.add_argument("--only", help="run only this stage")

    _add_data_parser(sub)
    _add_compare_parser(sub)
    _add_models_parser(sub)
    return p


def _add_data_parser(sub: typing.Any) -> None:
    sp = sub.add_parser("data", help="inspect, validate, convert, split, card and agreement for preference data")
    dsub = sp.add_subparsers(dest="data_command", metavar="ACTION")
    for name, help_ in (
        ("inspect", "show detected format, counts and a few records"),
        ("validate", "validate rows and count drops by reason (exit 1 on errors)"),
        ("convert", "write canonical preference records as JSONL"),
        ("split", "split by prompt hash into train/eval JSONL"),
        ("card", "write data_cards/<name>.md and .json"),
        ("agreement", "annotator agreement: kappa, Fleiss, Krippendorff, per-annotator reliability"),
    ):
        dp = dsub.add_parser(name, help=help_)
        dp.add_argument("source", help="file, folder, builtin:<name>, hub id, or a recipe .yaml (its data section)")
        dp.add_argument("--format", default="auto", help="auto, hh-rlhf, pcr, conversational, implicit-prompt, ...")
        dp.add_argument("--json", action="store_true", help="machine-readable output")
        dp.add_argument("-o", "--output", help="output file or directory")
        dp.add_argument("--name", help="card name (card; default: the source's or recipe's name)")
        dp.add_argument(
            "--eval-fraction", type=float, default=None, help="eval share of prompts (default: the recipe's, or 0.1)"
        )
        dp.add_argument(
            "--max-drop-fraction",
            type=float,
            default=None,
            help="largest share of rows that may be dropped (default: the recipe's, or 0.05); validate exits 1 above "
            "it, convert and split refuse to write when it is given",
        )
        dp.add_argument("--sft", action="store_true", help="treat the source as SFT data (default: detected)")
        if name == "agreement":
            dp.add_argument("--model", help="a reward model run/dir: compare its preferences with the annotators")
            dp.add_argument("--all", action="store_true", help="with --model: every labelled pair, not the eval split")
        dp.add_argument("--seed", type=int, default=None, help="split seed and bootstrap seed (default: recipe's, 0)")
        dp.add_argument(
            "--tokenizer", help="card: model reference whose tokenizer measures lengths (default: the tiny tokenizer)"
        )
        dp.add_argument(
            "--agreement-metric",
            default=None,
            help="headline statistic: fleiss_kappa, krippendorff_alpha, cohen_kappa_mean, percent_agreement",
        )
        dp.add_argument(
            "--agreement-bootstrap",
            type=int,
            default=None,
            help="bootstrap resamples for 95%% intervals, 0 for none (default: the recipe's, or 1000)",
        )
        dp.add_argument(
            "--agreement-unreliable-below",
            type=float,
            default=None,
            help="flag annotators whose leave-one-out kappa is below this (default: recipe's drop_annotators_below, "
            "or 0.2)",
        )


# Flags whose help says more than the field's own help (the rest of CompareConfig's fields become flags as they are).
_COMPARE_HELP = {
    "judge": "reward model run/dir, or module:function (prompts, responses) -> rewards",
    "reference": "checkpoint name the others are compared with (default: the first)",
    "dtype": "float32 (default) or bfloat16 for generation and scoring",
}
_NOT_FLAGS = ("checkpoints", "output", "model")  # positional, -o, and the pipeline's model section


def _compare_flag_type(annotation: str) -> dict[str, typing.Any]:
    """argparse settings for one CompareConfig field from its (string) annotation."""
    if annotation.startswith("bool"):
        return {"action": argparse.BooleanOptionalAction}
    if annotation.startswith("list["):
        return {"nargs": "+"}
    for name, kind in (("int", int), ("float", float)):
        if annotation.split(" |")[0] == name:
            return {"type": kind}
    return {}


def _add_compare_parser(sub: typing.Any) -> None:
    from align.eval.compare_config import CompareConfig  # no torch: the settings live apart from the comparison

    sp = sub.add_parser("compare", help="generate with checkpoints on held-out prompts and compare them with a judge")
    sp.add_argument(
        "checkpoints", nargs="+", help="run/stage directories, model references, or bon:<run>@<n> (best of n)"
    )
    # Every setting of CompareConfig is a flag (--kl-max-prompts for kl_max_prompts, ...), so the command line
    # reaches what a pipeline recipe's compare section does; unset flags keep the config's defaults.
    for f in dataclasses.fields(CompareConfig):
        if f.name in _NOT_FLAGS:
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        text = _COMPARE_HELP.get(f.name, f.metadata.get("help", "").rstrip("."))
        if default is not None and "default" not in text:
            text += f" (default {default})"
        sp.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, help=text, **_compare_flag_type(str(f.type)))
    sp.add_argument("-o", "--output", help="report directory (default runs/compare)")


def _add_models_parser(sub: typing.Any) -> None:
    sp = sub.add_parser("models", help="list and fetch built-in models")
    msub = sp.add_subparsers(dest="models_command", metavar="ACTION")
    ml = msub.add_parser("list", help="built-in models and whether they are cached")
    ml.add_argument("--json", action="store_true")
    mf = msub.add_parser("fetch", help="download and convert a built-in model into the cache (no-op when cached)")
    mf.add_argument("name", help="e.g. smollm2-135m-instruct")
    mf.add_argument("--force", action="store_true", help="rebuild even when the cache is complete")


def _recipe_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/)")
    sp.add_argument("overrides", nargs="*", help="key=value overrides, dotted for nested keys (lora.r=8)")
    sp.add_argument("--dry-run", action="store_true", help="print the fully resolved config and exit")
    sp.add_argument("--list-keys", metavar="SECTION", help="list a section's keys with types and help, then exit")


# Results (--dry-run YAML, --json, tables) go to the real stdout; everything else a command prints, ours or a
# library's, goes to stderr: see align.commands.console (``emit`` is re-exported here for callers of align.cli).
__all__ = ["STAGES", "build_parser", "emit", "explain_error", "main", "run_models", "run_stage"]


def run_stage(stage: str, args: argparse.Namespace) -> int:
    module = registry.module_of(stage)
    recipe_cls = module.Recipe
    if args.list_keys:
        hints = typing.get_type_hints(recipe_cls)
        if args.list_keys not in hints:
            print(
                f"No section {args.list_keys!r}; sections: {', '.join(f.name for f in dataclasses.fields(recipe_cls))}"
            )
            return 2
        for name, tp, help_ in list_keys(hints[args.list_keys]):
            emit(f"{args.list_keys}.{name} ({tp}): {help_}")
        return 0
    recipe = load_recipe(recipe_cls, args.recipe, args.overrides)
    if args.dry_run:
        emit(yaml.safe_dump(redact(to_plain(recipe)), sort_keys=False).rstrip("\n"))
        return 0
    out = module.run(recipe)
    if out is not None and _is_main_process():  # one "done" line per run, not one per process
        print(f"[align] {stage} done: {out}")
    return 0


def _is_main_process() -> bool:
    """Rank 0 of an ``accelerate launch`` (read from the launcher's environment; a plain run is rank 0)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def run_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        rows = models.builtin_status()
        if args.json:
            emit_obj(rows, True)
        else:
            for r in rows:
                emit(
                    f"{r['name']:34} {'cached' if r['cached'] else 'not cached':11} {r['path']}\n    {r['description']}"
                )
        return 0
    if args.models_command == "fetch":
        t0 = time.time()
        path = models.fetch_builtin(args.name, force=args.force)
        print(f"[align] {args.name}: {path} ({time.time() - t0:.1f} s)")
        return 0
    print("usage: align models {list,fetch NAME}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    console.RESULT_OUT = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return _main(argv)
    finally:
        console.RESULT_OUT = None  # outside a command, results go to whatever stdout is then (not a stale, closed one)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    # Overrides may follow options (`align dpo r.yaml --dry-run lora.r=8`): argparse leaves those key=value words
    # over, and they join the overrides; anything else left over is a usage error.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    # wandb keeps a record of the command line (sys.argv) with every run it starts; a secret given as an override
    # (training.hub_token=...) must not be in it. The arguments are parsed: the clear values are needed no more.
    sys.argv[1:] = mask_secret_overrides(sys.argv[1:])
    if not args.command:
        parser.print_help(file=console.RESULT_OUT or sys.stdout)
        return 0
    debug = bool(os.environ.get("ALIGN_DEBUG"))
    try:
        if args.command in STAGES:
            if not args.recipe and not args.list_keys:
                print(
                    f"align {args.command}: give a recipe, e.g. align {args.command} recipes/tiny/{args.command}.yaml",
                    file=sys.stderr,
                )
                return 2
            return run_stage(args.command, args)
        if args.command == "models":
            return run_models(args)
        # pipeline and compare load torch and transformers on import (via the stages and the scorer), which
        # `align --help`, `align data` and `align models` should not wait for: imported when chosen.
        if args.command == "pipeline":
            from align.commands import pipeline as pipeline_command

            return pipeline_command.main(args)
        if args.command == "data":
            return data_command.main(args)
        if args.command == "compare":
            from align.commands import compare as compare_command

            return compare_command.main(args)
    except KeyboardInterrupt:
        print(f"\nalign {args.command}: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except Exception as e:
        explained = explain_error(args.command, e)
        if explained is None or debug:
            raise  # an internal error (or ALIGN_DEBUG=1): the traceback is what a bug report needs
        message, code = explained
        _close_progress_bars()
        print(message, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
