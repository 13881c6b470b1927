"""``align compare``: generate with each checkpoint on held-out prompts, score with a judge, report with CIs.

    align compare runs/quickstart/sft runs/quickstart/dpo builtin:smollm2-135m-instruct \\
        --prompts builtin:bundled-eval-prompts --judge runs/quickstart/judge -o runs/quickstart/compare

Per checkpoint: mean judge reward with a bootstrap CI, response length and distinct-n, the log-ratio to the
checkpoint's own training reference on its responses (KL estimate, k1 and k3), and implicit-reward accuracy on
held-out preference pairs where the checkpoint is an adapter. Across checkpoints: paired win rates with ties and
bootstrap CIs, and a length-controlled win rate against the reference checkpoint (the first one unless named).
Outputs ``report.md``, ``report.json`` and PNG plots. Generation uses fixed settings and a fixed seed (greedy by
default), so a comparison is reproducible. When the judge is the reward model a checkpoint was optimised against
(PPO), the report warns loudly: use a judge trained on disjoint data (the pipeline's ``judge`` stage trains one on
the eval split).
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from align.config import ConfigError, ModelSection, import_callable
from align.data.load import load_preferences
from align.data.prompts import load_prompts
from align.data.spec import DataConfig, SourceSpec
from align.eval import generation
from align.eval.checks import run_checks
from align.eval.compare_config import CompareConfig
from align.eval.generation import Sampling
from align.eval.judges import judge_scores, load_judge
from align.eval.logratio import implicit_margins, response_logratio
from align.eval.report import build_report, write_report
from align.eval.stats import implicit_reward_accuracy, sample_kl
from align.reward_models import RewardModelScorer
from align.runs import load_policy
from align.templates import Encoder

BON_PREFIX = "bon:"


def generate(
    model: Any,
    tok: Any,
    prompts: list[list[dict]],
    cfg: CompareConfig,
    *,
    temperature: float | None = None,
    num_samples: int = 1,
    max_new_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Answers through the one generation path (align.eval.generation): the recipe's sampling settings and nothing
    from the model's own generation config; responses cut after their first EOS."""

    enc = Encoder(tok)
    sampling = Sampling(
        max_new_tokens=max_new_tokens or cfg.max_new_tokens,
        temperature=cfg.temperature if temperature is None else temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
    )
    samples = generation.generate(
        model, tok, [enc.prompt(p) for p in prompts], sampling, num_samples=num_samples, batch_size=cfg.batch_size
    )
    return [asdict(s) for s in samples]


def load_prompt_records(source: str, limit: int | None) -> list[Any]:
    """The held-out prompts (``PromptRecord``: messages and, where the source carries them, objective checks)."""
    prompts, _ = load_prompts(DataConfig(sources=[SourceSpec(path=source)], eval_fraction=0.0))
    return prompts[:limit] if limit else prompts


def load_pairs(source: str | None, limit: int) -> list[Any]:
    if not source:
        return []
    data = load_preferences(DataConfig(sources=[SourceSpec(path=source)], eval_fraction=0.0, max_drop_fraction=1.0))
    return (data.train + data.eval)[:limit]


def parse_best_of_n(ckpt: str) -> tuple[str, int] | None:
    """``bon:<run>@<n>`` -> (run, n); None for an ordinary checkpoint."""
    if not ckpt.startswith(BON_PREFIX):
        return None
    run, sep, n = ckpt.removeprefix(BON_PREFIX).rpartition("@")
    if not sep or not run or not n.isdigit() or int(n) < 1:
        raise ValueError(f"{ckpt!r}: write best-of-n as bon:<policy run>@<n>, e.g. bon:runs/quickstart/sft@4.")
    return run, int(n)


def best_of_n_kl_bound(n: int) -> float:
    """The analytic KL bound of best-of-n sampling against the sampling policy: log n - (n - 1) / n nats."""
    return math.log(n) - (n - 1) / n


