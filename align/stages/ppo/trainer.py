"""The PPO loop: rollout, scoring, advantages and the clipped updates of one stage run (``PPOTrainer``)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
from torch import nn
from transformers import LogitsProcessorList

from align.config import ConfigError
from align.data.prompts import load_prompts, prompt_text
from align.eval.generation import RowSeededSampler, Sampling, left_pad, neutral_defaults
from align.reward_models import (
    RewardModelScorer,
)
from align.stages import common
from align.stages.plan import StagePlan
from align.stages.ppo import losses as pm
from align.stages.ppo.checkpoint import (
    PPOCheckpointing,
)
from align.stages.ppo.policy import (
    PolicyWithValue,
    add_value_adapter,
    build_policy,
    hidden_size,
    init_value_head,
)
from align.stages.ppo.recipe import (
    VALUE_ADAPTER,
    Recipe,
)
from align.stages.ppo.rewards import ProgrammaticReward
from align.stages.ppo.rollout import (
    Rollout,
    leading_pad_columns,
    position_ids_from_mask,
    prompt_indices,
    response_mask,
)
from align.templates import Encoder
from align.tracking import setup_trackers


def _forget_other_mixed_precision() -> None:
    """Let this process's Accelerator be created with mixed_precision="no" even when an earlier stage in the same
    process (``align pipeline``, tests) set accelerate's process-wide state up with bf16/fp16: accelerate refuses to
    change it otherwise. Only that state is cleared; the distributed process group is kept."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision", "no") != "no":
        AcceleratorState._reset_state(reset_partial_state=False)


