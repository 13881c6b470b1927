"""What the SFT, reward-model and DPO stages share around TRL's trainers.

- the run directory layout: ``<root>/<name>/<stage>/`` with ``checkpoints/`` (TRL/HF checkpoints, resumable),
  ``model/`` (the final adapter or model with tokenizer and template), ``config.yaml``, ``metrics.jsonl``,
  ``manifest.json``;
- resume: the last *complete* checkpoint (its ``trainer_state.json`` is written last by the HF Trainer, so a
  checkpoint without it, or without optimizer/scheduler/RNG state, was cut off and is skipped with a warning);
- guards as a trainer mixin and callback: a non-finite loss or gradient skips that optimizer step (counted) and
  aborts after ``run.max_nonfinite_steps`` in a row (docs/faults.md #14); trainable parameters that got no gradient after
  the first step stop the run naming them (docs/faults.md #13);
- ``metrics.jsonl`` from the trainer's logs.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from align.config import ConfigError, config_hash, redact, stage_dir, to_plain
from align.data.prepare import tokenize_records
from align.data.sources import list_data_files, resolve_builtin
from align.data.validate import check_drop_fraction
from align.errors import NoGradientError, NonFiniteError  # noqa: F401  (re-exported: importable here as before)
from align.modelcard import write_model_card
from align.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
from align.runs import merge_chain, merged_chain_of, read_stage_manifest
from align.stages import registry
from align.templates import Encoder, apply_template_choice
from align.tracking import RunRecorder, process_state, read_manifest, setup_trackers

CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
# Training settings that do not change what a run computes (safe to change between an interruption and a resume).
BOOKKEEPING_KEYS = {
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "disable_tqdm",
    "report_to",
    "output_dir",
    "logging_dir",
    "run_name",
    "dataloader_num_workers",
    "eval_steps",
    "push_to_hub",
    "hub_token",  # a credential, not a setting: moved out of the arguments (scrub_secrets)
}


# Written last into a checkpoint, after every other file of it was fsynced: lists each file with its size. HF/TRL
# checkpoints get it from CheckpointMarkerCallback; PPO's own checkpoints write the same kind of list as state.json.
CHECKPOINT_MARKER = "align-checkpoint.json"
PPO_STATE_FILE = "state.json"


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (header unreadable, or data shorter/longer than the header
    says), or None. Reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes, no header)"
            n = int.from_bytes(head, "little")
            if n <= 0 or 8 + n > size:
                return f"{path.name} is truncated (header of {n} bytes, file of {size})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name} has an unreadable header ({type(exc).__name__})"
    if not isinstance(header, dict):
        return f"{path.name} has an unreadable header"
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        return f"{path.name} is truncated ({size} bytes, its header describes {8 + n + max(ends, default=0)})"
    return None


def checkpoint_problems(path: Path) -> list[str]:
    """What makes ``path`` unusable as a checkpoint ([] = complete). One check for every stage:

    - a marker written last (``align-checkpoint.json``, or PPO's ``state.json``) lists every file with its size: each
      must be there at that size. Checkpoints written before the marker existed (older align, or a run cut off
      between the trainer's save and the marker) must instead hold the files an HF Trainer checkpoint needs to
      resume exactly: trainer_state.json, optimizer.pt, scheduler.pt, the weights and the RNG state;
    - every JSON file parses and every safetensors file's header parses and matches the file's length."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} is not a directory"]
    problems: list[str] = []
    marker = next((path / m for m in (CHECKPOINT_MARKER, PPO_STATE_FILE) if (path / m).is_file()), None)
    if marker is not None:
        try:
            listed = json.loads(marker.read_text())["files"]
            if not isinstance(listed, dict):
                raise TypeError
        except (OSError, ValueError, KeyError, TypeError):
            return [f"{marker.name} is unreadable"]
        for name, size in listed.items():
            f = path / name
            if not f.is_file():
                problems.append(f"{name} is missing")
            elif f.stat().st_size != size:
                problems.append(f"{name} has {f.stat().st_size} bytes, {size} were written")
    else:
        problems += [f"{f} is missing" for f in CHECKPOINT_FILES if not (path / f).is_file()]
        if not any((path / f).is_file() for f in WEIGHT_FILES):
            problems.append(f"no weights ({' or '.join(WEIGHT_FILES[:2])})")
        if not any(path.glob("rng_state*.pth")):
            problems.append("rng_state.pth is missing")
    for f in sorted(path.rglob("*.json")):
        if f.is_file():
            try:
                json.loads(f.read_bytes())
            except (OSError, ValueError):
                problems.append(f"{f.relative_to(path)} does not parse as JSON")
    for f in sorted(path.rglob("*.safetensors")):
        if f.is_file() and (why := safetensors_problem(f)):
            problems.append(why)
    return problems


def is_complete_checkpoint(path: Path) -> bool:
    return not checkpoint_problems(path)


def write_checkpoint_marker(path: Path, carry: dict[str, Any] | None = None) -> None:
    """fsync every file of the checkpoint, then write the marker listing them (itself fsynced): a kill before the
    marker's rename leaves a checkpoint without it, which the resume search treats as not verified."""
    import os

    files: dict[str, int] = {}
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.name != CHECKPOINT_MARKER:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[str(f.relative_to(path))] = f.stat().st_size
    tmp = path / f".{CHECKPOINT_MARKER}.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps({"files": files, **({"carry": carry} if carry else {})}, indent=2))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path / CHECKPOINT_MARKER)


class CheckpointMarkerCallback(TrainerCallback):
    """Marks each HF Trainer checkpoint complete once the trainer (on every process) has finished writing it, and
    carries what the HF Trainer does not keep across a resume, so a resumed run's manifest equals an uninterrupted
    one's: the sum of the training losses so far (``train_loss`` is averaged over all steps, not only the resumed
    ones) and TRL's running token count (``num_tokens`` continues instead of restarting at zero)."""

    def __init__(self, trainer: Any = None, resume_from: str | None = None):
        self.trainer = trainer
        self.carried = {"loss_sum": 0.0, "tokens": 0, "step": 0}
        if resume_from:
            try:
                marker = json.loads((Path(resume_from) / CHECKPOINT_MARKER).read_text())
                self.carried.update(marker.get("carry") or {})
            except (OSError, ValueError):
                pass  # a checkpoint from before the marker: nothing carried (as before)

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is not None and hasattr(self.trainer, "_total_train_tokens"):
            self.trainer._total_train_tokens += int(self.carried["tokens"])

    def _carry_now(self, state) -> dict[str, Any]:
        tr = self.trainer
        run_sum = float(getattr(tr, "_total_loss_scalar", 0.0) or 0.0)
        pending = getattr(tr, "_tr_loss", None)
        if isinstance(pending, torch.Tensor):
            run_sum += float(pending.item())
        return {
            "loss_sum": float(self.carried["loss_sum"]) + run_sum,
            "tokens": int(getattr(tr, "_total_train_tokens", 0) or 0),
            "step": state.global_step,
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer's train_loss averages the losses of this process's steps only; add the carried ones.
        steps_before = int(self.carried["step"])
        if logs and "train_loss" in logs and steps_before and state.global_step:
            this_run = logs["train_loss"] * (state.global_step - steps_before)
            logs["train_loss"] = (float(self.carried["loss_sum"]) + this_run) / state.global_step

    def on_save(self, args, state, control, **kwargs):
        process_state().wait_for_everyone()  # other processes write their own rng_state_<rank>.pth
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_checkpoint_marker(ckpt, carry=self._carry_now(state) if self.trainer is not None else None)
        process_state().wait_for_everyone()


def require_complete_checkpoint(path: Path, what: str) -> None:
    """An explicitly named checkpoint must pass the same check as the resume search; say what is wrong with it."""
    problems = checkpoint_problems(path)
    if problems:
        raise ConfigError(
            f"{what} is not a complete checkpoint: {'; '.join(problems[:6])}. Resuming from it would restart the "
            "optimizer or RNG and drift from the interrupted run. Name another checkpoint, or use run.resume=auto "
            "(the newest complete one)."
        )


def find_resume_checkpoint(ckpt_root: Path, log=print, is_complete=None) -> str | None:
    """The newest complete ``checkpoint-N`` under ``ckpt_root``; incomplete newer ones are reported and skipped.
    ``is_complete`` decides completeness (default, and what every stage uses: :func:`checkpoint_problems`)."""
    is_complete = is_complete or is_complete_checkpoint
    if not ckpt_root.is_dir():
        return None
    ckpts = sorted(
        (p for p in ckpt_root.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for p in ckpts:
        if is_complete(p):
            return str(p)
        log(f"[align] warning: {p} is incomplete (interrupted while saving?); falling back to an earlier checkpoint")
    return None


def trim_jsonl(path: Path, last: int, key: str = "step") -> None:
    """Drop the rows of a JSONL log whose ``key`` is past ``last`` (rows without it stay): an interrupted attempt
    logged them after the checkpoint a resume starts from, and the resumed run logs those steps again. Without this
    a resumed run's ``metrics.jsonl`` holds the redone steps twice (issue 15, kill -9 during or after a save)."""
    from align.tracking import atomic_write_text

    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in rows if int(json.loads(line).get(key, 0) or 0) <= last]
    if len(kept) != len(rows):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step an HF Trainer checkpoint was written at (its trainer_state.json, else its name)."""
    try:
        return int(json.loads((Path(path) / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        tail = Path(path).name.split("-")[-1]
        return int(tail) if tail.isdigit() else 0


def data_file_hashes(data_cfg: Any) -> dict[str, str]:
    """sha256 of every local or built-in data file a data section reads (hub sources: their id and revision), so
    a stage re-runs when its data changed even though the recipe did not."""
    import hashlib

    out: dict[str, str] = {}
    for spec in [*getattr(data_cfg, "sources", []), *getattr(data_cfg, "eval_sources", [])]:
        path = spec.path
        if spec.plugin:
            out[f"plugin:{spec.plugin}"] = spec.plugin
            continue
        try:
            files = (
                [Path(str(resolve_builtin(path.removeprefix("builtin:"))))]
                if path.startswith("builtin:")
                else (
                    list_data_files(Path(path))
                    if Path(path).is_dir()
                    else [Path(path)]
                    if Path(path).is_file()
                    else []
                )
            )
        except Exception:  # a source that cannot be resolved fails later with the data layer's own message
            files = []
        if not files:
            out[path] = f"remote:{spec.revision}"
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        ann = (spec.annotations or {}).get("path") if isinstance(spec.annotations, dict) else None
        if ann and Path(ann).is_file():
            out[ann] = hashlib.sha256(Path(ann).read_bytes()).hexdigest()[:16]
    return out


def upstream_identity(path: str | None) -> dict[str, Any] | None:
    """What a stage depends on upstream (init_from, reward_model): the producing stage's config hash and end time,
    so re-running SFT makes the stages built on it run again."""
    if not path:
        return None
    m = read_stage_manifest(Path(path) / "model" if (Path(path) / "model").is_dir() else path)
    if not m:
        return {"path": str(path)}
    return {"path": str(path), "config_hash": m.get("config_hash"), "ended_at": m.get("ended_at")}


def semantic_hash(recipe: Any) -> str:
    plain = to_plain(recipe)
    stage = registry.BY_NAME.get(getattr(recipe, "STAGE", ""))
    for section in stage.hash_skips_bookkeeping_in if stage else ("training",):
        if isinstance(plain.get(section), dict):
            plain[section] = {k: v for k, v in plain[section].items() if k not in BOOKKEEPING_KEYS}
    plain["_inputs"] = {
        "data": data_file_hashes(recipe.data) if getattr(recipe, "data", None) is not None else {},
        "init_from": upstream_identity(getattr(recipe, "init_from", None)),
        "reward_model": upstream_identity(getattr(recipe, "reward_model", None)),
    }
    return config_hash(plain)


@dataclass
class StagePlan:
    """What to do in a stage directory: skip (already complete), resume from a checkpoint, or start."""

    out_dir: Path
    action: str  # "skip" | "resume" | "start"
    checkpoint: str | None = None
    config_hash: str = ""
    notes: list[str] = field(default_factory=list)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): obj}


def changed_settings(out: Path, recipe: Any, limit: int = 6) -> str:
    """Which settings differ between the stored ``config.yaml`` and ``recipe``, e.g.
    ``training.learning_rate: 0.001 -> 0.01``; or, when the settings agree, that an input (data file, upstream
    stage) changed. Bookkeeping keys and the run section are left out, as they are from the hash."""
    import yaml

    try:
        old = yaml.safe_load((out / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict):
        return "its config.yaml is missing, so the changed setting cannot be named"
    new = redact(to_plain(recipe))

    def keep(key: str) -> bool:
        return not key.startswith("run.") and key.split(".")[-1] not in BOOKKEEPING_KEYS

    a, b = _flatten({k: v for k, v in old.items()}), _flatten(new)
    diffs = [
        f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}"
        for k in sorted(set(a) | set(b))
        if keep(k) and a.get(k) != b.get(k)
    ]
    if not diffs:
        return "same settings, but a data file or an upstream stage (init_from, reward_model) changed since"
    more = f" and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "changed: " + "; ".join(diffs[:limit]) + more


def move_aside(out: Path, log=print) -> str | None:
    """``run.resume=never`` on a directory an earlier attempt left: start clean, keeping the old one as
    ``<stage>.prev`` (replacing an older ``.prev``), so its metrics.jsonl is not appended to."""
    import shutil

    state = process_state()
    prev = out.with_name(out.name + ".prev")
    if state.is_main_process:
        if prev.exists():
            shutil.rmtree(prev)
        out.rename(prev)
        log(f"[align] run.resume=never: moved the earlier attempt in {out} aside to {prev}")
    state.wait_for_everyone()
    return str(prev)


def plan_stage(recipe: Any, log=print) -> StagePlan:
    out = stage_dir(recipe)
    h = semantic_hash(recipe)
    manifest = read_manifest(out)
    mode = recipe.run.resume
    if mode not in ("auto", "never") and not Path(mode).is_dir():
        raise ConfigError(f"run.resume={mode!r}: use auto, never, or an existing checkpoint directory.")
    if manifest and manifest.get("config_hash") not in (None, h):
        if mode == "auto":
            raise ConfigError(
                f"{out} was produced by a different recipe ({changed_settings(out, recipe)}). "
                "Resuming would mix two runs: use a new run.name, or delete that directory, or set run.resume=never."
            )
    if mode == "never":
        if manifest and manifest.get("status") == "complete":
            raise ConfigError(
                f"{out} already holds a complete {recipe.STAGE} run; use a new run.name or "
                "run.resume=auto to reuse it."
            )
        notes = [move_aside(out, log)] if out.is_dir() and any(out.iterdir()) else []
        return StagePlan(out, "start", config_hash=h, notes=[n for n in notes if n])
    if manifest and manifest.get("status") == "complete" and (out / "model").is_dir():
        return StagePlan(out, "skip", config_hash=h)
    if Path(mode).is_dir():
        require_complete_checkpoint(Path(mode), f"run.resume={mode!r}")
    ckpt = mode if Path(mode).is_dir() else find_resume_checkpoint(out / "checkpoints", log=log)
    return StagePlan(out, "resume" if ckpt else "start", checkpoint=ckpt, config_hash=h)


class GuardCallback(TrainerCallback):
    """Skips optimizer steps whose loss or gradients are not finite and checks that trainable parameters learn."""

    def __init__(self, max_nonfinite: int, recorder: RunRecorder | None = None):
        self.max_nonfinite = max_nonfinite
        self.recorder = recorder
        self.pending_nonfinite_loss = False
        self.skipped = 0
        self.in_a_row = 0
        self.checked_grads = False

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not self.checked_grads:
            missing = [n for n, p in params if p.grad is None]
            if missing and not self.pending_nonfinite_loss:
                raise NoGradientError(
                    f"{len(missing)} trainable parameter(s) got no gradient after the first step, e.g. "
                    f"{missing[:5]}. Check lora.target_modules (they must name modules the forward pass uses) and "
                    "that gradient checkpointing is compatible (enable input grads)."
                )
            self.checked_grads = True
        bad_grad = any(p.grad is not None and not torch.isfinite(p.grad).all() for _, p in params)
        if self.pending_nonfinite_loss or bad_grad:
            for _, p in params:
                p.grad = None  # AdamW skips parameters without a gradient: this step changes nothing
            self.skipped += 1
            self.in_a_row += 1
            if self.recorder:
                self.recorder.log(
                    {"nonfinite_step_skipped": 1, "nonfinite_skipped_total": self.skipped}, step=state.global_step
                )
            if self.in_a_row >= self.max_nonfinite:
                raise NonFiniteError(
                    f"{self.in_a_row} optimizer steps in a row had a non-finite loss or gradient (step "
                    f"{state.global_step}). The last complete checkpoint is kept. Lower the learning rate, use bf16 "
                    "instead of fp16, or check the data for extreme lengths."
                )
        else:
            self.in_a_row = 0
        self.pending_nonfinite_loss = False


class GuardedTrainerMixin:
    """Mix into a TRL trainer: a non-finite loss does not backpropagate; the guard callback skips the step."""

    align_guard: GuardCallback | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        loss = out[0] if return_outputs else out
        if model.training and not torch.isfinite(loss.detach()).all():
            if self.align_guard is not None:
                self.align_guard.pending_nonfinite_loss = True
            # A zero that still depends on the trainable weights: backward runs and yields zero gradients, which
            # the guard then drops, so nothing NaN reaches the optimizer.
            zero = sum((p.sum() * 0.0) for p in model.parameters() if p.requires_grad)
            return (zero, out[1]) if return_outputs else zero
        return out


class MetricsCallback(TrainerCallback):
    """Every trainer log line goes to ``metrics.jsonl``; the last values become the manifest's final metrics."""

    def __init__(self, recorder: RunRecorder):
        self.recorder = recorder
        self.last: dict[str, Any] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            self.recorder.log(logs, step=state.global_step)
            self.last.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})


def save_final(trainer: Any, out_dir: Path, tokenizer: Any, extra_files: dict[str, str] | None = None) -> Path:
    """Save the final adapter/model with its tokenizer (and chat template) to ``<stage>/model``."""
    model_dir = out_dir / "model"
    trainer.save_model(str(model_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(model_dir))
        for name, text in (extra_files or {}).items():
            (model_dir / name).write_text(text)
    trainer.accelerator.wait_for_everyone()
    return model_dir


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))


def quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated.*")
    warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated.*")


# --------------------------------------------------------------------------------------------------------------
# The stage context: one object carrying a stage from recipe to manifest


def require_data(recipe: Any) -> None:
    if recipe.data is None:
        raise ConfigError(
            f"The {recipe.STAGE} recipe has no data section. Add e.g.\n  data:\n    sources:\n"
            "      - path: builtin:bundled"
        )
    if getattr(recipe, "training", "n/a") is None:
        raise ConfigError("The recipe has no training section (internal: load recipes with align.config.load_recipe).")


def to_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list(rows)


def guarded(trainer_cls: type) -> type:
    """``trainer_cls`` with the non-finite-loss guard mixed in."""
    return type(f"Guarded{trainer_cls.__name__}", (GuardedTrainerMixin, trainer_cls), {})


def model_kwargs(section: Any, full_init: bool = False) -> dict[str, Any]:
    """Every ``model.*`` loading field, for ``load_causal_lm`` / ``load_sequence_classifier``: dtype, revision (of
    the recipe's hub model; a local ``init_from`` directory has none), trust_remote_code, attn_implementation."""
    return {
        "dtype": section.dtype,
        "revision": None if full_init else section.revision,
        "trust_remote_code": section.trust_remote_code,
        "attn_implementation": section.attn_implementation,
    }


