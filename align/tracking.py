"""Run records: the run directory, ``metrics.jsonl``, ``manifest.json`` and tracker setup.

Every stage writes into ``<root>/<name>/<stage>/``:

- ``config.yaml``: the fully resolved recipe (secrets redacted);
- ``metrics.jsonl``: one JSON object per logged step, always, whatever trackers are on;
- ``manifest.json``: what produced the directory (stage, status, parent checkpoint, model reference, data
  fingerprint and data card hash, config hash, package versions, code version, times, final metrics).

The manifest is written atomically (temporary file + rename) at start (``status: running``) and at the end
(``status: complete`` or ``failed``), so a reader never sees half a file and a pipeline can tell a finished stage
from an interrupted one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from align import __version__
from align.config import redact

TRACKED_PACKAGES = ("align", "torch", "transformers", "trl", "peft", "accelerate", "datasets")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def files_complete(directory: Path, marker: str) -> bool:
    """True when ``directory/marker`` (a JSON object written last, whose ``files`` maps relative path -> size)
    exists and every listed file has its recorded size: how the model cache and PPO checkpoints tell a finished
    directory from one cut off while it was written."""
    path = Path(directory) / marker
    if not path.is_file():
        return False
    try:
        files = json.loads(path.read_text())["files"]
        return all(
            (Path(directory) / f).is_file() and (Path(directory) / f).stat().st_size == size
            for f, size in files.items()
        )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        return False


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_version() -> str:
    """The package version plus the git commit (and ``-dirty``) when running from a checkout."""
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            if sha:
                return f"{__version__}+g{sha}{'-dirty' if dirty else ''}"
        except (OSError, subprocess.SubprocessError):
            pass
    return __version__


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    p = Path(run_dir) / "manifest.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


@dataclass
class RunRecorder:
    """Writes a stage's config, metrics and manifest. Only the main process writes (``is_main``)."""

    run_dir: Path
    stage: str
    config: dict[str, Any]
    config_hash: str
    model_ref: str
    parent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    is_main: bool = True
    started: float = field(default_factory=time.time)
    manifest: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        if not self.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(redact(self.config), sort_keys=False))
        previous = read_manifest(self.run_dir) or {}
        self.manifest = {
            "stage": self.stage,
            "status": "running",
            "model": self.model_ref,
            "parent": self.parent,
            # Where the run root was when this ran: lineage paths below are relative to the run root it is in now,
            # and to this one when a stage directory was copied out of its run on its own (align.runs).
            "run_root": os.path.abspath(self.run_dir.parent),
            "config_hash": self.config_hash,
            "data": self.data,
            "packages": package_versions(),
            "code_version": code_version(),
            "python": platform.python_version(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "started_at": _iso(self.started),
            "ended_at": None,
            "attempts": int(previous.get("attempts", 0)) + 1,
            "metrics": {},
        }
        self._write()

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if not self.is_main:
            return
        row = {"time": round(time.time(), 3), **({"step": step} if step is not None else {}), **_jsonable(metrics)}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def finish(self, metrics: dict[str, Any], status: str = "complete", **extra: Any) -> None:
        if not self.is_main:
            return
        self.manifest.update(
            status=status,
            ended_at=_iso(time.time()),
            seconds=round(time.time() - self.started, 2),
            metrics=_jsonable(metrics),
            **_jsonable(extra),
        )
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.run_dir / "manifest.json", json.dumps(redact(self.manifest), indent=2, default=str))


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            return str(obj)
    if isinstance(obj, float) and obj != obj:  # NaN is not JSON
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def setup_trackers(report_to: list[str], project: str) -> list[str]:
    """Environment for the trackers a run asks for; wandb runs offline unless an API key is configured.

    Returns the ``report_to`` list for transformers' Trainer. Keys are read from the environment by wandb itself;
    align never copies them anywhere.
    """
    trackers = [r for r in report_to if r != "none"]
    if "wandb" in trackers:
        os.environ.setdefault("WANDB_PROJECT", project)
        has_key = bool(os.environ.get("WANDB_API_KEY")) or (Path.home() / ".netrc").is_file()
        if not has_key:
            os.environ.setdefault("WANDB_MODE", "offline")
        # An unreachable server fails in seconds instead of wandb's default minutes of retries; the error is then
        # explained by the command layer (align.cli.explain_error).
        os.environ.setdefault("WANDB_INIT_TIMEOUT", "20")
    return trackers


def process_state():
    """accelerate's process state. Without a GPU it must be asked for with ``cpu=True``: otherwise a process
    started by ``accelerate launch`` on a CPU machine does not join the others (it sees a world of one)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())
