"""Checkpoints every stage can trust: what makes one complete, the marker written last into it, and the search for
the newest complete one to resume from (docs/faults.md #15, #30-32).

A checkpoint is complete only when its marker (``align-checkpoint.json``, or PPO's ``state.json``), written after
an fsync of every other file, lists each file at its size, every JSON file parses and every safetensors header
matches its file. HF/TRL checkpoints get the marker from :class:`CheckpointMarkerCallback`, which also carries what
the HF Trainer does not keep across a resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from align.config import ConfigError
from align.tracking import atomic_write_text, process_state

CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")


WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")


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