def stage_tokenizer(recipe: Any, init_from: Path | None, model_path: str) -> tuple[Any, str]:
    """The tokenizer a stage trains with (the ``init_from`` run's own when it saved one, else the base model's) and
    the chat template chosen for it; every training stage, PPO included, starts this way."""
    src = str(init_from) if init_from and (init_from / "tokenizer_config.json").exists() else model_path
    tokenizer = load_tokenizer(src, revision=recipe.model.revision, trust_remote_code=recipe.model.trust_remote_code)
    return tokenizer, apply_template_choice(tokenizer, recipe.template.chat_template)


def base_of(recipe: Any, init_from: Path | None, log=print) -> tuple[str, str]:
    """``(reference recorded as weights.base, local path to load)`` of the model a stage trains from: a full model
    directory given as ``init_from`` (not an adapter) is the base itself; otherwise the recipe's model."""
    if init_from is not None and not (init_from / "adapter_config.json").is_file():
        return str(init_from), str(init_from)
    return recipe.model.name_or_path, resolve_model_path(recipe.model.name_or_path, log=log)


def resolve_init_from(path: str | None) -> Path | None:
    """A stage directory (uses its ``model/``) or an adapter/model directory."""
    if not path:
        return None
    p = Path(path)
    if (p / "model").is_dir():
        p = p / "model"
    if not p.is_dir():
        raise ConfigError(
            f"init_from={path!r} does not exist; point it at an earlier stage's directory "
            "(runs/<name>/sft) or an adapter directory."
        )
    return p


