"""Run directories and the weights in them: the one place align reads a stage's ``model/``, ``manifest.json``,
checkpoints and lineage, and the one pair of loaders, ``load_policy`` and ``load_reward_model``.

A stage's adapter is trained on top of a base model into which earlier adapters may have been merged (e.g. DPO with
``reference: sft`` trains a fresh LoRA on base + merged SFT adapter, an RM initialised from SFT trains on base +
merged SFT adapter). Each manifest records that as::

    "weights": {"base": "<model reference>", "merged": ["runs/x/sft/model", ...], "adapter": "runs/x/dpo/model"}

so any checkpoint can be rebuilt (base -> merge each listed adapter in order -> attach this stage's adapter), and its
training reference is the same model with the adapter disabled. Paths in the lineage are resolved against where the
run directory is now (``resolve_lineage``), so a finished pipeline directory can be moved or read from elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.config import ConfigError
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


def resolve_lineage(recorded: str | Path, stage_dir: str | Path | None) -> Path:
    """A path from a manifest's lineage (``weights.merged``, ``init_from``), resolved against where the run is now.

    Tried in order: the path as recorded (absolute, or relative to the working directory); relative to the run root
    (the directory holding the stage directories); and, for a path written as ``<anything>/<stage>/model`` by a
    pipeline that ran elsewhere, that stage beside this one. The first that exists wins; else the recorded path.
    """
    p = Path(recorded)
    if p.exists() or stage_dir is None:
        return p
    root = Path(stage_dir).parent
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

    def base_ref(self) -> str | None:
        """The model the adapter sits on: the manifest's, else the adapter config's ``base_model_name_or_path``."""
        ref = self.weights.get("base") or self.manifest.get("model")
        if ref is None and self.is_adapter:
            ref = json.loads((self.model_dir / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        return ref

    def merged(self) -> list[Path]:
        """The adapters (or a full model) merged into the base before this run trained, resolved to where they are."""
        return [resolve_lineage(c, self.path) for c in self.weights.get("merged") or []]

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


def load_policy(run_or_model: str, *, dtype: str = "float32", log=print) -> tuple[Any, Any, dict[str, Any]]:
    """A checkpoint for generation: a stage directory (``runs/x/dpo``), an adapter directory, or a model reference.

    Returns ``(model, tokenizer, info)``; for adapters the model is a ``PeftModel`` whose ``disable_adapter()``
    context gives the stage's reference model. ``info`` names the base, merged chain and adapter.
    """
    run = RunDir.of(run_or_model)
    if run.is_adapter:
        from peft import PeftModel  # heavy: only when weights are loaded

        adapter = run.model_dir
        manifest = run.manifest
        base_ref = run.base_ref()
        chain = run.merged()
        _check_chain(run_or_model, chain)
        base = load_causal_lm(resolve_model_path(base_ref, log=log), dtype=dtype)
        base = merge_chain(base, [str(c) for c in chain])
        model = PeftModel.from_pretrained(base, str(adapter))
        tok = load_tokenizer(str(adapter))
        info = {
            "base": base_ref,
            "merged": [str(c) for c in chain],
            "adapter": str(adapter),
            "stage": manifest.get("stage"),
            "reward_model": manifest.get("reward_model"),
        }
    else:
        path = resolve_model_path(str(run_or_model), log=log)
        model = load_causal_lm(path, dtype=dtype)
        tok = load_tokenizer(path)
        info = {"base": str(run_or_model), "merged": [], "adapter": None, "stage": None, "reward_model": None}
    model.eval()
    model.config.use_cache = True
    return model, tok, info


def load_reward_model(path: str | Path, *, dtype: str = "float32", log=print) -> tuple[Any, Any, dict[str, Any]]:
    """A reward model as it was trained: base -> every entry of its manifest's ``weights.merged`` (e.g. the SFT
    adapter when the RM was initialised from SFT) -> its own adapter and score head, merged for fast scoring; or a
    full sequence-classification model directory. Returns ``(model, tokenizer, info)``.

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
        tok_src = str(model_dir) if (model_dir / "tokenizer_config.json").is_file() else base_path
        tok = load_tokenizer(tok_src)
        model = load_sequence_classifier(base_path, dtype=dtype, pad_token_id=tok.pad_token_id)
        chain = run.merged()
        _check_chain(f"reward_model {path}", chain)
        model = merge_chain(model, [str(c) for c in chain])
        model = PeftModel.from_pretrained(model, str(model_dir)).merge_and_unload()
    else:
        tok = load_tokenizer(str(model_dir))
        model = load_sequence_classifier(str(model_dir), dtype=dtype, pad_token_id=tok.pad_token_id)
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
