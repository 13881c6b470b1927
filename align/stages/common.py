"""What the SFT, reward-model and DPO stages share around TRL's trainers.

- the run directory layout: ``<root>/<name>/<stage>/`` with ``checkpoints/`` (TRL/HF checkpoints, resumable),
  ``model/`` (the final adapter or model with tokenizer and template), ``config.yaml``, ``metrics.jsonl``,
  ``manifest.json``;
- skip / resume / start (align/stages/plan.py) and which checkpoints are complete (align/stages/resume.py): their
  names stay importable from here;
- guards as a trainer mixin and callback: a non-finite loss or gradient skips that optimizer step (counted) and
  aborts after ``run.max_nonfinite_steps`` in a row (docs/faults.md #14); trainable parameters that got no gradient after
  the first step stop the run naming them (docs/faults.md #13);
- ``metrics.jsonl`` from the trainer's logs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from align.config import ConfigError, redact, to_plain
from align.data.prepare import tokenize_records
from align.data.validate import check_drop_fraction
from align.errors import NoGradientError, NonFiniteError  # noqa: F401  (re-exported: importable here as before)
from align.modelcard import write_model_card
from align.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
from align.runs import lineage_path, lineage_weights, merge_chain, merged_chain_of
from align.stages import registry

# Re-exported: these names were defined here before the plan and the checkpoint checks got their own modules.
from align.stages.plan import (  # noqa: F401
    BOOKKEEPING_KEYS,
    StagePlan,
    changed_settings,
    data_file_hashes,
    move_aside,
    plan_stage,
    semantic_hash,
    upstream_identity,
)
from align.stages.resume import (  # noqa: F401
    CHECKPOINT_FILES,
    CHECKPOINT_MARKER,
    PPO_STATE_FILE,
    WEIGHT_FILES,
    CheckpointMarkerCallback,
    checkpoint_problems,
    checkpoint_step,
    find_resume_checkpoint,
    is_complete_checkpoint,
    require_complete_checkpoint,
    safetensors_problem,
    trim_jsonl,
    write_checkpoint_marker,
)
from align.templates import Encoder, apply_template_choice
from align.tracking import RunRecorder, process_state, setup_trackers


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
            parent=lineage_path(parent or self.init_from, self.out_dir) if (parent or self.init_from) else None,
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
                model_dir=lineage_path(self.out_dir / "model", self.out_dir),
                weights=lineage_weights(self.weights, self.out_dir),
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


class BaseReferenceMixin:
    """For a TRL trainer started from a PEFT model under ``reference: base``: TRL 1.16 adds a frozen copy of the
    model's adapter as adapter "ref" and scores the reference with it, which makes the reference the starting (SFT)
    policy. Dropping the copy leaves every adapter off, i.e. the base (docs/faults.md, DPO and KTO rows)."""

    _align_reference_is_base = False

    def drop_copied_reference(self) -> None:
        if not self._align_reference_is_base:
            return
        model = self.accelerator.unwrap_model(self.model)
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")
