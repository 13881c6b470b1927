"""Recipes: typed dataclass configs per stage, loaded from YAML plus ``key=value`` overrides.

A recipe is a YAML mapping of sections. Every section is a dataclass; ``training`` is TRL's own config class for
the stage (``SFTConfig``, ``RewardConfig``, ``DPOConfig``), so its keys and help texts are TRL's, not copies.
Unknown keys and values of the wrong type raise :class:`ConfigError` naming the key and the valid ones; the CLI
turns that into exit code 2 with no traceback.

Overrides use dotted keys (``training.learning_rate=5e-5``, ``lora.r=8``, ``data.eval_fraction=0.2``); values are
parsed as YAML and then coerced to the field's declared type, so ``1e-4`` is a float for a float field.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.errors import ConfigError  # noqa: F401  (re-exported: importable here as before)


def import_callable(ref: str, what: str, error: type[Exception] = ConfigError):
    """``module:function`` -> the function (data plugins, reward functions, judges); ``what`` starts the error
    message, e.g. ``"reward_fn='m:f'"``."""
    import importlib

    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name:
        raise error(f"{what}: write it as module:function, e.g. mypkg.rewards:length_penalty")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise error(f"{what}: cannot import module '{module_name}' ({exc})") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise error(f"{what}: module '{module_name}' has no function '{func_name}'")
    return func


# --------------------------------------------------------------------------------------------------------------
# Sections shared by the stages


@dataclass
class ModelSection:
    name_or_path: str = field(
        default="builtin:tiny-llama",
        metadata={
            "help": "Base model: a local directory, a hub id, or a built-in name (`align models list`), e.g. "
            "builtin:smollm2-135m-instruct or builtin:tiny-llama."
        },
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "Weights dtype: float32, bfloat16, float16 or auto (mixed precision is training.bf16)."},
    )
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit)."})
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the hub. Off unless the recipe needs it."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa, flash_attention_2, ..."})

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ConfigError(f"model.dtype={self.dtype!r}: use one of float32, bfloat16, float16, auto.")


@dataclass
class LoraSection:
    """The peft ``LoraConfig`` fields a recipe usually sets; the rest keep peft's defaults."""

    enabled: bool = field(default=True, metadata={"help": "Train a LoRA adapter; false = full fine-tuning."})
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: list[str] | str = field(
        default="all-linear", metadata={"help": "Module names to adapt, or all-linear."}
    )
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilised scaling alpha / sqrt(r)."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Extra modules trained in full and saved with the adapter."}
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ConfigError(f"lora.r={self.r}: the rank must be >= 1 (or set lora.enabled=false).")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout={self.dropout}: must be in [0, 1).")


@dataclass
class SpeedSection:
    """Throughput settings that leave the computed quantities unchanged (to rounding); see align/fast_head.py and
    docs/benchmarks.md for what each is worth."""

    compact_lm_head: bool = field(
        default=True,
        metadata={"help": "Project only label positions through the LM head (TRL's CPU head projects all)."},
    )
    length_buckets: bool = field(
        default=True,
        metadata={"help": "Run the backbone over length-sorted row groups, each padded to its own longest row."},
    )


@dataclass
class TemplateSection:
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "None = the tokenizer's own chat template; or a named fallback (chatml, human-assistant) for "
            "base models that have none; or a path to a Jinja file."
        },
    )


@dataclass
class RunSection:
    name: str = field(default="default", metadata={"help": "Run name: outputs go to <root>/<name>/<stage>/."})
    root: str = field(default="runs", metadata={"help": "Directory holding all runs."})
    resume: str = field(
        default="auto",
        metadata={
            "help": "auto = continue from the last complete checkpoint of this run directory if there is one; "
            "never = start fresh (refuses to overwrite a completed stage); or a checkpoint path."
        },
    )
    seed: int = field(default=42, metadata={"help": "Seed for data order, initialisation and sampling."})
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Trackers besides metrics.jsonl, e.g. [wandb]."}
    )
    wandb_project: str = field(default="align", metadata={"help": "wandb project name."})
    max_nonfinite_steps: int = field(
        default=3, metadata={"help": "Abort after this many non-finite losses in a row (each one is skipped)."}
    )

    def __post_init__(self) -> None:
        bad = [r for r in self.report_to if r not in ("wandb", "tensorboard", "none")]
        if bad:
            raise ConfigError(f"run.report_to: unknown tracker(s) {bad}; use wandb, tensorboard or none.")


# --------------------------------------------------------------------------------------------------------------
# Coercion of YAML values to declared field types


def _looks_structured(text: str) -> bool:
    t = text.strip()
    return t.startswith(("[", "{")) or t.lower() in ("null", "none", "~")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


class RawOverride(str):
    """A ``key=value`` override's text, parsed only once the target field's type is known: ``no`` stays the
    string "no" for a string field (YAML 1.1 would read it as false) and ``1e-4`` becomes a float for a float."""