def _display_name(ckpt: str, info: dict[str, Any], taken: set[str]) -> str:
    p = Path(ckpt)
    name = info.get("stage") or (p.parent.name if p.name == "model" else p.name)
    name = name.removeprefix("builtin:") if name.startswith("builtin:") else name
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


def _policy_entry(ckpt: str, prompts: list, pairs: list, cfg: CompareConfig, log) -> tuple[dict[str, Any], Any]:
    """Answers of one checkpoint (generated from a merged copy: fast), its KL to its own training reference (sampled
    at temperature 1, plus the sum along the answers shown) and its implicit-reward accuracy."""
    model, tok, info = load_policy(ckpt, dtype=cfg.dtype, settings=cfg.model, log=log)
    fast = generation.merged_copy(model) if info.get("adapter") else model
    tg = time.time()
    samples = generate(fast, tok, prompts, cfg)
    entry: dict[str, Any] = {"checkpoint": ckpt, "info": info, "samples": samples}
    entry["generate_seconds"] = round(time.time() - tg, 2)
    if info.get("adapter"):
        entry["kl"] = kl_to_reference(model, fast, tok, prompts, samples, cfg)
        if pairs:
            entry["implicit"] = implicit_reward_accuracy(
                np.array(implicit_margins(model, tok, pairs, cfg.batch_size)), n_boot=cfg.n_boot, seed=cfg.seed
            )
    return entry, tok


def kl_to_reference(model: Any, fast: Any, tok: Any, prompts: list, shown: list, cfg: CompareConfig) -> dict:
    """KL(policy || reference) per answer: k1 and k3 over ``kl_samples`` answers per prompt sampled at temperature 1
    (the policy's own distribution), CIs resampling prompts; and, when ``kl_along_answers``, labelled as such, the
    full-distribution KL summed along the answers the report shows (greedy by default: a path, not an expectation)."""
    out: dict[str, Any] = {"temperature": 1.0}
    if cfg.kl_along_answers:
        pol, ref, mask, exact = response_logratio(model, shown, cfg.batch_size, exact_kl=True, policy=fast)
        along = sample_kl(pol, ref, mask, n_boot=cfg.n_boot, seed=cfg.seed, exact_token_kl=exact)
        out["along_shown_answers"] = {k: along[k] for k in ("exact_mean", "exact_low", "exact_high")}
    if cfg.kl_samples > 0:
        kp = prompts[: cfg.kl_max_prompts] if cfg.kl_max_prompts else prompts
        drawn = generate(
            fast, tok, kp, cfg, temperature=1.0, num_samples=cfg.kl_samples, max_new_tokens=cfg.kl_max_new_tokens
        )
        pol, ref, mask = response_logratio(model, drawn, cfg.batch_size, policy=fast)
        groups = np.array([s["index"] for s in drawn])
        out.update(sample_kl(pol, ref, mask, n_boot=cfg.n_boot, seed=cfg.seed, groups=groups))
        out.update(samples_per_prompt=cfg.kl_samples, max_new_tokens=cfg.kl_max_new_tokens or cfg.max_new_tokens)
    return out if len(out) > 1 else None


