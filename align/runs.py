"""Run directories and the weights in them: the one place align reads a stage's ``model/``, ``manifest.json``,
checkpoints and lineage, and the one pair of loaders, ``load_policy`` and ``load_reward_model``.

A stage's adapter is trained on top of a base model into which earlier adapters may have been merged (e.g. DPO with
``reference: sft`` trains a fresh LoRA on base + merged SFT adapter, an RM initialised from SFT trains on base +
merged SFT adapter). Each manifest records that as::

    "weights": {"base": "<model reference>", "merged": ["sft/model", ...], "adapter": "dpo/model"}

so any checkpoint can be rebuilt (base -> merge each listed adapter in order -> attach this stage's adapter), and its
training reference is the same model with the adapter disabled.

Lineage paths are stored relative to the **run root**, the directory that holds a run's stage directories
(``<run.root>/<run.name>/``: a pipeline writes every stage there, and a stage run alone writes
``<run.root>/<run.name>/<stage>``), when they point inside it (``"merged": ["sft/model"]``), and absolute when they
point elsewhere (a model or adapter directory of the user's). On read they are resolved against where the run
directory is now (:func:`resolve_lineage`), so a finished run root can be moved, or read from another working
directory. Manifests written before this rule (absolute or working-directory-relative paths) still load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import ConfigError, ModelSection
from align.models import load_causal_lm, load_sequence_classifier, load_tokenizer, resolve_model_path

MODEL_DIR = "model"
MANIFEST = "manifest.json"
ADAPTER_CONFIG = "adapter_config.json"


def stage_dir_of(adapter_dir: str | Path) -> Path:
    p = Path(adapter_dir)
    return p.parent if p.name in ("model", "merged") else p


def read_stage_manifest(path: str | Path) -> dict[str, Any] | None:
    m = stage_dir_of(path) / MANIFEST
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text())
    except json.JSONDecodeError:
        return None


def run_root_of(stage_dir: str | Path) -> Path:
    """The run root of a stage directory: the directory holding the run's stage directories."""
    return Path(stage_dir).parent


def lineage_path(target: str | Path, stage_dir: str | Path) -> str:
    """How the manifest of ``stage_dir`` stores a path it depends on: relative to the run root (POSIX separators) when
    ``target`` lies inside it, so the run root can move as a whole; else absolute. Relative inputs are read against
    the working directory, as recipes are."""
    full = Path(os.path.abspath(Path(target).expanduser()))
    root = Path(os.path.abspath(run_root_of(Path(stage_dir).expanduser())))
    for a, b in ((full, root), (full.resolve(), root.resolve())):  # as written, then with symlinks resolved
        if a == b or b in a.parents:
            return a.relative_to(b).as_posix()
    return str(full)


def lineage_ref(ref: str | None, stage_dir: str | Path) -> str | None:
    """A model reference as a manifest stores it: an existing local directory as :func:`lineage_path` stores a path,
    anything else (``builtin:<name>``, a hub id) as given."""
    return lineage_path(ref, stage_dir) if ref and Path(ref).expanduser().exists() else ref


def lineage_weights(weights: dict[str, Any], stage_dir: str | Path) -> dict[str, Any]:
    """A ``weights`` record (base, merged, adapter; file names inside the model directory are left as they are) as
    the manifest of ``stage_dir`` stores it."""
    out = dict(weights)
    out["base"] = lineage_ref(out.get("base"), stage_dir)
    out["merged"] = [lineage_path(m, stage_dir) for m in out.get("merged") or []]
    if out.get("adapter"):
        out["adapter"] = lineage_path(out["adapter"], stage_dir)
    return out


def resolve_lineage(recorded: str | Path, stage_dir: str | Path | None, written_in: str | None = None) -> Path:
    """A path from a manifest's lineage (``weights.merged``, ``init_from``...), resolved against where the run is now.

    ``written_in``: the run root the manifest was written in (its ``run_root``), present in manifests that store
    lineage relative to the run root. Such a relative path is looked up under the run root the stage directory sits
    in now, then under the one it was written in (a stage directory copied out of its run on its own); the first
    that exists wins, else the first. Absolute paths are taken as they are.

    Older manifests (no ``run_root``) stored paths as given: tried as recorded (absolute, or relative to the
    working directory), then relative to the run root, then, for a path written as ``<anything>/<stage>/model`` by a
    pipeline that ran elsewhere, that stage beside this one. The first that exists wins; else the recorded path.
    """
    p = Path(recorded)
    if stage_dir is None:
        return p
    root = run_root_of(stage_dir)
    if written_in is not None:
        if p.is_absolute():
            return p
        candidates = [root / p, Path(written_in) / p]
        return next((c for c in candidates if c.exists()), candidates[0])
    if p.exists():
        return p
    candidates = [] if p.is_absolute() else [root / p]
    for k in (2, 1):  # <stage>/model, then <stage>
        if len(p.parts) >= k:
            candidates.append(root / Path(*p.parts[-k:]))
    return next((c for c in candidates if c.exists()), p)