def resolve_raw(obj: Any) -> Any:
    """Override texts parsed as YAML, for mappings that are not typed dataclasses (e.g. a pipeline's top level)."""
    if isinstance(obj, RawOverride):
        try:
            return yaml.safe_load(obj) if obj != "" else ""
        except yaml.YAMLError:
            return str(obj)
    if isinstance(obj, dict):
        return {k: resolve_raw(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [resolve_raw(v) for v in obj]
    return obj


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` (from YAML or an override) to the declared type ``tp``; raise ConfigError naming ``key``.

    One case per supported annotation, tried in this order (precedence matters: a union before its members, bool
    before int)."""
    if isinstance(value, RawOverride):
        value = _parse_override(value, tp)
    if tp is Any or tp is typing.Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, args, key)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(args)}.")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}.")
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}.")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, bool) and not value and "no" in [m.value for m in tp]:
            value = "no"  # YAML 1.1 reads `eval_strategy: no` as false
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not one of {[m.value for m in tp]}.") from None
    if tp is bool:
        return _to_bool(value, key)
    if tp is int:
        return _to_int(value, key)
    if tp is float:
        return _to_float(value, key)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}.")
        return value if isinstance(value, str) else str(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}.")
        return build_dataclass(tp, value, key)
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}.")
    return value


def _parse_override(value: RawOverride, tp: Any) -> Any:
    """A ``key=value`` override's text: kept as a string where the field takes text, else read as YAML."""
    if tp is str or (isinstance(tp, type) and issubclass(tp, enum.Enum)) or typing.get_origin(tp) is typing.Literal:
        return str(value)
    if (
        typing.get_origin(tp) in (typing.Union, types.UnionType)
        and any(a is str or (isinstance(a, type) and issubclass(a, enum.Enum)) for a in typing.get_args(tp))
        and not _looks_structured(value)
    ):
        return str(value)
    try:
        return yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        return str(value)


def _coerce_union(value: Any, tp: Any, args: tuple[Any, ...], key: str) -> Any:
    if value is None and type(None) in args:
        return None
    if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
        return None
    # Prefer an exact type match before trying conversions (e.g. "all-linear" for list[str] | str).
    for a in args:
        if a is not type(None) and isinstance(a, type) and isinstance(value, a) and not isinstance(value, bool):
            return value
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce(value, a, key)
        except ConfigError:
            if dataclasses.is_dataclass(a) and isinstance(value, dict):
                raise  # the section's own, more precise message (unknown key, wrong type inside)
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}.")


def _to_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"{key}: expected true or false, got {value!r}.")


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected an integer, got {value!r}.")


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}.")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{key}: expected a number, got {value!r}.")


def _field_types(cls: type) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # some third-party classes use forward refs that do not resolve; fall back to raw types
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def unknown_key_message(key: str, valid: list[str], section: str) -> str:
    close = difflib.get_close_matches(key.split(".")[-1], valid, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if len(valid) <= 30:
        listing = f" Valid keys in {section or 'the recipe'}: {', '.join(valid)}."
    else:
        listing = (
            f" {section} takes {len(valid)} keys (TRL's own config); list them with "
            f"`align <stage> --list-keys {section}`."
        )
    return f"Unknown key {key!r}.{hint}{listing}"


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from a plain mapping, coercing each value and rejecting unknown keys."""
    types_ = _field_types(cls)
    kwargs = {}
    for k, v in values.items():
        full = f"{prefix}.{k}" if prefix else str(k)
        if k not in types_:
            raise ConfigError(unknown_key_message(full, sorted(types_), prefix))
        kwargs[k] = coerce(v, types_[k], full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # validation inside the dataclass (ours or TRL's __post_init__)
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from None


# --------------------------------------------------------------------------------------------------------------
# Loading recipes


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict; values parsed as YAML scalars (types are fixed later by coercion)."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} is not key=value (e.g. training.learning_rate=5e-5).")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"Override {item!r} has an empty key.")
        value = RawOverride(raw)
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r}: {p!r} is not a section.")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, recursively; ``{"sources": {"0": {...}}}`` merges into item 0 of a list (so the
    override ``data.sources.0.max_rows=100`` reaches the first source)."""
    out = dict(base)
    for k, v in extra.items():
        cur = out.get(k)
        if isinstance(v, dict) and isinstance(cur, dict):
            out[k] = deep_merge(cur, v)
        elif isinstance(v, dict) and isinstance(cur, list) and v and all(str(i).isdigit() for i in v):
            items = list(cur)
            for i, sub in v.items():
                i = int(i)
                if i >= len(items):
                    raise ConfigError(f"{k}.{i}: the list {k} has {len(items)} item(s) (indices from 0).")
                items[i] = deep_merge(items[i], sub) if isinstance(items[i], dict) and isinstance(sub, dict) else sub
            out[k] = items
        else:
            out[k] = v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"Recipe {str(p)!r} does not exist. Recipes live under recipes/, e.g. recipes/tiny/sft.yaml."
        )
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"Recipe {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Recipe {str(p)!r} must be a mapping of sections, got {type(data).__name__}.")
    return data


def to_plain(obj: Any) -> Any:
    """A dataclass tree as plain JSON/YAML-safe data (enums by value, paths as strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password", "passwd")


def is_secret_key(key: Any) -> bool:
    """Whether a setting's name looks like it holds a credential (``hub_token``, ``api_key``, ``password``)."""
    lk = str(key).lower()
    return any(m in lk for m in SECRET_MARKERS) and not lk.endswith(("_tokens", "token_id", "_id"))


def redact(obj: Any) -> Any:
    """Replace values of secret-looking keys (hub tokens, API keys) so they never reach logs or manifests."""
    if isinstance(obj, dict):
        return {k: "***" if (is_secret_key(k) and isinstance(v, str) and v) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def mask_secret_overrides(words: list[str]) -> list[str]:
    """Command-line words with the values of secret-looking ``key=value`` overrides replaced by ``***``
    (``training.hub_token=hf_x`` -> ``training.hub_token=***``), and secret keys inside a mapping value
    (``training.model_init_kwargs={token: hf_x}``) redacted. For records of the command line that outlive the
    process, such as the one wandb keeps of ``sys.argv``."""
    out = []
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or word.startswith("-"):
            out.append(word)
            continue
        if is_secret_key(key.split(".")[-1]) and value:
            out.append(f"{key}=***")
            continue
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = None
        masked = redact(parsed) if isinstance(parsed, (dict, list)) else parsed
        out.append(f"{key}={json.dumps(masked)}" if masked != parsed else word)
    return out


def config_hash(plain: dict[str, Any], ignore: tuple[str, ...] = ("run",)) -> str:
    """Hash of the settings that change results (the ``run`` section's bookkeeping is left out)."""
    kept = {k: v for k, v in plain.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def list_keys(cls: type) -> list[tuple[str, str, str]]:
    """(name, type, help) for each field of a section class: what `--list-keys` prints."""
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        out.append((f.name, _type_name(_field_types(cls).get(f.name, f.type)), f.metadata.get("help", "")))
    return out


# --------------------------------------------------------------------------------------------------------------
# Whole recipes


def hardware_defaults() -> dict[str, Any]:
    """Trainer settings that depend on the machine: CPU runs must say use_cpu; bf16 only where CUDA supports it."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": bool(torch.cuda.is_bf16_supported()), "use_cpu": False}
    return {"bf16": False, "use_cpu": True}


# Settings every stage's TRL config starts from (a recipe or override replaces any of them).
COMMON_TRAINING_DEFAULTS: dict[str, Any] = {
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 50,
    "save_total_limit": 2,
    "eval_strategy": "epoch",  # stages switch it off when there is no eval split
    "activation_checkpointing": False,
    "report_to": "none",
    "dataloader_num_workers": 0,
    "disable_tqdm": False,
    "save_only_model": False,
    "remove_unused_columns": False,
}


def load_recipe(cls: type, path: str | Path | None, overrides: list[str] | None = None) -> Any:
    """Read a recipe file (optional), apply overrides, and build the stage's recipe dataclass.

    ``cls.training_defaults()`` (if defined) supplies stage defaults for the ``training`` section, under the
    user's values; the run directory becomes TRL's ``output_dir`` unless the recipe sets one.
    """
    data = read_yaml(path) if path else {}
    return load_recipe_dict(cls, deep_merge(data, parse_overrides(overrides or [])))


def load_recipe_dict(cls: type, data: dict[str, Any]) -> Any:
    """:func:`load_recipe` on an already-parsed mapping (the pipeline builds stage recipes this way)."""
    valid = sorted(_field_types(cls))
    for k in data:
        if k not in valid:
            raise ConfigError(unknown_key_message(str(k), valid, ""))
    if "training" in valid:
        training = dict(COMMON_TRAINING_DEFAULTS)
        training.update(hardware_defaults())
        if hasattr(cls, "training_defaults"):
            training.update(cls.training_defaults())
        user_training = data.get("training") or {}
        if not isinstance(user_training, dict):
            raise ConfigError(f"training: expected a mapping, got {user_training!r}.")
        training.update(user_training)
        run = data.get("run") or {}
        run_section = build_dataclass(RunSection, run, "run") if isinstance(run, dict) else None
        if run_section is not None:
            training.setdefault(
                "output_dir", str(Path(run_section.root) / run_section.name / cls.STAGE / "checkpoints")
            )
            training.setdefault("seed", run_section.seed)
            training.setdefault("data_seed", run_section.seed)
            if "report_to" not in user_training and run_section.report_to:
                training["report_to"] = run_section.report_to
        data = {**data, "training": training}
    return build_dataclass(cls, data)


def stage_dir(recipe: Any) -> Path:
    return Path(recipe.run.root) / recipe.run.name / recipe.STAGE