def drop_summary(stage: str, drops: dict[str, Any]) -> str:
    """One console line with the data's drop counts (the manifest has the same numbers)."""
    dropped = {k: v for k, v in (drops.get("dropped") or {}).items() if v}
    why = ", ".join(f"{k} {v}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "none"
    return f"[align] {stage} data: kept {drops.get('kept')} of {drops.get('total')} rows; dropped: {why}"


def scrub_secrets(args: Any) -> None:
    """Take secrets given as recipe settings (``training.hub_token=...``) out of the training arguments: TRL pickles
    those into ``training_args.bin`` in the model and every checkpoint, and the Trainer hands them to wandb as the
    run's config. The hub token moves to ``HF_TOKEN`` in this process's environment, where huggingface_hub reads it
    (a push to the hub still works); nothing else keeps it. Secret-looking keys inside mapping settings
    (``training.model_init_kwargs={token: ...}``) are redacted: align builds the models itself, so TRL never reads
    those mappings' credentials."""
    import os

    token = getattr(args, "hub_token", None)
    if isinstance(token, str) and token:
        os.environ["HF_TOKEN"] = token
        args.hub_token = None
    for name, value in list(vars(args).items()):
        if isinstance(value, dict) and redact(value) != value:
            setattr(args, name, redact(value))


class StageContext:
    def __init__(self, recipe: Any, log=print):
        quiet_known_warnings()
        import datasets

        datasets.disable_progress_bars()  # per-map bars for a few hundred rows are noise; training keeps its bar
        self.recipe = recipe
        self.log = log
        self.state = process_state()
        self.is_main = self.state.is_main_process
        self.plan = plan_stage(recipe, log=log if self.is_main else (lambda *a: None))
        self.out_dir = self.plan.out_dir
        self.init_from = resolve_init_from(getattr(recipe, "init_from", None))
        # the model the run trains from: the recipe's, or a full model directory given as init_from
        self.base_ref, self.model_path = base_of(recipe, self.init_from, log)
        self.tokenizer, self.chat_template = stage_tokenizer(recipe, self.init_from, self.model_path)
        if recipe.training is not None:
            recipe.training.report_to = setup_trackers(recipe.run.report_to, recipe.run.wandb_project)
            scrub_secrets(recipe.training)
        self.weights: dict[str, Any] = {
            "base": recipe.model.name_or_path,
            "merged": [],
            "adapter": str(self.out_dir / "model"),
        }
        self.recorder: RunRecorder | None = None
        self.metrics_cb: MetricsCallback | None = None
        self.guard: GuardCallback | None = None
        self.trainer = None

    # -- data ---------------------------------------------------------------------------------------------------

    def encoder(self, max_length: int | None):
        return Encoder(self.tokenizer, max_length=max_length)

    def tokenize(self, prepared: Any, records: list[Any], encode) -> list[dict[str, Any]]:
        rows = tokenize_records(records, encode, prepared.report)
        check_drop_fraction(prepared.report, self.recipe.data.max_drop_fraction)
        return rows

    # -- models -------------------------------------------------------------------------------------------------

    def seed_init(self) -> None:
        """Seed every RNG with the run's seed right before weights are created: a reward model's fresh score head
        and the LoRA adapters TRL attaches are drawn from the global RNG before the Trainer seeds it, so without
        this two identical runs (or batch 8 x 1 vs 1 x 8 accumulation) start from different heads."""
        from transformers import set_seed

        training = getattr(self.recipe, "training", None)
        set_seed(int(getattr(training, "seed", None) or self.recipe.run.seed))

    def load_base(self, loader=None):
        self.seed_init()
        m = self.recipe.model
        loader = loader or load_causal_lm
        return loader(self.model_path, **model_kwargs(m, full_init=self.model_path != self.base_ref))

    def merged_chain(self, include_init: bool = True) -> list[str]:
        """Adapters merged into the base under this stage's adapter: the init adapter's own chain, then (for a
        fresh adapter on top) the init adapter itself."""
        if self.init_from is None or not (self.init_from / "adapter_config.json").is_file():
            return []
        chain = merged_chain_of(self.init_from)
        return [*chain, str(self.init_from)] if include_init else chain

    def load_start_model(self, *, merge_init: bool = True):
        """The base with ``init_from`` merged into its weights (and whatever was merged under it): the new LoRA
        trains on top, and disabling it gives exactly the ``init_from`` model."""
        model = merge_chain(self.load_base(), self.merged_chain(include_init=merge_init))
        model.config.use_cache = False
        self.weights = {
            "base": self.base_ref,
            "merged": self.merged_chain(include_init=merge_init),
            "adapter": str(self.out_dir / "model"),
        }
        return model

    def peft_config(self, task_type: str, modules_to_save: list[str] | None = None):
        if not self.recipe.lora.enabled:
            return None
        return lora_config(self.recipe.lora, task_type, modules_to_save)

    # -- run ----------------------------------------------------------------------------------------------------

    def start(self, trainer: Any, prepared: Any, parent: str | None = None) -> None:
        self.trainer = trainer
        self.recorder = RunRecorder(
            run_dir=self.out_dir,
            stage=self.recipe.STAGE,
            config=to_plain(self.recipe),
            config_hash=self.plan.config_hash,
            model_ref=self.recipe.model.name_or_path,
            parent=parent or (str(self.init_from) if self.init_from else None),
            data=prepared.manifest_info() if prepared is not None else {},
            is_main=self.is_main,
        )
        self.recorder.start()
        self.metrics_cb = MetricsCallback(self.recorder)
        self.guard = GuardCallback(self.recipe.run.max_nonfinite_steps, self.recorder)
        # Trainable weights train in fp32 even on a bf16 base (peft keeps LoRA in fp32; a reward model's score head
        # in modules_to_save would otherwise be a bf16 copy and lose small updates).
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
                p.data = p.data.float()
        # Before the metrics callback: it corrects the final train_loss the metrics callback then records.
        resume_from = self.plan.checkpoint if self.plan.action == "resume" else None
        trainer.add_callback(CheckpointMarkerCallback(trainer, resume_from))
        trainer.add_callback(self.metrics_cb)
        trainer.add_callback(self.guard)
        trainer.align_guard = self.guard
        if self.is_main and prepared is not None:
            self.log(drop_summary(self.recipe.STAGE, prepared.report.to_dict()))
        if self.plan.action == "resume" and self.is_main:
            trim_jsonl(self.out_dir / "metrics.jsonl", checkpoint_step(self.plan.checkpoint))
            self.log(f"[align] resuming {self.recipe.STAGE} from {self.plan.checkpoint}")

    def train(self, trainer: Any) -> None:
        try:
            trainer.train(resume_from_checkpoint=self.plan.checkpoint if self.plan.action == "resume" else None)
        except BaseException as e:
            if self.recorder is not None:
                self.recorder.finish(self.final_metrics(), status="failed", error=f"{type(e).__name__}: {e}")
            raise

    def final_metrics(self) -> dict[str, Any]:
        out = dict(self.metrics_cb.last) if self.metrics_cb else {}
        if self.guard is not None:
            out["nonfinite_steps_skipped"] = self.guard.skipped
        return out

    def save(self, trainer: Any) -> Path:
        extra = {"chat_template.jinja": self.chat_template}
        return save_final(trainer, self.out_dir, self.tokenizer, extra)

    def save_merged(self, trainer: Any, out: Path) -> Path:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self.is_main:
            merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
            merged.save_pretrained(str(out), safe_serialization=True)
            self.tokenizer.save_pretrained(str(out))
        trainer.accelerator.wait_for_everyone()
        return out

    def finish(self, metrics: dict[str, Any], **extra: Any) -> Path:
        if self.recorder is not None:
            self.recorder.finish(
                metrics,
                processes=self.state.num_processes,
                status="complete",
                model_dir=str(self.out_dir / "model"),
                weights=self.weights,
                **extra,
            )
        if self.is_main:
            write_stage_card(self.out_dir, self.recipe.STAGE)
            self.log(f"[align] {self.recipe.STAGE} complete: {self.out_dir}")
        return self.out_dir

    def done_already(self) -> Path:
        if self.is_main:
            self.log(
                f"[align] {self.recipe.STAGE} already complete in {self.out_dir} (same config); skipping. "
                "Use a new run.name to train again."
            )
        return self.out_dir


def write_stage_card(out_dir: Path, stage: str) -> Path | None:
    """The model card in ``<out_dir>/model``, tagged from the stage registry (every stage's finish writes it)."""
    return write_model_card(out_dir, registry.tags_of(stage), reward_model=registry.makes(stage) == "reward_model")


def begin(recipe: Any) -> StageContext:
    return StageContext(recipe)