class PPOTrainer(PPOCheckpointing):
    """Runs the iterations of one PPO stage (built by :func:`run`)."""

    def __init__(self, recipe: Recipe, plan: StagePlan, log=print):
        """Builds the run's parts in dependency order: accelerator, tokenizer, reward, policy and critic, optimizer."""
        from accelerate.utils import set_seed

        common.quiet_known_warnings()
        self.recipe, self.cfg = recipe, recipe.ppo
        trackers = setup_trackers(recipe.run.report_to, recipe.run.wandb_project)
        self.accelerator = self._make_accelerator(trackers)
        self.is_main = self.accelerator.is_main_process
        self.log = log if self.is_main else (lambda *a, **k: None)
        self.plan = plan
        self.out_dir = self.plan.out_dir
        self.device = self.accelerator.device
        self.trackers = trackers

        self.init_from = common.resolve_init_from(recipe.init_from)
        # the model the run trains from: the recipe's, or a full model directory given as init_from
        self.base_ref, self.model_path = common.base_of(recipe, self.init_from, self.log)
        self.tokenizer, self.chat_template = common.stage_tokenizer(recipe, self.init_from, self.model_path)
        self.encoder = Encoder(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id

        set_seed(recipe.run.seed)  # same LoRA / value-head initialisation on every process
        self._load_reward()
        self.model, self.optimizer = self.accelerator.prepare(*self._build_model())
        self.unwrapped: PolicyWithValue = self.accelerator.unwrap_model(self.model)
        self.params = [p for p in self.unwrapped.parameters() if p.requires_grad]
        self.clip_groups = self.unwrapped.clip_groups()

        if self.cfg.adaptive_kl:
            self.kl_ctl = pm.AdaptiveKLController(self.cfg.kl_coef, self.cfg.target_kl, self.cfg.kl_horizon)
        else:
            self.kl_ctl = pm.FixedKLController(self.cfg.kl_coef)
        self.moments = pm.RunningMoments()
        self.iteration = 0
        self.prompt_cursor = 0
        self.nonfinite_skipped = 0
        self.nonfinite_in_a_row = 0
        set_seed(recipe.run.seed, device_specific=True)  # each process samples differently
        if self.cfg.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError("ppo.bf16=true but this GPU has no bfloat16 support; set ppo.bf16=false.")

    def _make_accelerator(self, trackers: list[str]) -> Any:
        from accelerate import Accelerator
        from accelerate.utils import GradientAccumulationPlugin

        _forget_other_mixed_precision()
        # Mixed precision is PPO's own bf16 autocast (ppo.bf16): accelerate's would autocast only the prepared
        # (training) forward, so rollout and training log-probs would differ and the first ratio would not be 1.
        # An explicit plugin: the micro-batch loop below assumes exactly ppo.gradient_accumulation_steps (an
        # ACCELERATE_GRADIENT_ACCUMULATION_STEPS from `accelerate launch` must not change it), and there is no
        # prepared dataloader whose end should force a sync.
        accumulation = GradientAccumulationPlugin(
            num_steps=self.cfg.gradient_accumulation_steps, sync_with_dataloader=False
        )
        return Accelerator(
            mixed_precision="no",
            gradient_accumulation_plugin=accumulation,
            log_with=trackers or None,
            cpu=not torch.cuda.is_available(),  # without it, launched CPU processes would not join one group
        )

    def _load_reward(self) -> None:
        """The reward model (``self.rm``) or the programmatic reward (``self.reward_fn``) the rollouts are scored by."""
        recipe = self.recipe
        self.rm: RewardModelScorer | None = None
        self.reward_fn: ProgrammaticReward | None = None
        if recipe.reward_model:
            self.rm = RewardModelScorer(
                recipe.reward_model,
                self.tokenizer,
                dtype=recipe.model.dtype,
                device=self.device,
                log=self.log,
                settings=recipe.model,
            )
            if self.cfg.reward_normalization == "rm_stats" and not self.rm.stats:
                raise ConfigError(
                    f"ppo.reward_normalization=rm_stats: {self.rm.model_dir} has no reward_stats.json (the RM "
                    "stage writes it when it has an eval split). Use reward_normalization: running."
                )
        else:
            self.reward_fn = ProgrammaticReward(recipe.reward_fn, recipe.reward_fn_kwargs)

    def _build_model(self) -> tuple[PolicyWithValue, torch.optim.Optimizer]:
        """Policy (LoRA on the frozen base), value head and optional critic adapter, and their optimizer."""
        recipe = self.recipe
        policy, self.merged_chain = build_policy(self.model_path, recipe, self.init_from)
        head = nn.Linear(hidden_size(policy), 1)
        normalize = None
        if self.cfg.reward_normalization == "rm_stats":
            normalize = (float(self.rm.stats["mean"]), float(self.rm.stats["std"]))
        self.value_init = init_value_head(head, self.cfg.value_init, self.rm, log=self.log, normalize=normalize)
        self.value_adapter_init: str | None = None
        if self.cfg.value_model == "adapter":
            self.value_adapter_init = add_value_adapter(policy, recipe, self.rm, self.merged_chain, log=self.log)
        model = PolicyWithValue(policy, head, VALUE_ADAPTER if self.cfg.value_model == "adapter" else None)
        groups = model.parameter_groups()
        # trainable weights stay fp32 on a bf16/fp16 base (peft already keeps LoRA in fp32)
        for p in groups["policy"] + groups["critic"]:
            if p.dtype in (torch.bfloat16, torch.float16):
                p.data = p.data.float()
        critic_lr = self.cfg.value_learning_rate or self.cfg.learning_rate
        optimizer = torch.optim.AdamW(
            [{"params": groups["policy"]}, {"params": groups["critic"], "lr": critic_lr}], lr=self.cfg.learning_rate
        )
        return model, optimizer

    # -- helpers --------------------------------------------------------------------------------------------------

    def autocast(self):
        if not self.cfg.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @property
    def micro_batch_size(self) -> int:
        return self.cfg.mini_batch_size // self.cfg.gradient_accumulation_steps

    def _response_logprobs(self, logits: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        # logits are the last R + 1 positions; position t predicts response token t (the last one predicts nothing)
        return pm.logprobs_from_logits(logits[:, :-1] / self.cfg.temperature, responses)

    # -- data -----------------------------------------------------------------------------------------------------

    def prepare_prompts(self) -> dict[str, Any]:
        """Load, tokenize and filter the prompts; returns the manifest's data entry."""
        train, report = load_prompts(self.recipe.data)
        kept, too_long = [], []
        for p in train:
            ids = self.encoder.prompt(p.prompt)
            (kept if len(ids) <= self.cfg.max_prompt_length else too_long).append((p, ids))
        if not kept:
            raise ConfigError(
                f"All {len(train)} training prompts are longer than ppo.max_prompt_length="
                f"{self.cfg.max_prompt_length} tokens; raise it."
            )
        if too_long:
            self.log(f"[align] {len(too_long)} prompt(s) longer than ppo.max_prompt_length skipped")
        self.prompts = [p for p, _ in kept]
        self.prompt_ids = [ids for _, ids in kept]
        info = report.manifest_info(self.prompts)
        info["prompts_too_long"] = len(too_long)
        return info

    # -- rollout --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt_ids: list[list[int]], positions: list[int]) -> tuple[torch.Tensor, ...]:
        """(prompt ids, prompt mask, responses, response mask, has_eos): sampled with the KV cache, cut after EOS.

        Through the shared generation settings (align.eval.generation): only ``ppo.temperature``/``top_p``/
        ``max_new_tokens`` shape the rollout distribution, never the model's own generation_config.json, so the
        responses come from the distribution whose log-probs PPO then computes. ``positions``: each prompt's place
        in the run's prompt order; its sample is drawn from a generator seeded with it and the run's seed
        (:class:`RowSeededSampler`), so a sample is the same however many processes share the rollout batch."""
        ids, mask = left_pad(prompt_ids, self.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Greedy over the sampler's Gumbel-perturbed logits is sampling at ppo.temperature / top_p.
        gen = Sampling(max_new_tokens=self.cfg.max_new_tokens, temperature=0.0).config(self.eos_id, self.pad_id)
        seeds = [self.recipe.run.seed * 2**32 + p for p in positions]
        sampler = RowSeededSampler(seeds, self.cfg.temperature, self.cfg.top_p)
        policy = self.unwrapped.policy
        with self.autocast(), neutral_defaults(policy):
            out = policy.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=gen,
                logits_processor=LogitsProcessorList([sampler]),
            )
        responses = out[:, ids.shape[1] :]
        rmask, has_eos = response_mask(responses, self.eos_id)
        responses = torch.where(rmask, responses, torch.full_like(responses, self.pad_id))
        return ids, mask, responses, rmask, has_eos

    @torch.no_grad()
    def forward_logprobs(self, input_ids, attention_mask, position_ids, responses) -> tuple[torch.Tensor, ...]:
        """Old log-probs and values (adapter on) and reference log-probs (adapter off), in micro-batches of rows of
        similar prompt length (each trimmed of its all-padding leading columns), returned in row order."""
        R = responses.shape[1]
        n = input_ids.shape[0]
        P = input_ids.shape[1] - R
        lps = torch.zeros((n, R), device=self.device)
        refs, vals = torch.zeros_like(lps), torch.zeros_like(lps)
        order = torch.argsort(attention_mask[:, :P].sum(dim=1), stable=True)
        for s in range(0, n, self.micro_batch_size):
            rows = order[s : s + self.micro_batch_size]
            lead = leading_pad_columns(attention_mask[rows])
            ids, att, pos = (t[rows, lead:] for t in (input_ids, attention_mask, position_ids))
            with self.autocast():
                logits, values = self.unwrapped(ids, att, pos, R + 1)
            lps[rows] = self._response_logprobs(logits, responses[rows]).float()
            vals[rows] = values[:, P - lead - 1 : P - lead + R - 1].float()
            with self.unwrapped.reference() as reference, self.autocast():
                ref_logits = reference(
                    input_ids=ids, attention_mask=att, position_ids=pos, use_cache=False, logits_to_keep=R + 1
                ).logits
            refs[rows] = self._response_logprobs(ref_logits, responses[rows]).float()
        return lps, refs, vals

    def score(self, idx: list[int], responses, rmask, has_eos) -> tuple[torch.Tensor, list[str]]:
        """Raw scores of this process's responses, and the response texts (without EOS)."""
        lengths = rmask.sum(dim=1).tolist()
        resp_lists = [responses[i, : lengths[i]].tolist() for i in range(len(idx))]
        texts = self.tokenizer.batch_decode(
            [r[:-1] if bool(has_eos[i]) else r for i, r in enumerate(resp_lists)], skip_special_tokens=True
        )
        messages = [self.prompts[i].prompt for i in idx]
        if self.rm is not None:
            seqs = [self.prompt_ids[i] + r for i, r in zip(idx, resp_lists)]
            raw = self.rm(messages, seqs, texts, has_eos.tolist(), batch_size=self.micro_batch_size * 2)
        else:
            raw = self.reward_fn([prompt_text(m) for m in messages], texts)
        return torch.tensor(raw, dtype=torch.float32, device=self.device), texts

    def shape_scores(self, raw: torch.Tensor, has_eos: torch.Tensor) -> torch.Tensor:
        """Missing-EOS penalty, normalisation (running moments over every process's scores, or RM stats), clip."""
        cfg = self.cfg
        scores = raw
        if cfg.missing_eos_penalty is not None:
            scores = pm.apply_missing_eos_penalty(scores, has_eos, cfg.missing_eos_penalty)
        if cfg.reward_normalization == "running":
            self.moments.update(self.accelerator.gather(scores).cpu())
            mean, std = self.moments.mean, self.moments.std
        elif cfg.reward_normalization == "rm_stats":
            mean, std = float(self.rm.stats["mean"]), float(self.rm.stats["std"])
        elif cfg.reward_clip is None:
            return scores
        else:
            mean, std = 0.0, 1.0
        return pm.normalize_scores(scores, mean, std, cfg.reward_clip)

    def rollout(self, timings: dict[str, float]) -> Rollout:
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        B = self.cfg.rollout_batch_size
        order = prompt_indices(len(self.prompts), self.recipe.run.seed, self.prompt_cursor, B * world)
        idx = order[rank * B : (rank + 1) * B]
        positions = [self.prompt_cursor + rank * B + j for j in range(len(idx))]  # places in the run's prompt order
        t0 = time.perf_counter()
        query, qmask, responses, rmask, has_eos = self.generate([self.prompt_ids[i] for i in idx], positions)
        t1 = time.perf_counter()
        input_ids = torch.cat([query, responses], dim=1)
        attention_mask = torch.cat([qmask, rmask.long()], dim=1)
        position_ids = position_ids_from_mask(attention_mask)
        logprobs, ref_logprobs, values = self.forward_logprobs(input_ids, attention_mask, position_ids, responses)
        t2 = time.perf_counter()
        raw, texts = self.score(idx, responses, rmask, has_eos)
        scores = self.shape_scores(raw, has_eos)
        t3 = time.perf_counter()
        fill = torch.zeros((), device=self.device)
        logprobs = torch.where(rmask, logprobs, fill)
        ref_logprobs = torch.where(rmask, ref_logprobs, fill)
        values = torch.where(rmask, values, fill)
        rewards, non_score, kl = pm.token_rewards(
            scores, logprobs, ref_logprobs, rmask, self.kl_ctl.value, self.cfg.kl_estimator
        )
        advantages, returns = pm.gae(rewards, values, rmask, self.cfg.gamma, self.cfg.lam)
        if self.cfg.whiten_advantages:
            # with the whole rollout batch's mean and variance (every process's part), as one process would
            advantages = pm.masked_whiten(advantages, rmask, reduce=self._sum_over_processes)
        timings.update(generate=t1 - t0, logprobs=t2 - t1, score=t3 - t2)
        return Rollout(
            idx, input_ids, attention_mask, position_ids, query.shape[1], responses, rmask, has_eos, texts, raw,
            scores, logprobs, ref_logprobs, values, rewards, non_score, kl, advantages, returns,
        )  # fmt: skip

    # -- optimisation ---------------------------------------------------------------------------------------------

    def _zero_loss(self) -> torch.Tensor:
        # A zero that depends on every trainable weight: backward runs on every process (DDP needs the same
        # collectives everywhere) and leaves zero gradients; the step is then skipped.
        return sum(p.sum() * 0.0 for p in self.params)

    def train_on(self, ro: Rollout) -> dict[str, float]:
        """``ppo_epochs`` passes over the rollout in shuffled minibatches; the mean of each minibatch's statistics.

        Stops early (the rest of the epoch and all later ones) when a minibatch's approximate KL, averaged over the
        processes, exceeds ``approx_kl_stop``."""
        cfg, acc = self.cfg, self.accelerator
        batch_size = ro.responses.shape[0]
        gen = torch.Generator().manual_seed(self.recipe.run.seed * 7919 + self.iteration * 104729 + acc.process_index)
        sums: dict[str, float] = {}
        n_minibatches = 0
        stopped = False
        self._first_ratio: float | None = None  # before any update: must be 1 (rollout and training forwards agree)
        for _epoch in range(cfg.ppo_epochs):
            perm = torch.randperm(batch_size, generator=gen).to(self.device)
            for start in range(0, batch_size, cfg.mini_batch_size):
                mb_stats = self._train_minibatch(ro, perm[start : start + cfg.mini_batch_size])
                n_minibatches += 1
                for k, v in mb_stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                stopped = cfg.approx_kl_stop is not None and self._mean_over_processes(mb_stats["approx_kl"]) > float(
                    cfg.approx_kl_stop
                )
                if stopped:
                    break
            if stopped:
                break
        out = {k: v / max(n_minibatches, 1) for k, v in sums.items()}
        out.update(
            {"ppo/minibatches": n_minibatches, "ppo/early_stopped": int(stopped), "ratio_first": self._first_ratio}
        )
        return out

    def _sum_over_processes(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the processes (each holds a part of the rollout batch): whitening and explained variance
        then use the whole batch's statistics, and two processes compute what one holding the batch would."""
        return self.accelerator.reduce(t, "sum")

    def _mean_over_processes(self, value: float) -> float:
        return float(self.accelerator.reduce(torch.tensor(value, device=self.device), "mean"))

    def _train_minibatch(self, ro: Rollout, mb_idx: torch.Tensor) -> dict[str, float]:
        """One optimizer step over the minibatch ``mb_idx``, accumulated over micro-batches; its statistics, each
        averaged over the accumulation steps, plus the gradient norms of the step."""
        acc = self.accelerator
        nonfinite = torch.zeros((), device=self.device)  # micro-batches whose loss was not finite
        mb_stats: dict[str, float] = {}
        for start in range(0, len(mb_idx), self.micro_batch_size):
            micro_idx = mb_idx[start : start + self.micro_batch_size]
            with acc.accumulate(self.model):
                loss, stats = self._micro_batch_loss(ro, micro_idx)
                if not torch.isfinite(loss.detach()):
                    nonfinite += 1
                    loss = self._zero_loss()
                acc.backward(loss)
                stats = {
                    "loss/policy": stats.pop("loss/policy"),
                    "loss/value": stats.pop("loss/value"),
                    "loss/total": loss,
                    **stats,
                }
                for k, v in stats.items():
                    mb_stats[k] = mb_stats.get(k, 0.0) + float(v.detach()) / self.cfg.gradient_accumulation_steps
                if self._first_ratio is None:
                    self._first_ratio = float(stats["ratio_mean"])
                if acc.sync_gradients:
                    mb_stats.update({f"grad_norm/{k}": v for k, v in self._step(nonfinite).items()})
        return mb_stats

    def _micro_batch_loss(self, ro: Rollout, micro_idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The PPO loss on rows ``micro_idx``: clipped policy loss + vf_coef * clipped value loss - entropy_coef *
        entropy, with the statistics logged for it (``loss/total`` is added by the caller)."""
        cfg = self.cfg
        n_resp, prompt_width = ro.responses.shape[1], ro.prompt_width
        lead = leading_pad_columns(ro.attention_mask[micro_idx])  # pad columns every row of this batch shares
        with self.autocast():
            logits, values = self.model(
                ro.input_ids[micro_idx, lead:],
                ro.attention_mask[micro_idx, lead:],
                ro.position_ids[micro_idx, lead:],
                n_resp + 1,
            )
        mask = ro.mask[micro_idx]
        new_logprobs = self._response_logprobs(logits, ro.responses[micro_idx])
        first = prompt_width - lead - 1  # the value of the state before the first response token
        new_values = values[:, first : first + n_resp].float()
        pg_loss, pg_stats = pm.policy_loss(
            new_logprobs, ro.logprobs[micro_idx], ro.advantages[micro_idx], mask, cfg.cliprange
        )
        v_loss, v_stats = pm.value_loss(
            new_values, ro.values[micro_idx], ro.returns[micro_idx], mask, cfg.cliprange_value
        )
        with torch.set_grad_enabled(cfg.entropy_coef > 0):
            entropy = pm.masked_mean(pm.entropy_from_logits(logits[:, :-1] / cfg.temperature), mask)
        loss = pg_loss + cfg.vf_coef * v_loss - cfg.entropy_coef * entropy
        stats = {
            "loss/policy": pg_loss,
            "loss/value": v_loss,
            "entropy": entropy,
            "approx_kl": pg_stats["approx_kl"],
            "clipfrac": pg_stats["clipfrac"],
            "ratio_mean": pg_stats["ratio_mean"],
            "vf_clipfrac": v_stats["vf_clipfrac"],
        }
        return loss, stats

    def _step(self, bad: torch.Tensor) -> dict[str, float]:
        """Clip each group's gradients, step, and return each group's norm before clipping ({} when skipped)."""
        acc = self.accelerator
        skip = float(acc.reduce(bad, "sum")) > 0
        norms: dict[str, float] = {}
        if not skip:
            for name, group in self.clip_groups.items():
                norms[name] = float(acc.clip_grad_norm_(group, self.cfg.max_grad_norm))
            skip = not all(math.isfinite(v) for v in norms.values())
        if skip:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_skipped += 1
            self.nonfinite_in_a_row += 1
            self.log(f"[align] warning: non-finite loss or gradient at iteration {self.iteration + 1}; step skipped")
            if self.nonfinite_in_a_row >= self.recipe.run.max_nonfinite_steps:
                raise common.NonFiniteError(
                    f"{self.nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient "
                    f"(iteration {self.iteration + 1}). The last complete checkpoint is kept. Lower "
                    "ppo.learning_rate, normalise or clip the rewards (ppo.reward_normalization, ppo.reward_clip), "
                    "or check the reward for extreme values."
                )
            return {}
        self.nonfinite_in_a_row = 0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norms

    # -- one iteration --------------------------------------------------------------------------------------------

    def step(self) -> tuple[dict[str, Any], Rollout]:
        """One PPO iteration; returns its metrics (reduced over processes) and this process's rollout."""
        acc = self.accelerator
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        ro = self.rollout(timings)
        kl_coef = self.kl_ctl.value
        t0 = time.perf_counter()
        train_stats = self.train_on(ro)
        timings["train"] = time.perf_counter() - t0

        lengths = ro.mask.sum(dim=1).float()
        per_sample = torch.stack(
            [ro.raw_scores, ro.scores, ro.non_score_reward, ro.kl.sum(dim=1), lengths, ro.has_eos.float()], dim=1
        )
        g = acc.gather(per_sample).cpu()
        raw, scores, non_score, kl_sum, lens, eos = g.unbind(dim=1)
        local = {
            "explained_variance": pm.explained_variance(
                ro.values, ro.returns, ro.mask, reduce=self._sum_over_processes
            ),
            **train_stats,
            **{f"time/{k}": v for k, v in timings.items()},
        }
        keys = sorted(local)
        vec = torch.tensor([float(local[k]) for k in keys], dtype=torch.float64, device=self.device)
        vec = acc.reduce(vec, "mean").cpu().tolist()
        reduced = dict(zip(keys, vec))
        self.kl_ctl.update(kl_sum.mean(), n_steps=int(g.shape[0]))
        self.iteration += 1
        self.prompt_cursor += self.cfg.rollout_batch_size * acc.num_processes
        total = time.perf_counter() - t_start
        metrics: dict[str, Any] = {
            "iteration": self.iteration,
            "reward/mean": raw.mean().item(),
            "reward/std": raw.std().item() if raw.numel() > 1 else 0.0,
            "reward/shaped_mean": scores.mean().item(),
            "reward/non_score": non_score.mean().item(),
            "reward/total": (scores + non_score).mean().item(),
            "kl": kl_sum.mean().item(),
            "kl_coef": kl_coef,
            "kl_coef_next": self.kl_ctl.value,
            "response_length/mean": lens.mean().item(),
            "eos_rate": eos.mean().item(),
            # processes generate in parallel: all tokens over the mean generation time
            "rollout_tokens_per_s": lens.sum().item() / max(reduced["time/generate"], 1e-9),
            "nonfinite_steps_skipped": self.nonfinite_skipped,
            "time/iteration": total,
        }
        metrics.update(reduced)
        for k in ("generate", "logprobs", "score", "train"):
            metrics[f"time/{k}_frac"] = reduced[f"time/{k}"] / max(total, 1e-9)
        return metrics, ro
