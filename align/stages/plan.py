"""What to do in a stage directory: skip it (complete, same inputs), resume it from its newest complete checkpoint,
or start it; and the semantic hash that decides "same inputs" (the recipe minus bookkeeping keys, the data files'
hashes, the upstream stages' config hash and end time)."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.config import ConfigError, config_hash, redact, stage_dir, to_plain
from align.data.sources import list_data_files, resolve_builtin
from align.runs import read_stage_manifest
from align.stages import registry
from align.stages.resume import find_resume_checkpoint, require_complete_checkpoint
from align.tracking import process_state, read_manifest

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


def data_file_hashes(data_cfg: Any) -> dict[str, str]:
    """sha256 of every local or built-in data file a data section reads (hub sources: their id and revision), so
    a stage re-runs when its data changed even though the recipe did not."""

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
    stage = registry.find(getattr(recipe, "STAGE", ""))
    for section in stage.hash_skips_bookkeeping_in if stage else ("training",):
        if isinstance(plain.get(section), dict):
            plain[section] = {k: v for k, v in plain[section].items() if k not in BOOKKEEPING_KEYS}
    if "watch" in plain and plain["watch"] is None:
        del plain["watch"]  # a stage without a reward-hacking watch hashes as it did before the watch existed
    plain["_inputs"] = {
        "data": data_file_hashes(recipe.data) if getattr(recipe, "data", None) is not None else {},
        "init_from": upstream_identity(getattr(recipe, "init_from", None)),
        "reward_model": upstream_identity(getattr(recipe, "reward_model", None)),
    }
    extra = recipe.upstream_runs() if hasattr(recipe, "upstream_runs") else []
    if extra:  # further runs a stage reads (more reward models, a watch's judge); none: the hash is as before
        plain["_inputs"]["upstream"] = {p: upstream_identity(p) for p in extra}
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