@dataclass
class RunDir:
    """A stage's run directory (``runs/<name>/<stage>``), or a bare model / adapter directory."""

    path: Path

    @classmethod
    def of(cls, ref: str | Path) -> RunDir:
        return cls(stage_dir_of(Path(ref).expanduser()))

    @property
    def model_dir(self) -> Path:
        """Where the weights are: ``<run>/model`` for a stage run, else the directory itself."""
        return self.path / MODEL_DIR if (self.path / MODEL_DIR).is_dir() else self.path

    @property
    def is_run(self) -> bool:
        return (self.path / MANIFEST).is_file()

    @property
    def is_adapter(self) -> bool:
        return (self.model_dir / ADAPTER_CONFIG).is_file()

    @property
    def manifest(self) -> dict[str, Any]:
        return read_stage_manifest(self.path) or {}

    @property
    def weights(self) -> dict[str, Any]:
        return self.manifest.get("weights") or {}

    def lineage(self, recorded: str | Path) -> Path:
        """A path of this run's lineage, resolved to where it is now (:func:`resolve_lineage`)."""
        return resolve_lineage(recorded, self.path, self.manifest.get("run_root"))

    def base_ref(self) -> str | None:
        """The model the adapter sits on: the manifest's, else the adapter config's ``base_model_name_or_path``. A
        local model directory recorded in the lineage is resolved to where it is now; a model reference is kept."""
        ref = self.weights.get("base") or self.manifest.get("model")
        if ref is None and self.is_adapter:
            ref = json.loads((self.model_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if ref and self.is_run and self.lineage(ref).exists():
            return str(self.lineage(ref))
        return ref

    def merged(self) -> list[Path]:
        """The adapters (or a full model) merged into the base before this run trained, resolved to where they are."""
        return [self.lineage(c) for c in self.weights.get("merged") or []]

    def reward_model(self) -> str | None:
        """The reward-model run this run was optimised against (PPO), resolved to where it is now."""
        rm = self.manifest.get("reward_model")
        return str(self.lineage(rm)) if isinstance(rm, str) and rm else rm

    def checkpoints(self) -> list[Path]:
        ckpts = self.path / "checkpoints"
        return sorted(ckpts.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) if ckpts.is_dir() else []


def merged_chain_of(adapter_dir: str | Path) -> list[str]:
    """Adapters merged into the base before ``adapter_dir`` was trained (from its stage manifest; [] if none)."""
    return [str(p) for p in RunDir.of(adapter_dir).merged()]


def merge_chain(model: Any, chain: list[str]) -> Any:
    """Merge each LoRA adapter of ``chain`` into ``model`` in order (plain weights come back). A full model that a
    run started from is its ``weights.base``, never part of the chain."""
    from peft import PeftConfig, PeftModel  # heavy: only when weights are loaded

    for adapter in chain:
        config = PeftConfig.from_pretrained(str(adapter))
        # A causal-LM adapter merged under a reward model (RM initialised from SFT): load it task-agnostic, since
        # the causal-LM wrapper expects generation methods a sequence classifier lacks.
        config.task_type = None
        model = PeftModel.from_pretrained(model, str(adapter), config=config).merge_and_unload()
    return model


def _check_chain(ref: str | Path, chain: list[Path]) -> None:
    missing = [c for c in chain if not c.is_dir()]
    if missing:
        raise ConfigError(
            f"{ref}: it was trained on top of {missing[0]}, which no longer exists; it cannot be rebuilt without "
            "it. Restore that directory or retrain."
        )


def load_settings(base_ref: str | None, settings: ModelSection | None) -> dict[str, Any]:
    """How a stage's ``model`` section loads a base model: ``trust_remote_code`` and ``attn_implementation`` apply to
    every model the stage loads, ``revision`` only to the section's own model reference (another base model has
    revisions of its own). ``dtype`` is the caller's to pass."""
    if settings is None:
        return {}
    return {
        "revision": settings.revision if base_ref == settings.name_or_path else None,
        "trust_remote_code": settings.trust_remote_code,
        "attn_implementation": settings.attn_implementation,
    }


def _tokenizer_settings(kwargs: dict[str, Any], revision: bool = False) -> dict[str, Any]:
    keep = ("revision", "trust_remote_code") if revision else ("trust_remote_code",)
    return {k: kwargs[k] for k in keep if k in kwargs}


def load_policy(
    run_or_model: str, *, dtype: str = "float32", settings: ModelSection | None = None, log=print
) -> tuple[Any, Any, dict[str, Any]]:
    """A checkpoint for generation: a stage directory (``runs/x/dpo``), an adapter directory, or a model reference.

    Returns ``(model, tokenizer, info)``; for adapters the model is a ``PeftModel`` whose ``disable_adapter()``
    context gives the stage's reference model. ``info`` names the base, merged chain and adapter. ``settings``: the
    calling stage's ``model`` section, applied as :func:`load_settings` says.
    """
    run = RunDir.of(run_or_model)
    if run.is_adapter:
        from peft import PeftModel  # heavy: only when weights are loaded

        adapter = run.model_dir
        manifest = run.manifest
        base_ref = run.base_ref()
        chain = run.merged()
        _check_chain(run_or_model, chain)
        kwargs = load_settings(base_ref, settings)
        base = load_causal_lm(resolve_model_path(base_ref, log=log), dtype=dtype, **kwargs)
        base = merge_chain(base, [str(c) for c in chain])
        model = PeftModel.from_pretrained(base, str(adapter))
        tok = load_tokenizer(str(adapter), **_tokenizer_settings(kwargs))
        info = {
            "base": base_ref,
            "merged": [str(c) for c in chain],
            "adapter": str(adapter),
            "stage": manifest.get("stage"),
            "reward_model": run.reward_model(),
        }
    else:
        path = resolve_model_path(str(run_or_model), log=log)
        kwargs = load_settings(str(run_or_model), settings)
        model = load_causal_lm(path, dtype=dtype, **kwargs)
        tok = load_tokenizer(path, **_tokenizer_settings(kwargs, revision=True))
        info = {"base": str(run_or_model), "merged": [], "adapter": None, "stage": None, "reward_model": None}
    model.eval()
    model.config.use_cache = True
    return model, tok, info


def load_reward_model(
    path: str | Path, *, dtype: str = "float32", settings: ModelSection | None = None, log=print
) -> tuple[Any, Any, dict[str, Any]]:
    """A reward model as it was trained: base -> every entry of its manifest's ``weights.merged`` (e.g. the SFT
    adapter when the RM was initialised from SFT) -> its own adapter and score head, merged for fast scoring; or a
    full sequence-classification model directory. Returns ``(model, tokenizer, info)``. ``settings``: the calling
    stage's ``model`` section, applied as :func:`load_settings` says.

    Stock equivalent for an RM with nothing merged under it: ``AutoPeftModelForSequenceClassification.from_pretrained(
    path, num_labels=1)`` (``num_labels=1`` matters: the base model's config says 2)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"reward_model={str(path)!r} does not exist; point it at a reward-model stage directory (runs/<name>/rm) "
            "or a sequence-classification model directory."
        )
    run = RunDir(p) if (p / MODEL_DIR).is_dir() else RunDir.of(p)
    model_dir = run.model_dir if (p / MODEL_DIR).is_dir() or p.name in ("model", "merged") else p
    chain: list[Path] = []
    if (model_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftModel  # heavy: only when weights are loaded

        base_ref = run.base_ref()
        if not base_ref:
            raise ConfigError(f"reward_model {model_dir}: cannot tell its base model (no manifest, no base path).")
        base_path = resolve_model_path(base_ref, log=log)
        kwargs = load_settings(base_ref, settings)
        own_tokenizer = (model_dir / "tokenizer_config.json").is_file()
        tok_src = str(model_dir) if own_tokenizer else base_path
        tok = load_tokenizer(tok_src, **_tokenizer_settings(kwargs, revision=not own_tokenizer))
        model = load_sequence_classifier(base_path, dtype=dtype, pad_token_id=tok.pad_token_id, **kwargs)
        chain = run.merged()
        _check_chain(f"reward_model {path}", chain)
        model = merge_chain(model, [str(c) for c in chain])
        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    else:
        kwargs = load_settings(str(model_dir), settings)
        tok = load_tokenizer(str(model_dir), **_tokenizer_settings(kwargs))
        model = load_sequence_classifier(str(model_dir), dtype=dtype, pad_token_id=tok.pad_token_id, **kwargs)
    model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    model.eval()
    info = {
        "model_dir": model_dir,
        "stage_dir": run.path if run.is_run else None,
        "manifest": run.manifest if run.is_run else None,
        "adapter_dir": model_dir if chain or (model_dir / ADAPTER_CONFIG).is_file() else None,
        "merged": [str(c) for c in chain],
    }
    return model, tok, info
