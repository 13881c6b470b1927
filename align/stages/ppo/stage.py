"""``align ppo``: a PPO stage run from its recipe: plan, resume, iterate, record, save, model card."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from align.config import ConfigError, redact, to_plain
from align.data.prompts import prompt_text
from align.runs import lineage_path, lineage_weights
from align.stages import common
from align.stages.plan import plan_stage
from align.stages.ppo.checkpoint import (
    _trim_jsonl,
    find_checkpoint,
)
from align.stages.ppo.recipe import (
    CRITIC_DIR,
    STATE_FILE,
    Recipe,
)
from align.stages.ppo.rollout import (
    Rollout,
)
from align.stages.ppo.trainer import PPOTrainer
from align.stages.resume import require_complete_checkpoint
from align.stages.watch import observe_ppo_iteration, ppo_watch
from align.tracking import RunRecorder, process_state


def _write_samples(path: Path, iteration: int, trainer: PPOTrainer, ro: Rollout, count: int) -> None:
    with open(path, "a") as f:
        for j in range(min(count, len(ro.prompt_idx))):
            p = trainer.prompts[ro.prompt_idx[j]]
            row = {
                "iteration": iteration,
                "prompt_id": p.id,
                "prompt": prompt_text(p.prompt),
                "response": ro.texts[j],
                "score": float(ro.raw_scores[j]),
                "ended_with_eos": bool(ro.has_eos[j]),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def run(recipe: Recipe, callbacks: list[Callable[[int, dict[str, Any]], None]] | None = None):
    """Run (or resume, or skip) the PPO stage; returns the stage directory.

    ``callbacks``: callables ``cb(iteration, metrics)`` run on every process after each iteration (and after its
    checkpoint, when one is due). Tests use one that raises ``KeyboardInterrupt`` to simulate an interruption.
    """
    from tqdm.auto import tqdm

    plan = plan_stage(recipe, log=lambda *a: None)  # its checkpoint finder knows HF checkpoints only
    if plan.action == "skip":
        if process_state().is_main_process:
            print(f"[align] ppo already complete in {plan.out_dir} (same config); skipping. Use a new run.name.")
        return plan.out_dir
    trainer = PPOTrainer(recipe, plan)
    log, cfg, acc = trainer.log, recipe.ppo, trainer.accelerator
    checkpoint = _checkpoint_to_resume(trainer, recipe)
    data_info = trainer.prepare_prompts()
    if trainer.is_main:
        _clear_leftovers(trainer.out_dir, fresh=checkpoint is None)
    recorder = RunRecorder(
        run_dir=trainer.out_dir,
        stage=recipe.STAGE,
        config=to_plain(recipe),
        config_hash=trainer.plan.config_hash,
        model_ref=recipe.model.name_or_path,
        parent=lineage_path(trainer.init_from, trainer.out_dir) if trainer.init_from else None,
        data=data_info,
        is_main=trainer.is_main,
    )
    recorder.start()
    extra = _manifest_extra(trainer, recipe)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
        log(f"[align] resuming ppo from {checkpoint} (iteration {trainer.iteration})")
        if trainer.is_main:
            for name in ("metrics.jsonl", "samples.jsonl"):
                _trim_jsonl(trainer.out_dir / name, trainer.iteration)
    watch = ppo_watch(recipe, trainer)  # the reward-hacking watch (align/stages/watch.py), None without one
    if watch is not None and checkpoint is not None:
        watch.restore(trainer.out_dir / "metrics.jsonl", trainer.iteration)
    if trainer.trackers:
        acc.init_trackers(recipe.run.wandb_project, config=redact(to_plain(recipe)))  # as config.yaml: no secrets
    last: dict[str, Any] = {}
    bar = tqdm(total=cfg.num_iterations, initial=trainer.iteration, desc="ppo", disable=not trainer.is_main)
    try:
        while trainer.iteration < cfg.num_iterations:
            metrics, ro = trainer.step()
            it = trainer.iteration
            observe_ppo_iteration(watch, trainer, ro, metrics)
            recorder.log(metrics, step=it)
            if trainer.trackers:
                acc.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=it)
            if trainer.is_main and cfg.sample_every and it % cfg.sample_every == 0:
                _write_samples(trainer.out_dir / "samples.jsonl", it, trainer, ro, cfg.sample_count)
            if cfg.save_every and it % cfg.save_every == 0 and it < cfg.num_iterations:
                trainer.save_checkpoint()
            last = metrics
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", kl=f"{metrics['kl']:.3f}")
            for cb in callbacks or []:
                cb(it, metrics)
            if watch is not None and watch.should_stop:
                break
        bar.close()
        trainer.save_final()
    except BaseException as e:
        bar.close()
        recorder.finish(last, status="failed", error=f"{type(e).__name__}: {e}", **extra)
        raise
    if watch is not None:
        extra["watch"] = watch.finish(recipe.STAGE)
    final = {k: v for k, v in last.items() if isinstance(v, (int, float))}
    model_dir = lineage_path(trainer.out_dir / "model", trainer.out_dir)
    recorder.finish(final, status="complete", model_dir=model_dir, **extra)
    if trainer.trackers:
        acc.end_training()
    if trainer.is_main:
        common.write_stage_card(trainer.out_dir, recipe.STAGE)  # the same card every stage's finish step writes
    log(f"[align] ppo complete: {trainer.out_dir}")
    return trainer.out_dir


def _clear_leftovers(out_dir: Path, fresh: bool) -> None:
    """Remove what an earlier attempt left that this one must not read or keep."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # A kill -9 while a checkpoint or the final model was written leaves its temporary directory behind (the
    # rename that publishes it never ran). Nothing reads those; without this they piled up in every run dir.
    for stale in [*(out_dir / "checkpoints").glob(".tmp-checkpoint-*"), *out_dir.glob(".tmp-model-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    if fresh:  # a fresh start: nothing of an earlier attempt may mix into this run
        for name in ("metrics.jsonl", "samples.jsonl"):
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)


def _checkpoint_to_resume(trainer: PPOTrainer, recipe: Recipe) -> Path | None:
    """The checkpoint named by run.resume (checked: complete, and a PPO one), or with run.resume=auto the newest
    complete one under ``checkpoints/``; None = start fresh."""
    checkpoint: Path | None = None
    if trainer.plan.checkpoint and recipe.run.resume not in ("auto", "never"):
        checkpoint = Path(trainer.plan.checkpoint)
        require_complete_checkpoint(checkpoint, f"run.resume={recipe.run.resume!r}")
        if not (checkpoint / STATE_FILE).is_file():
            raise ConfigError(f"run.resume={recipe.run.resume!r} is not a complete PPO checkpoint (no state.json).")
    elif recipe.run.resume == "auto":
        checkpoint = find_checkpoint(trainer.out_dir / "checkpoints", log=trainer.log)
    return checkpoint


def _manifest_extra(trainer: PPOTrainer, recipe: Recipe) -> dict[str, Any]:
    """What PPO's manifest records beside the common fields: its reward, critic and how to rebuild the policy."""
    cfg = recipe.ppo
    return {
        "reward_model": lineage_path(trainer.rm.path, trainer.out_dir) if trainer.rm else None,
        "reward_fn": recipe.reward_fn,
        "reference": recipe.reference if trainer.init_from else "base (no init_from)",
        "value_model": cfg.value_model,
        "value_init": trainer.value_init,
        "value_adapter_init": trainer.value_adapter_init,
        "reward_retokenized": bool(trainer.rm and trainer.rm.retokenize),
        "processes": trainer.accelerator.num_processes,
        # how to rebuild the policy (align.runs): base -> merge each adapter -> this stage's adapter
        "weights": lineage_weights(
            {
                "base": trainer.base_ref,
                "merged": trainer.merged_chain,
                "adapter": str(trainer.out_dir / "model"),
                "value_head": "value_head.safetensors",
                "value_adapter": CRITIC_DIR if cfg.value_model == "adapter" else None,
            },
            trainer.out_dir,
        ),
    }
