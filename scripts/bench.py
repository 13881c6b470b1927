"""Throughput of every stage against the hardware's limit and against TRL's defaults, in one process and run.

    python scripts/bench.py            # SmolLM2-135M-Instruct + bundled data (about 5-8 minutes on 2 CPU cores)
    python scripts/bench.py --quick    # the tiny model: checks the bench itself in seconds

Measures, on the machine it runs on:
- the matmul peak in fp32 and bf16 (median of square matmuls after warm-up);
- SFT, reward model and DPO as align runs them (the shipped SmolLM2 recipes: bf16 base weights with bf16
  autocast where the hardware has it, no activation checkpointing, length-grouped batches, DPO reference log-probs
  precomputed): non-padding tokens/s (median over steps after warm-up) and model FLOPs as a fraction of the measured
  peak of the dtype in use;
- TRL's DPOTrainer with its default settings on the same data and batch (TRL tokenizes the same conversational
  records itself);
- PPO: rollout tokens/s and the generation / scoring / training split of an iteration;
- GRPO and RLOO as align runs them (the shipped recipes with a programmatic reward) and TRL's GRPOTrainer /
  RLOOTrainer with their default settings on the same prompts, reward, LoRA, batch, answers per prompt and answer
  length: rollout (generated) tokens/s and the generate / log-probs / score / train split of an iteration (one
  optimizer step; TRL's trainers get timing hooks only);
- generation: plain ``model.generate`` at batch 16/32/64 against align's generation path on the eval prompts;
- the process's peak resident memory after each stage (CPU) or peak CUDA memory (GPU).

FLOPs per non-padding token (P = parameters in matmuls: every linear layer, the LM head included):
forward 2P; the LoRA backward about 2P (gradients flow through the frozen weights to the adapters, no weight
gradients for them); a live reference model another 2P; activation checkpointing another forward, 2P. align's DPO
counts 4P per step plus the precomputation (2P per token, once) amortised over one epoch and reported apart.
Writes bench.json and bench.md (a markdown table) in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def matmul_gflops(dtype_name: str, n: int, reps: int = 5) -> float:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    times = []
    for i in range(reps + 2):
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        (a @ b).sum().item()
        if dev == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def matmul_params(model: Any) -> int:
    """Parameters used in matmuls per token: every nn.Linear (the LM head too, even when tied to the embeddings)."""
    import torch

    seen, total = set(), 0
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            w = m.weight
            key = (id(m), w.data_ptr())
            if key not in seen:
                seen.add(key)
                total += w.numel()
    return total


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepTimer:
    """Trainer callback: wall time and non-padding tokens of each optimizer step."""

    def __new__(cls, *a, **kw):
        from transformers import TrainerCallback

        class _Timer(TrainerCallback):
            def __init__(self):
                self.t0 = None
                self.tokens0 = 0
                self.steps: list[tuple[float, int]] = []
                self.params = None

            def on_train_begin(self, args, state, control, model=None, **kw):
                self.params = matmul_params(model)

            def on_step_begin(self, args, state, control, **kw):
                self.t0 = time.perf_counter()
                self.tokens0 = state.num_input_tokens_seen

            def on_step_end(self, args, state, control, **kw):
                self.steps.append((time.perf_counter() - self.t0, state.num_input_tokens_seen - self.tokens0))

        return _Timer()


def summarise(timer: Any, warmup: int, flops_factor: float, peak_gflops: float) -> dict[str, Any]:
    measured = timer.steps[warmup:] or timer.steps
    tps = statistics.median(tok / dt for dt, tok in measured)
    return {
        "tokens_per_s": round(tps, 1),
        "step_seconds_median": round(statistics.median(dt for dt, _ in measured), 3),
        "tokens_per_step_median": statistics.median(tok for _, tok in measured),
        "steps_measured": len(measured),
        "flops_per_token": f"{flops_factor:g}P",
        "params_in_matmuls": timer.params,
        "peak_fraction": round(tps * flops_factor * timer.params / (peak_gflops * 1e9), 4),
    }


def stage_recipe(stage: str, quick: bool, root: str, steps: int, batch: int, extra: list[str]) -> Any:
    import importlib

    from align.config import load_recipe

    module = importlib.import_module(
        {"sft": "align.stages.sft", "rm": "align.stages.reward", "dpo": "align.stages.dpo"}[stage]
    )
    path = ROOT / "recipes" / ("tiny" if quick else "smollm2-135m") / f"{stage}.yaml"
    rows = batch * steps + 8
    overrides = [
        f"run.root={root}",
        "run.name=bench",
        f"training.max_steps={steps}",
        "training.eval_strategy=no",
        "training.save_strategy=no",
        f"training.per_device_train_batch_size={batch}",
        "training.include_num_input_tokens_seen=non_padding",
        "training.disable_tqdm=true",
        f"data.sources.0.max_rows={rows}",
        "data.eval_fraction=0.0",
        "data.max_drop_fraction=0.5",
        "init_from=null",
        *extra,
    ]
    if stage == "sft":
        overrides = [o for o in overrides if not o.startswith("init_from")]
    return module, load_recipe(module.Recipe, path, overrides)


def uses_bf16(recipe: Any) -> bool:
    return bool(recipe.training.bf16) or recipe.model.dtype == "bfloat16"


class PrecomputeClock:
    """Times DPO's reference log-prob precomputation (done once, before training) and counts its tokens."""

    def __init__(self):
        self.seconds = 0.0
        self.tokens = 0

    def __enter__(self):
        from align.stages.dpo import PreTokenizedDPOTrainer

        self.cls = PreTokenizedDPOTrainer
        self.real = PreTokenizedDPOTrainer._precompute_ref_logps
        clock = self

        def timed(trainer, dataset, name, batch_size):
            t = time.perf_counter()
            out = clock.real(trainer, dataset, name, batch_size)
            clock.seconds += time.perf_counter() - t
            clock.tokens += sum(
                len(p) + len(c) + len(r) + len(p)
                for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
            )
            return out

        self.cls._precompute_ref_logps = timed
        return self

    def __exit__(self, *exc):
        self.cls._precompute_ref_logps = self.real


