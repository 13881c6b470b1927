"""The reward-hacking watch in a training stage: score samples with a held-out judge beside the proxy reward.

Every ``watch.sample_every`` iterations the watch takes the samples the stage just scored with its proxy reward
(the reward it optimises), scores the same prompt+answer texts with a second, held-out judge (a reward-model run,
loaded through :func:`align.compare.load_judge` and so through ``align.runs.load_reward_model``; or a
``module:function``), and logs ``watch/proxy``, ``watch/judge``, ``watch/gap`` (proxy - judge) and ``watch/kl`` to
``metrics.jsonl``. The rule of :mod:`align.eval.watch` runs on the points so far; the first time it fires the watch
warns once (console and ``watch/diverged`` = 1 in the metrics) and, with ``watch.stop_on_divergence``, stops the
run (the policy as it is then is saved and the stage completes). At the end it writes ``watch.png`` (proxy vs judge
vs KL) into the run directory and a ``watch`` entry into the manifest, which the model card shows.

A reward-model judge with a ``reward_stats.json`` (the RM stage writes one from its eval split) is standardised with
it, so proxy and judge on RM-normalised scales can be read side by side; the rule itself compares slopes, not
levels. Hooks: :class:`WatchCallback` for TRL's trainers (GRPO, RLOO), and ``observe`` called from PPO's loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from align.config import ConfigError
from align.eval.judges import judge_scores, load_judge
from align.eval.watch import Divergence, WatchPoint, check_window, plot_watch

PLOT = "watch.png"
PREFIX = "watch/"


@dataclass
class WatchSection:
    """The reward-hacking watch (off unless the recipe has a ``watch`` section)."""

    judge: str | None = field(
        default=None,
        metadata={
            "help": "Held-out judge: a reward-model run (e.g. runs/<name>/judge) or module:function (prompts, "
            "responses) -> scores. Must not be the reward being optimised. A pipeline fills in its judge stage."
        },
    )
    sample_every: int = field(default=1, metadata={"help": "Score the current samples every K iterations."})
    window: int = field(
        default=4, metadata={"help": "Points (sampled iterations) the rule fits its two slopes over (>= 3)."}
    )
    confidence: float = field(
        default=0.9, metadata={"help": "One-sided confidence of each slope's interval in the rule (0.5-1)."}
    )
    stop_on_divergence: bool = field(
        default=False, metadata={"help": "Stop training (and save the policy) the first time the rule fires."}
    )
    batch_size: int = field(default=16, metadata={"help": "Judge scoring batch size."})

    def __post_init__(self) -> None:
        if self.sample_every < 1:
            raise ConfigError(f"watch.sample_every={self.sample_every}: must be >= 1.")
        if self.window < 3:
            raise ConfigError(f"watch.window={self.window}: the rule fits slopes with errors, so it needs >= 3.")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"watch.confidence={self.confidence}: use a value in [0.5, 1), e.g. 0.9.")
        if self.batch_size < 1:
            raise ConfigError(f"watch.batch_size={self.batch_size}: must be >= 1.")


def check_judge(watch: WatchSection | None, optimised: list[str]) -> None:
    """Fail at load: a watch needs a judge, and the judge must not be a reward the stage optimises."""
    if watch is None:
        return
    if not watch.judge:
        raise ConfigError(
            "watch.judge is not set: name a held-out judge, a reward-model run trained on other data (e.g. "
            "runs/<name>/judge) or a module:function; or remove the watch section."
        )
    same = [r for r in optimised if r and Path(r).expanduser().resolve() == Path(watch.judge).expanduser().resolve()]
    if same or watch.judge in optimised:
        raise ConfigError(
            f"watch.judge={watch.judge!r} is a reward this stage optimises: it would rise with the proxy and never "
            "show over-optimisation. Use a judge trained on other data (the pipeline's judge stage)."
        )


class RewardHackingWatch:
    """The watch's state across a run: judge, points, the first divergence, and the outputs (see module doc)."""

    def __init__(self, section: WatchSection, policy_tokenizer: Any, out_dir: Path, *, dtype: str = "float32",
                 device: Any = None, is_main: bool = True, log=print, reduce_mean=None,
                 settings: Any = None):  # fmt: skip
        self.cfg = section
        self.out_dir = Path(out_dir)
        self.is_main = is_main
        self.log = log if is_main else (lambda *a, **k: None)
        # settings: the stage's model section, so the judge loads as every model of the stage does
        self.judge = load_judge(section.judge, policy_tokenizer, dtype=dtype, log=self.log, settings=settings)
        scorer = self.judge.get("scorer")
        if scorer is not None and device is not None:
            scorer.model.to(device)
        stats = getattr(scorer, "stats", None) or {}
        self.judge_stats = (float(stats["mean"]), float(stats["std"])) if "mean" in stats and "std" in stats else None
        # means over every process's samples (identity in one process)
        self.reduce_mean = reduce_mean or (lambda values: values)
        self.points: list[WatchPoint] = []
        self.divergence: Divergence | None = None
        self.stopped_at: int | None = None

    def due(self, iteration: int) -> bool:
        return iteration % self.cfg.sample_every == 0 and not any(p.iteration == iteration for p in self.points)

    def judge_texts(self, prompts: list[list[dict[str, str]]], texts: list[str], ended: list[bool]) -> list[float]:
        scores = judge_scores(self.judge, prompts, texts, ended, self.cfg.batch_size)
        if self.judge_stats is not None:
            mean, std = self.judge_stats
            scores = [(s - mean) / max(std, 1e-8) for s in scores]
        return scores

    def observe(
        self,
        iteration: int,
        prompts: list[list[dict[str, str]]],
        texts: list[str],
        ended: list[bool],
        proxy: list[float],
        kl: float | None,
    ) -> dict[str, float]:
        """Score this process's samples with the judge; returns the metrics to log (equal on every process)."""
        judge = self.judge_texts(prompts, texts, ended)
        local = [sum(proxy) / max(len(proxy), 1), sum(judge) / max(len(judge), 1)]
        proxy_mean, judge_mean = (float(v) for v in self.reduce_mean(local))
        point = WatchPoint(iteration, proxy_mean, judge_mean, None if kl is None else float(kl))
        self.points.append(point)
        fired = None
        if self.divergence is None:
            fired = check_window(self.points, self.cfg.window, self.cfg.confidence)
            if fired is not None:
                self.divergence = fired
                self.log(
                    f"[align] warning: reward-hacking watch: over the last {fired.window} sampled iterations the "
                    f"proxy reward rose (slope {fired.proxy_slope:+.4g}/iteration) while the held-out judge fell "
                    f"(slope {fired.judge_slope:+.4g}/iteration), at iteration {iteration}. The policy may be "
                    "exploiting the reward model; see watch.png in the run directory."
                    + (" Stopping (watch.stop_on_divergence)." if self.cfg.stop_on_divergence else "")
                )
                if self.cfg.stop_on_divergence:
                    self.stopped_at = iteration
        out = {f"{PREFIX}{k}": v for k, v in point.to_dict().items() if k != "iteration" and v is not None}
        out[f"{PREFIX}diverged"] = 1.0 if fired is not None else 0.0
        return out

    @property
    def should_stop(self) -> bool:
        return self.stopped_at is not None

    def restore(self, metrics_file: Path, up_to: int) -> None:
        """Points of an interrupted run up to the iteration it resumes from (rows of ``metrics.jsonl``), so the
        window, the first divergence and the plot continue as if it had not stopped."""
        self.points, self.divergence, self.stopped_at = [], None, None
        if not metrics_file.is_file():
            return
        by_step: dict[int, dict[str, Any]] = {}
        for line in metrics_file.read_text().splitlines():
            row = json.loads(line)
            step = row.get("step")
            if isinstance(step, int) and step <= up_to and f"{PREFIX}proxy" in row:
                by_step[step] = row  # a later row for the same step (an earlier attempt's) replaces it
        for step in sorted(by_step):
            row = by_step[step]
            self.points.append(WatchPoint(step, row[f"{PREFIX}proxy"], row[f"{PREFIX}judge"], row.get(f"{PREFIX}kl")))
            if self.divergence is None:
                self.divergence = check_window(self.points, self.cfg.window, self.cfg.confidence)

    def finish(self, stage: str) -> dict[str, Any]:
        """Write ``watch.png`` (main process) and return the manifest's ``watch`` entry."""
        plot = None
        if self.is_main and self.points:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            title = f"{stage}: proxy vs held-out judge ({self.judge['id']})"
            plot = plot_watch(self.points, self.out_dir / PLOT, self.divergence, title).name
        return {
            "judge": self.judge["id"],
            "judge_standardised": self.judge_stats is not None,
            "sample_every": self.cfg.sample_every,
            "window": self.cfg.window,
            "confidence": self.cfg.confidence,
            "points": len(self.points),
            "diverged": self.divergence.to_dict() if self.divergence else None,
            "stopped_at": self.stopped_at,
            "plot": plot,
            "last": self.points[-1].to_dict() if self.points else None,
        }