def _best_of_n_entry(ckpt: str, prompts: list, cfg: CompareConfig, log) -> tuple[dict[str, Any], Any]:
    """Best of n answers (sampled at ``bon_temperature``) under ``bon_reward_model``: what that reward model can buy
    without any training, at a KL of at most log n - (n-1)/n from the sampling policy."""
    run, n = parse_best_of_n(ckpt)
    if not cfg.bon_reward_model:
        raise ValueError(f"{ckpt}: best-of-n needs compare.bon_reward_model (the reward-model run that picks).")
    model, tok, info = load_policy(run, dtype=cfg.dtype, settings=cfg.model, log=log)
    fast = generation.merged_copy(model) if info.get("adapter") else model
    tg = time.time()
    cands = generate(fast, tok, prompts, cfg, temperature=cfg.bon_temperature, num_samples=n)
    rm = RewardModelScorer(cfg.bon_reward_model, tok, dtype=cfg.dtype, log=log, settings=cfg.model)
    scores = rm(
        [prompts[c["index"]] for c in cands],
        [c["prompt_ids"] + c["response_ids"] for c in cands],
        [c["text"] for c in cands],
        [c["eos"] for c in cands],
        batch_size=cfg.batch_size,
    )
    best = [max(range(k * n, k * n + n), key=lambda j: scores[j]) for k in range(len(prompts))]
    label = info.get("stage") or Path(run).name.removeprefix("builtin:")
    info = {**info, "stage": f"bon{n}-{label}", "reward_model": cfg.bon_reward_model}
    entry = {
        "checkpoint": ckpt,
        "info": info,
        "samples": [cands[j] for j in best],
        "generate_seconds": round(time.time() - tg, 2),
        "best_of_n": {"n": n, "temperature": cfg.bon_temperature, "kl_bound": best_of_n_kl_bound(n)},
    }
    return entry, tok


def run_compare(cfg: CompareConfig, log=print, pairs: list[Any] | None = None) -> dict[str, Any]:
    """Generate, score and write the report; returns the report dict (also ``report.json``)."""
    if not cfg.checkpoints:
        raise ValueError("compare needs at least one checkpoint")
    if not cfg.judge:
        raise ValueError("compare needs a judge: --judge <reward model run or dir> or --judge module:function")
    if cfg.model is not None and cfg.model.dtype != ModelSection.dtype:
        raise ConfigError(
            f"compare.model.dtype={cfg.model.dtype!r}: compare loads every model in compare.dtype; set that instead."
        )
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = load_prompt_records(cfg.prompts, cfg.max_prompts)
    prompts = [r.prompt for r in records]
    pairs = pairs if pairs is not None else load_pairs(cfg.pairs, cfg.max_pairs)
    t0 = time.time()
    results: dict[str, dict[str, Any]] = {}
    trained_against: dict[str, str | None] = {}
    tok = None
    for i, ckpt in enumerate(cfg.checkpoints):
        log(f"[align] compare: generating with {ckpt} ({len(prompts)} prompts)")
        if parse_best_of_n(ckpt):
            entry, tok = _best_of_n_entry(ckpt, prompts, cfg, log)
        else:
            entry, tok = _policy_entry(ckpt, prompts, pairs, cfg, log)
        info = entry["info"]
        name = cfg.names[i] if cfg.names and i < len(cfg.names) else _display_name(ckpt, info, set(results))
        rm = info.get("reward_model")
        trained_against[name] = str(Path(rm, "model").resolve()) if rm and Path(rm, "model").is_dir() else rm
        results[name] = entry
        gc.collect()

    judge = load_judge(cfg.judge, tok, dtype=cfg.dtype, log=log, settings=cfg.model)
    for entry in results.values():
        texts = [s["text"] for s in entry["samples"]]
        ended = [s["eos"] for s in entry["samples"]]
        entry["scores"] = judge_scores(judge, prompts, texts, ended, cfg.batch_size)
    checks = _check_outcomes(records, results, cfg)
    report = build_report(cfg, prompts, results, judge["id"], trained_against, checks)
    report["seconds"] = round(time.time() - t0, 1)
    write_report(report, results, prompts, out_dir, cfg)
    log(f"[align] compare: report in {out_dir / 'report.md'}")
    return report


def _check_outcomes(records: list, results: dict[str, dict[str, Any]], cfg: CompareConfig) -> dict[str, Any] | None:
    """Per checkpoint, per check family: one pass/fail/None per prompt (None = the family does not apply)."""
    checks = [getattr(r, "checks", None) for r in records]
    if not cfg.checks or (not any(checks) and not cfg.custom_checks):
        return None
    custom = import_callable(cfg.custom_checks, "compare.custom_checks") if cfg.custom_checks else None
    return {
        name: run_checks(checks, [s["text"] for s in e["samples"]], [s["eos"] for s in e["samples"]], custom=custom)
        for name, e in results.items()
    }