def bench_stage(stage: str, args: argparse.Namespace, peaks: dict[str, float], root: str) -> dict[str, Any]:
    module, recipe = stage_recipe(stage, args.quick, root, args.warmup + args.steps, args.batch, [])
    timer = StepTimer()
    t0 = time.perf_counter()
    clock = PrecomputeClock()
    with clock:
        module.run(recipe, callbacks=[timer])
    dtype = "bf16" if uses_bf16(recipe) else "fp32"
    out = summarise(timer, args.warmup, 4.0, peaks[dtype])
    out.update(dtype=dtype, wall_seconds=round(time.perf_counter() - t0, 1), peak_memory_mb=round(peak_memory_mb()))
    if stage == "dpo":
        out["precompute_ref_log_probs"] = bool(recipe.training.precompute_ref_log_probs)
        if clock.tokens:
            # Charge each trained token its share of the one-off reference pass (one epoch over the same data).
            out["precompute_seconds"] = round(clock.seconds, 2)
            out["tokens_per_s_amortized"] = round(1.0 / (1.0 / out["tokens_per_s"] + clock.seconds / clock.tokens), 1)
    return out


def bench_trl_default_dpo(args: argparse.Namespace, peaks: dict[str, float], root: str) -> dict[str, Any]:
    """TRL's DPOTrainer with its defaults (only what a run must say: output dir, CPU, step count, logging)."""
    from trl import DPOConfig, DPOTrainer

    from align.data.prepare import prepare_preferences
    from align.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
    from align.stages.common import to_dataset

    _, recipe = stage_recipe("dpo", args.quick, root, args.warmup + args.steps, args.batch, [])
    data = prepare_preferences(recipe.data, recipe.agreement)
    rows = [{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in data.train]
    path = resolve_model_path(recipe.model.name_or_path)
    tok = load_tokenizer(path)
    model = load_causal_lm(path)  # TRL's default: the checkpoint's fp32 weights
    import torch

    cfg = DPOConfig(
        output_dir=str(Path(root) / "trl-default"),
        use_cpu=not torch.cuda.is_available(),
        max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch,
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=cfg,
        train_dataset=to_dataset(rows),
        processing_class=tok,
        peft_config=lora_config(recipe.lora, "CAUSAL_LM"),
    )
    timer = StepTimer()
    trainer.add_callback(timer)
    t0 = time.perf_counter()
    trainer.train()
    dtype = "bf16" if cfg.bf16 else "fp32"
    factor = 6.0 + (2.0 if cfg.gradient_checkpointing else 0.0)  # live reference, recomputed forward
    out = summarise(timer, args.warmup, factor, peaks[dtype])
    out.update(
        dtype=dtype,
        wall_seconds=round(time.perf_counter() - t0, 1),
        peak_memory_mb=round(peak_memory_mb()),
        settings={
            "bf16": cfg.bf16,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "precompute_ref_log_probs": cfg.precompute_ref_log_probs,
            "train_sampling_strategy": cfg.train_sampling_strategy,
            "model_dtype": "float32",
        },
    )
    return out


def bench_ppo(args: argparse.Namespace, root: str) -> dict[str, Any] | None:
    """One warm-up and a few PPO iterations with a programmatic reward; the split comes from PPO's own metrics."""
    import importlib

    from align.config import load_recipe

    path = ROOT / "recipes" / ("tiny" if args.quick else "smollm2-135m") / "ppo.yaml"
    if not path.is_file():
        return None
    module = importlib.import_module("align.stages.ppo")
    recipe = load_recipe(
        module.Recipe,
        path,
        [
            f"run.root={root}",
            "run.name=bench",
            "init_from=null",
            "reward_model=null",
            "reward_fn=align.stages.ppo:reward_contains",
            "ppo.reward_normalization=running",  # the recipe's rm_stats and value_init need its reward model
            "ppo.value_init=zero",
            f"ppo.num_iterations={1 + args.ppo_iterations}",
        ],
    )
    t0 = time.perf_counter()
    out_dir = module.run(recipe)
    rows = [json.loads(x) for x in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in rows if "time/generate" in r][1:] or [r for r in rows if "time/generate" in r]

    def med(key: str) -> float | None:
        vals = [r[key] for r in iters if isinstance(r.get(key), (int, float))]
        return round(statistics.median(vals), 3) if vals else None

    gen, score, train = med("time/generate"), med("time/score"), med("time/train")
    total = sum(x for x in (gen, score, train) if x)
    return {
        "rollout_tokens_per_s": med("rollout_tokens_per_s"),
        "iteration_seconds": {"generate": gen, "score": score, "train": train},
        "split": {
            k: round(v / total, 3) for k, v in (("generate", gen), ("score", score), ("train", train)) if v and total
        },
        "iterations_measured": len(iters),
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "peak_memory_mb": round(peak_memory_mb()),
    }


ONLINE_REWARD = "align.stages.ppo:reward_contains"


def _online_split(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the measured iterations of the timing keys both online rows log (align's stage or the hooks)."""

    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return round(statistics.median(vals), 4) if vals else None

    gen, score, rollout, train = med("time/generate"), med("time/score"), med("time/rollout"), med("time/train")
    parts = {"generate": gen, "logprobs": round(rollout - gen - score, 4), "score": score, "train": train}
    total = sum(parts.values())
    tokens_per_s = med("rollout_tokens_per_s")
    return {
        "rollout_tokens_per_s": None if tokens_per_s is None else round(tokens_per_s, 1),
        "iteration_seconds": parts,
        "step_seconds_median": round(total, 4),
        "split": {k: round(v / total, 3) for k, v in parts.items()} if total else {},
        "iterations_measured": len(rows),
    }


# Both online rows start from the plain base model with a programmatic reward: no run directory or reward model
# needed, so the bench runs on a clean machine, and TRL's row gets exactly the same prompts and reward.
ONLINE_OVERRIDES = [
    "init_from=null",
    "reward_model=null",
    f"reward_fn={ONLINE_REWARD}",
    "reward_fn_kwargs={target: e}",
    "rewards=[]",
    "watch=null",
    "online.reward_normalization=none",
]


def bench_online(stage: str, args: argparse.Namespace, root: str) -> dict[str, Any]:
    """align's GRPO or RLOO on the shipped recipe with a programmatic reward (no init_from, reward model or watch, so
    it runs from a clean machine); the split comes from the stage's own metrics."""
    import importlib

    from align.config import load_recipe

    module = importlib.import_module(f"align.stages.{stage}")
    path = ROOT / "recipes" / ("tiny" if args.quick else "smollm2-135m") / f"{stage}.yaml"
    recipe = load_recipe(
        module.Recipe,
        path,
        [
            f"run.root={root}",
            "run.name=bench",
            *ONLINE_OVERRIDES,
            f"training.max_steps={args.warmup + args.online_steps}",
            "training.save_strategy=no",
            "training.disable_tqdm=true",
        ],
    )
    t0 = time.perf_counter()
    out_dir = module.run(recipe)
    rows = [json.loads(x) for x in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "time/rollout" in r][args.warmup :]
    out = _online_split(rows)
    t = recipe.training
    out.update(
        settings={
            "model_dtype": recipe.model.dtype,
            "bf16": t.bf16,
            "gradient_checkpointing": t.gradient_checkpointing,
            "per_device_train_batch_size": t.per_device_train_batch_size,
            "num_generations": t.num_generations,
            "max_completion_length": t.max_completion_length,
        },
        wall_seconds=round(time.perf_counter() - t0, 1),
        peak_memory_mb=round(peak_memory_mb()),
    )
    return out


def bench_trl_default_online(stage: str, args: argparse.Namespace, root: str, ours: dict[str, Any]) -> dict[str, Any]:
    """TRL's GRPOTrainer / RLOOTrainer with their defaults (only what a run must say, and what makes the work the
    same as align's row: batch, answers per prompt, answer length, LoRA), on the same prompts and reward. TRL
    tokenizes the conversational prompts itself. A subclass adds timing hooks and nothing else."""
    import importlib

    import torch
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from align.config import load_recipe
    from align.data.prompts import load_prompts, prompt_text
    from align.models import load_causal_lm, load_tokenizer, lora_config, resolve_model_path
    from align.stages.common import to_dataset
    from align.stages.ppo.rewards import ProgrammaticReward

    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[stage]
    path = ROOT / "recipes" / ("tiny" if args.quick else "smollm2-135m") / f"{stage}.yaml"
    module = importlib.import_module(f"align.stages.{stage}")
    recipe = load_recipe(module.Recipe, path, ONLINE_OVERRIDES)
    train, _ = load_prompts(recipe.data)
    reward = ProgrammaticReward(ONLINE_REWARD, {"target": "e"})
    timing: dict[str, list[float]] = {}
    spent = {"score": 0.0, "generate": 0.0, "tokens": 0}

    def reward_contains(prompts, completions, **kw):
        t = time.perf_counter()
        scores = reward([prompt_text(p) for p in prompts], [c[-1]["content"] for c in completions])
        spent["score"] += time.perf_counter() - t
        spent["tokens"] += sum(len(c) for c in kw["completion_ids"])
        return scores

    class Timed(trainer_cls):
        def _generate_single_turn(self, *a, **kw):
            t = time.perf_counter()
            out = super()._generate_single_turn(*a, **kw)
            spent["generate"] += time.perf_counter() - t
            return out

        def _generate_and_score_completions(self, inputs):
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            timing.setdefault("time/rollout", []).append(time.perf_counter() - t)
            timing.setdefault("time/generate", []).append(spent["generate"])
            timing.setdefault("time/score", []).append(spent["score"])
            timing.setdefault("rollout_tokens_per_s", []).append(spent["tokens"] / max(spent["generate"], 1e-9))
            spent.update(score=0.0, generate=0.0, tokens=0)
            return out

        def training_step(self, model, inputs, num_items_in_batch):
            t, n = time.perf_counter(), len(timing.get("time/rollout", []))
            out = super().training_step(model, inputs, num_items_in_batch)
            rollout = timing["time/rollout"][-1] if len(timing.get("time/rollout", [])) > n else 0.0
            timing.setdefault("time/train", []).append(time.perf_counter() - t - rollout)
            return out

    model_path = resolve_model_path(recipe.model.name_or_path)
    s = ours["settings"]
    cfg = config_cls(
        output_dir=str(Path(root) / f"{stage}-trl-default"),
        use_cpu=not torch.cuda.is_available(),
        max_steps=args.warmup + args.online_steps,
        per_device_train_batch_size=s["per_device_train_batch_size"],
        num_generations=s["num_generations"],
        max_completion_length=s["max_completion_length"],
        save_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = Timed(
        model=load_causal_lm(model_path),  # TRL's default: the checkpoint's fp32 weights
        reward_funcs=[reward_contains],
        args=cfg,
        train_dataset=to_dataset([{"prompt": p.prompt} for p in train]),
        processing_class=load_tokenizer(model_path),
        peft_config=lora_config(recipe.lora, "CAUSAL_LM"),
    )
    t0 = time.perf_counter()
    trainer.train()
    n = min(len(v) for v in timing.values())
    rows = [{k: v[i] for k, v in timing.items()} for i in range(n)][args.warmup :]
    out = _online_split(rows)
    out.update(
        settings={
            "model_dtype": "float32",
            "bf16": cfg.bf16,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "temperature": cfg.temperature,
            "beta": cfg.beta,
        },
        wall_seconds=round(time.perf_counter() - t0, 1),
        peak_memory_mb=round(peak_memory_mb()),
    )
    return out


def bench_generation(args: argparse.Namespace) -> dict[str, Any]:
    """Greedy new tokens/s on the bundled eval prompts: plain ``model.generate`` at batch 16/32/64 (prompts in file
    order, the usual left-padded batches) against align's generation path (align.eval.generation: length-sorted
    batches, neutral settings), which compare, pairs and PPO share. Same model, dtype, prompts and length."""
    import torch

    from align.eval.compare import load_prompt_records
    from align.eval.generation import Sampling, generate, left_pad
    from align.models import load_causal_lm, load_tokenizer, resolve_model_path
    from align.templates import Encoder

    model_ref = "builtin:tiny-llama" if args.quick else "builtin:smollm2-135m-instruct"
    dtype = "float32" if args.quick else "bfloat16"
    path = resolve_model_path(model_ref, log=lambda *a: None)
    model, tok = load_causal_lm(path, dtype=dtype).eval(), load_tokenizer(path)
    prompts = [r.prompt for r in load_prompt_records("builtin:bundled-eval-prompts", args.gen_prompts)]
    ids = [Encoder(tok).prompt(p) for p in prompts]
    new = args.gen_tokens
    out: dict[str, Any] = {"model": model_ref, "dtype": dtype, "prompts": len(ids), "max_new_tokens": new}

    def plain(batch: int) -> float:
        t, made = time.perf_counter(), 0
        for i in range(0, len(ids), batch):
            x, m = left_pad(ids[i : i + batch], tok.pad_token_id)
            with torch.no_grad():
                y = model.generate(input_ids=x, attention_mask=m, do_sample=False, max_new_tokens=new)
            made += int((y[:, x.shape[1] :] != tok.pad_token_id).sum())
        return made / (time.perf_counter() - t)

    for batch in (16, 32, 64):
        out[f"plain_batch_{batch}"] = round(plain(batch), 1)
    t = time.perf_counter()
    samples = generate(model, tok, ids, Sampling(max_new_tokens=new), batch_size=64)
    out["align_batch_64"] = round(sum(len(s.response_ids) for s in samples) / (time.perf_counter() - t), 1)
    best = max(out[f"plain_batch_{b}"] for b in (16, 32, 64))
    out["ratio_to_best_plain"] = round(out["align_batch_64"] / best, 2)
    return out


def machine() -> dict[str, Any]:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        try:
            flags = Path("/proc/cpuinfo").read_text()
            info["cpu"] = next(x.split(":", 1)[1].strip() for x in flags.splitlines() if x.startswith("model name"))
            info["avx512_bf16"] = "avx512_bf16" in flags
        except (OSError, StopIteration):
            pass
    return info


def table(res: dict[str, Any]) -> str:
    lines = [
        "| stage | tokens/s | dtype | FLOPs/token | fraction of peak | step s (median) | peak memory MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("sft", "rm", "dpo", "dpo_trl_default"):
        r = res.get("stages", {}).get(name)
        if r:
            lines.append(
                f"| {name} | {r['tokens_per_s']} | {r['dtype']} | {r['flops_per_token']} | "
                f"{r['peak_fraction'] * 100:.1f}% | {r['step_seconds_median']} | {r['peak_memory_mb']} |"
            )
    dpo = res["stages"].get("dpo", {})
    peak = f"matmul peak: fp32 {res['matmul_gflops']['fp32']:.0f} GFLOP/s, bf16 {res['matmul_gflops']['bf16']:.0f} GFLOP/s."
    if "speedup_vs_trl_default" in dpo:  # only when the dpo and trl stages were benched
        peak += (
            f" DPO vs TRL defaults: {dpo['speedup_vs_trl_default']}x tokens/s with align's reference precomputation "
            f"charged ({dpo.get('precompute_seconds', 0)} s, amortised {dpo.get('tokens_per_s_amortized', '-')} "
            f"tokens/s), {dpo.get('speedup_vs_trl_default_per_step', 'n/a')}x per training step."
        )
    lines += ["", peak]
    for stage in ("grpo", "rloo"):
        r, d = res["stages"].get(stage), res["stages"].get(f"{stage}_trl_default")
        if r:
            line = (
                f"{stage.upper()}: {r['rollout_tokens_per_s']} rollout tokens/s; iteration {r['step_seconds_median']} s "
                f"split {r['split']}"
            )
            if d:
                line += (
                    f"; TRL defaults on the same data: {d['rollout_tokens_per_s']} rollout tokens/s, iteration "
                    f"{d['step_seconds_median']} s split {d['split']} (align {r.get('speedup_vs_trl_default')}x per "
                    "iteration)"
                )
            lines.append(line + ".")
    ppo = res["stages"].get("ppo")
    if ppo:
        lines.append(
            f"PPO: {ppo['rollout_tokens_per_s']} rollout tokens/s; iteration split {ppo['split']} "
            f"(seconds {ppo['iteration_seconds']})."
        )
    gen = res.get("generation")
    if gen:
        lines.append(
            f"Generation ({gen['prompts']} eval prompts, greedy, {gen['max_new_tokens']} new tokens, {gen['dtype']}): "
            f"plain generate {gen['plain_batch_16']} / {gen['plain_batch_32']} / {gen['plain_batch_64']} new tokens/s "
            f"at batch 16 / 32 / 64; align's path {gen['align_batch_64']} at batch 64 "
            f"({gen['ratio_to_best_plain']}x the best plain batch)."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model (checks the bench in seconds)")
    p.add_argument("--steps", type=int, default=3, help="measured optimizer steps per stage")
    p.add_argument("--warmup", type=int, default=1, help="warm-up steps (not measured)")
    p.add_argument("--batch", type=int, default=8, help="per-device batch size for every stage")
    p.add_argument("--ppo-iterations", type=int, default=2, help="measured PPO iterations")
    p.add_argument("--online-steps", type=int, default=3, help="measured GRPO/RLOO iterations (optimizer steps)")
    p.add_argument(
        "--stages",
        default="sft,rm,dpo,trl,ppo,grpo,rloo,gen",
        help="comma list of sft, rm, dpo, trl, ppo, grpo, rloo, gen (trl adds TRL-default rows for dpo, grpo, rloo)",
    )
    p.add_argument("--gen-prompts", type=int, default=120, help="eval prompts for the generation bench")
    p.add_argument("--gen-tokens", type=int, default=64, help="new tokens per answer in the generation bench")
    p.add_argument("--out", default=".", help="directory for bench.json and bench.md")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    import datasets

    datasets.disable_progress_bars()
    stages = set(args.stages.split(","))
    n = 1024 if args.quick else 2048
    t_all = time.perf_counter()
    res: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["python scripts/bench.py", *(argv or sys.argv[1:])]),
        "model": "builtin:tiny-llama" if args.quick else "builtin:smollm2-135m-instruct",
        "batch": args.batch,
        "matmul_gflops": {"fp32": round(matmul_gflops("fp32", n), 1), "bf16": round(matmul_gflops("bf16", n), 1)},
        "stages": {},
    }
    peaks = res["matmul_gflops"]
    with tempfile.TemporaryDirectory(prefix="align-bench-") as root:
        for stage in ("sft", "rm", "dpo"):
            if stage in stages:
                print(f"[bench] {stage}", file=sys.stderr, flush=True)
                res["stages"][stage] = bench_stage(stage, args, peaks, root)
        if "trl" in stages and ("dpo" in stages or not stages & {"grpo", "rloo"}):  # TRL's DPO row only beside ours
            print("[bench] dpo with TRL defaults", file=sys.stderr, flush=True)
            res["stages"]["dpo_trl_default"] = bench_trl_default_dpo(args, peaks, root)
            if "dpo" in res["stages"]:
                ours, theirs = res["stages"]["dpo"], res["stages"]["dpo_trl_default"]
                ours["trl_default_tokens_per_s"] = theirs["tokens_per_s"]
                # The headline counts align's one-off reference precomputation against it (one epoch).
                mine = ours.get("tokens_per_s_amortized", ours["tokens_per_s"])
                ours["speedup_vs_trl_default"] = round(mine / theirs["tokens_per_s"], 2)
                ours["speedup_vs_trl_default_per_step"] = round(ours["tokens_per_s"] / theirs["tokens_per_s"], 2)
        if "gen" in stages:
            print("[bench] generation: plain generate vs align's path", file=sys.stderr, flush=True)
            res["generation"] = bench_generation(args)
        for stage in ("grpo", "rloo"):
            if stage in stages:
                print(f"[bench] {stage}", file=sys.stderr, flush=True)
                ours = res["stages"][stage] = bench_online(stage, args, root)
                if "trl" in stages:
                    print(f"[bench] {stage} with TRL defaults", file=sys.stderr, flush=True)
                    theirs = res["stages"][f"{stage}_trl_default"] = bench_trl_default_online(stage, args, root, ours)
                    ours["speedup_vs_trl_default"] = round(
                        theirs["step_seconds_median"] / max(ours["step_seconds_median"], 1e-9), 2
                    )
        if "ppo" in stages:
            print("[bench] ppo", file=sys.stderr, flush=True)
            ppo = bench_ppo(args, root)
            if ppo:
                res["stages"]["ppo"] = ppo
    res["wall_seconds"] = round(time.perf_counter() - t_all, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(res, indent=2))
    md = table(res)
    (out / "bench.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
