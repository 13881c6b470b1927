"""Rebuilding a stage's model from its run directory.

A stage's adapter is trained on top of a base model into which earlier adapters may have been merged (e.g. DPO with
``reference: sft`` trains a fresh LoRA on base + merged SFT adapter). Each manifest records that as::

    "weights": {"base": "<model reference>", "merged": ["runs/x/sft/model", ...], "adapter": "runs/x/dpo/model"}

so any checkpoint can be rebuilt (base -> merge each listed adapter in order -> attach this stage's adapter), and its
training reference is the same model with the adapter disabled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from align.models import load_causal_lm, load_tokenizer, resolve_model_path


def stage_dir_of(adapter_dir: str | Path) -> Path:
    p = Path(adapter_dir)
    return p.parent if p.name in ("model", "merged") else p


def read_stage_manifest(path: str | Path) -> dict[str, Any] | None:
    m = stage_dir_of(path) / "manifest.json"
    if not m.is_file():
        return None
    try:
        return json.loads(m.read_text())
    except json.JSONDecodeError:
        return None


def merged_chain_of(adapter_dir: str | Path) -> list[str]:
    """Adapters merged into the base before ``adapter_dir`` was trained (from its stage manifest; [] if none)."""
    m = read_stage_manifest(adapter_dir)
    return list(((m or {}).get("weights") or {}).get("merged") or [])


def merge_chain(model: Any, chain: list[str]) -> Any:
    """Merge each LoRA adapter of ``chain`` into ``model`` in order (plain weights come back)."""
    from peft import PeftConfig, PeftModel

    for adapter in chain:
        config = PeftConfig.from_pretrained(str(adapter))
        # A causal-LM adapter merged under a reward model (RM initialised from SFT): load it task-agnostic, since
        # the causal-LM wrapper expects generation methods a sequence classifier lacks.
        config.task_type = None
        model = PeftModel.from_pretrained(model, str(adapter), config=config).merge_and_unload()
    return model


def load_policy(run_or_model: str, *, dtype: str = "float32", log=print) -> tuple[Any, Any, dict[str, Any]]:
    """A checkpoint for generation: a stage directory (``runs/x/dpo``), an adapter directory, or a model reference.

    Returns ``(model, tokenizer, info)``; for adapters the model is a ``PeftModel`` whose ``disable_adapter()``
    context gives the stage's reference model. ``info`` names the base, merged chain and adapter.
    """
    p = Path(run_or_model)
    adapter = p / "model" if (p / "model" / "adapter_config.json").is_file() else p
    if (adapter / "adapter_config.json").is_file():
        from peft import PeftModel

        manifest = read_stage_manifest(adapter) or {}
        weights = manifest.get("weights") or {}
        base_ref = weights.get("base") or manifest.get("model")
        if base_ref is None:
            base_ref = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = load_causal_lm(resolve_model_path(base_ref, log=log), dtype=dtype)
        base = merge_chain(base, weights.get("merged") or [])
        model = PeftModel.from_pretrained(base, str(adapter))
        tok = load_tokenizer(str(adapter))
        info = {
            "base": base_ref,
            "merged": weights.get("merged") or [],
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