class WatchCallback(TrainerCallback):
    """The watch on TRL's online trainers. The stage's reward terms keep the samples they scored last
    (``samples()``: prompts, texts, ended, proxy per sample); after every ``sample_every``-th optimizer step this
    scores them with the judge and logs one ``metrics.jsonl`` row at that step."""

    def __init__(self, watch: RewardHackingWatch, samples, recorder_of, metrics_file: Path):
        self.watch = watch
        self.samples = samples  # () -> (prompts, texts, ended, proxy) of the last scored batch, or None
        self.recorder_of = recorder_of  # () -> the stage's RunRecorder (made after the trainer)
        self.metrics_file = metrics_file
        self.trainer = None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resumed: the trainer state is loaded before this callback runs
            self.watch.restore(self.metrics_file, state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        batch = self.samples()
        if batch is None or not self.watch.due(step):
            return control
        prompts, texts, ended, proxy = batch
        row = self.watch.observe(step, prompts, texts, ended, proxy, kl=self._last_kl())
        recorder = self.recorder_of()
        if recorder is not None:
            recorder.log(row, step=step)
        if self.watch.should_stop:
            control.should_training_stop = True
        return control

    def _last_kl(self) -> float | None:
        # TRL keeps this step's metrics in its private ``_metrics`` until the next log line; "kl" is there when
        # beta > 0 (the mean per-token KL to the reference that TRL logs).
        values = getattr(self.trainer, "_metrics", {}).get("train", {}).get("kl") if self.trainer else None
        return float(values[-1]) if values else None


def ppo_watch(recipe: Any, trainer: Any) -> RewardHackingWatch | None:
    """The watch for align's PPO loop (``align.stages.ppo.stage``), or None when the recipe has no watch section."""
    if recipe.watch is None:
        return None
    acc = trainer.accelerator
    return RewardHackingWatch(
        recipe.watch,
        trainer.tokenizer,
        trainer.out_dir,
        dtype=recipe.model.dtype,
        device=trainer.device,
        is_main=trainer.is_main,
        log=trainer.log,
        reduce_mean=lambda values: acc.reduce(torch.tensor(values, device=acc.device), "mean").tolist(),
        settings=recipe.model,
    )


def observe_ppo_iteration(watch: RewardHackingWatch | None, trainer: Any, ro: Any, metrics: dict[str, Any]) -> None:
    """After a PPO iteration: when the watch is due, score this process's rollout with the judge beside its shaped
    scores (the proxy PPO optimises, before the KL term) and add the watch's metrics to the iteration's row."""
    if watch is None or not watch.due(trainer.iteration):
        return
    prompts = [trainer.prompts[i].prompt for i in ro.prompt_idx]
    row = watch.observe(trainer.iteration, prompts, ro.texts, ro.has_eos.tolist(), ro.scores.tolist(), metrics["kl"])
    metrics.update(row)
