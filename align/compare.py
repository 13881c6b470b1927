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
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from align import compare_stats as cs
from align import fast_head
from align.config import import_callable
from align.data.load import load_preferences
from align.data.prompts import load_prompts, prompt_text
from align.data.spec import DataConfig, SourceSpec
from align.eval import generation
from align.eval.checks import run_checks
from align.eval.generation import Sampling
from align.reward_models import RewardModelScorer
from align.runs import load_policy
from align.templates import Encoder
from align.tracking import atomic_write_text

BON_PREFIX = "bon:"


@dataclass
class CompareConfig:
    checkpoints: list[str] = field(
        default_factory=list,
        metadata={"help": "Stage dirs, adapters or model refs; bon:<run>@<n> = best of n under bon_reward_model."},
    )
    names: list[str] | None = field(default=None, metadata={"help": "Display names (default: stage or path)."})
    prompts: str = field(default="builtin:bundled-eval-prompts", metadata={"help": "Held-out prompt source."})
    judge: str | None = field(default=None, metadata={"help": "Reward-model run/dir, or module:function."})
    pairs: str | None = field(default=None, metadata={"help": "Held-out preference pairs (implicit reward acc)."})
    reference: str | None = field(default=None, metadata={"help": "Checkpoint name that others are compared to."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use the first N prompts (default: all)."})
    max_pairs: int = field(default=32, metadata={"help": "Use the first N held-out pairs."})
    max_new_tokens: int = field(default=160, metadata={"help": "Generation length limit (answers should end)."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (temperature > 0)."})
    batch_size: int = field(default=64, metadata={"help": "Generation and scoring batch size."})
    kl_samples: int = field(
        default=2, metadata={"help": "Answers sampled per prompt at temperature 1 for the KL estimate (0 = none)."}
    )
    kl_max_prompts: int | None = field(default=None, metadata={"help": "Prompts used for the KL samples (all)."})
    kl_along_answers: bool = field(
        default=False, metadata={"help": "Also sum the exact KL along the shown (greedy) answers: one more pass."}
    )
    kl_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Length of the KL samples (default max_new_tokens): KL of answer prefixes."}
    )
    bon_reward_model: str | None = field(
        default=None, metadata={"help": "Reward-model run that picks the best of n for bon:<run>@<n> checkpoints."}
    )
    bon_temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of best-of-n candidates."})
    checks: bool = field(default=True, metadata={"help": "Run the prompts' objective checks (no reward model)."})
    custom_checks: str | None = field(
        default=None, metadata={"help": "module:function adding check families (see align.eval.checks)."}
    )
    seed: int = field(default=0, metadata={"help": "Sampling and bootstrap seed."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap resamples for CIs."})
    tie_tolerance: float = field(default=0.0, metadata={"help": "|reward difference| <= this is a tie."})
    n_examples: int = field(default=3, metadata={"help": "Side-by-side examples in the report."})
    output: str = field(default="runs/compare", metadata={"help": "Report directory."})
    dtype: str = field(default="float32", metadata={"help": "Dtype for generation and scoring."})


# --------------------------------------------------------------------------------------------------------------
# Generation and scoring


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


def response_logratio(
    model: Any, samples: list[dict[str, Any]], batch_size: int, *, exact_kl: bool = False, policy: Any = None
) -> tuple[np.ndarray, ...]:
    """Per-token log-probs of each response under the model with its adapter on and off (its reference), the
    response mask, and (``exact_kl``) the full-distribution KL(policy || reference) at each response position.

    Only response positions go through the LM head, over length buckets (align.fast_head): the prompt positions'
    49K-way softmaxes were most of this pass. ``policy``: the same policy with its adapter merged (faster: no
    adapter matmuls) for the adapter-on pass. Rows are batched in length order, so a batch carries little padding."""
    import torch

    width_r = max(max(len(s["response_ids"]) for s in samples), 1)
    pol = np.zeros((len(samples), width_r))
    ref = np.zeros((len(samples), width_r))
    kl = np.zeros((len(samples), width_r))
    mask = np.zeros((len(samples), width_r))
    base = model.get_base_model()
    compact = fast_head.supported(base)
    weight = base.get_output_embeddings().weight

    def response_logits(ids, att, labels, net=None):
        """Logits [M, V] at the label positions (row-major order) and their (row, col) indices."""
        if compact:
            hidden, (r, c), _ = fast_head.selected_hidden(net or base, ids, att, labels)
            return hidden, r, c
        logits = (net or model)(input_ids=ids, attention_mask=att).logits[:, :-1]
        r, c = (labels[:, 1:] != -100).nonzero(as_tuple=True)
        return logits[r, c], r, c

    def stats(hp, hq, targets):
        """Per position: log p(target), log q(target), KL(p || q), from hidden states (or logits) in row chunks."""
        lp_all, lq_all, kl_all = [], [], []
        for s in range(0, hp.shape[0], 256):
            zp, zq = hp[s : s + 256], hq[s : s + 256]
            if compact:
                zp, zq = zp.to(weight.dtype) @ weight.t(), zq.to(weight.dtype) @ weight.t()
            lp, lq = torch.log_softmax(zp.float(), -1), torch.log_softmax(zq.float(), -1)
            t = targets[s : s + 256, None]
            lp_all.append(lp.gather(-1, t).squeeze(-1))
            lq_all.append(lq.gather(-1, t).squeeze(-1))
            if exact_kl:
                kl_all.append((lp.exp() * (lp - lq)).sum(-1))
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
        return cat(lp_all), cat(lq_all), cat(kl_all)

    order = sorted(range(len(samples)), key=lambda k: len(samples[k]["prompt_ids"]) + len(samples[k]["response_ids"]))
    for i in range(0, len(samples), batch_size):
        rows = order[i : i + batch_size]
        chunk = [samples[k] for k in rows]
        seqs = [s["prompt_ids"] + s["response_ids"] for s in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        att = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for j, (s, smp) in enumerate(zip(seqs, chunk)):
            ids[j, : len(s)] = torch.tensor(s)
            att[j, : len(s)] = 1
            labels[j, len(smp["prompt_ids"]) : len(s)] = ids[j, len(smp["prompt_ids"]) : len(s)]
        with torch.no_grad():
            hp, r, c = response_logits(ids, att, labels, policy)
            with model.disable_adapter():
                hq, _, _ = response_logits(ids, att, labels)
            lp, lq, k = stats(hp, hq, labels[:, 1:][r, c])
        for n, (row, col) in enumerate(zip(r.tolist(), c.tolist())):
            t = col - (len(chunk[row]["prompt_ids"]) - 1)  # response token index
            pol[rows[row], t] = float(lp[n])
            ref[rows[row], t] = float(lq[n])
            if exact_kl:
                kl[rows[row], t] = float(k[n])
            mask[rows[row], t] = 1
    return (pol, ref, mask, kl) if exact_kl else (pol, ref, mask)


def load_judge(judge: str, policy_tokenizer: Any, dtype: str = "float32", log=print) -> dict[str, Any]:
    """A reward model (``align rm`` run dir, adapter dir or full model, rebuilt with the adapters merged under it)
    or a ``module:function`` reward."""
    if ":" in judge and not Path(judge).exists():
        return {"kind": "function", "fn": import_callable(judge, f"--judge {judge!r}"), "id": judge}
    scorer = RewardModelScorer(judge, policy_tokenizer, dtype=dtype, log=log)
    return {"kind": "model", "scorer": scorer, "id": str(scorer.model_dir.resolve())}


def judge_scores(
    judge: dict[str, Any], prompts: list[list[dict]], texts: list[str], ended: list[bool], batch_size: int
) -> list[float]:
    if judge["kind"] == "function":
        return [float(x) for x in judge["fn"]([prompt_text(p) for p in prompts], texts)]
    return judge["scorer"].score_texts(prompts, texts, ended, batch_size=batch_size)


def implicit_margins(model: Any, tok: Any, pairs: list[Any], batch_size: int) -> list[float]:
    """DPO implicit-reward margins (up to beta) on held-out pairs: policy-vs-reference log-ratio, chosen - rejected."""
    enc = Encoder(tok)
    samples = []
    for r in pairs:
        row = enc.preference(r.prompt, r.chosen, r.rejected)
        samples.append({"prompt_ids": row["prompt_ids"], "response_ids": row["chosen_ids"]})
        samples.append({"prompt_ids": row["prompt_ids"], "response_ids": row["rejected_ids"]})
    pol, ref, mask = response_logratio(model, samples, batch_size)
    ratio = ((pol - ref) * mask).sum(axis=1)
    return [float(ratio[2 * i] - ratio[2 * i + 1]) for i in range(len(pairs))]


# --------------------------------------------------------------------------------------------------------------
# The comparison


def _display_name(ckpt: str, info: dict[str, Any], taken: set[str]) -> str:
    p = Path(ckpt)
    name = info.get("stage") or (p.parent.name if p.name == "model" else p.name)
    name = name.removeprefix("builtin:") if name.startswith("builtin:") else name
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    return name


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


def _policy_entry(ckpt: str, prompts: list, pairs: list, cfg: CompareConfig, log) -> tuple[dict[str, Any], Any]:
    """Answers of one checkpoint (generated from a merged copy: fast), its KL to its own training reference (sampled
    at temperature 1, plus the sum along the answers shown) and its implicit-reward accuracy."""
    model, tok, info = load_policy(ckpt, dtype=cfg.dtype, log=log)
    fast = generation.merged_copy(model) if info.get("adapter") else model
    tg = time.time()
    samples = generate(fast, tok, prompts, cfg)
    entry: dict[str, Any] = {"checkpoint": ckpt, "info": info, "samples": samples}
    entry["generate_seconds"] = round(time.time() - tg, 2)
    if info.get("adapter"):
        entry["kl"] = kl_to_reference(model, fast, tok, prompts, samples, cfg)
        if pairs:
            entry["implicit"] = cs.implicit_reward_accuracy(
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
        along = cs.sample_kl(pol, ref, mask, n_boot=cfg.n_boot, seed=cfg.seed, exact_token_kl=exact)
        out["along_shown_answers"] = {k: along[k] for k in ("exact_mean", "exact_low", "exact_high")}
    if cfg.kl_samples > 0:
        kp = prompts[: cfg.kl_max_prompts] if cfg.kl_max_prompts else prompts
        drawn = generate(
            fast, tok, kp, cfg, temperature=1.0, num_samples=cfg.kl_samples, max_new_tokens=cfg.kl_max_new_tokens
        )
        pol, ref, mask = response_logratio(model, drawn, cfg.batch_size, policy=fast)
        groups = np.array([s["index"] for s in drawn])
        out.update(cs.sample_kl(pol, ref, mask, n_boot=cfg.n_boot, seed=cfg.seed, groups=groups))
        out.update(samples_per_prompt=cfg.kl_samples, max_new_tokens=cfg.kl_max_new_tokens or cfg.max_new_tokens)
    return out if len(out) > 1 else None


def _best_of_n_entry(ckpt: str, prompts: list, cfg: CompareConfig, log) -> tuple[dict[str, Any], Any]:
    """Best of n answers (sampled at ``bon_temperature``) under ``bon_reward_model``: what that reward model can buy
    without any training, at a KL of at most log n - (n-1)/n from the sampling policy."""
    run, n = parse_best_of_n(ckpt)
    if not cfg.bon_reward_model:
        raise ValueError(f"{ckpt}: best-of-n needs compare.bon_reward_model (the reward-model run that picks).")
    model, tok, info = load_policy(run, dtype=cfg.dtype, log=log)
    fast = generation.merged_copy(model) if info.get("adapter") else model
    tg = time.time()
    cands = generate(fast, tok, prompts, cfg, temperature=cfg.bon_temperature, num_samples=n)
    rm = RewardModelScorer(cfg.bon_reward_model, tok, dtype=cfg.dtype, log=log)
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

    judge = load_judge(cfg.judge, tok, dtype=cfg.dtype, log=log)
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


def build_report(
    cfg: CompareConfig,
    prompts: list,
    results: dict[str, dict[str, Any]],
    judge_id: str,
    trained_against: dict[str, str | None],
    checks: dict[str, dict[str, list[bool | None]]] | None = None,
) -> dict[str, Any]:
    names = list(results)
    ref_name = cfg.reference if cfg.reference in results else names[0]
    scores = {n: np.array(results[n]["scores"], dtype=float) for n in names}
    lengths = {n: np.array([len(s["response_ids"]) for s in results[n]["samples"]], dtype=float) for n in names}
    per: dict[str, Any] = {}
    for n in names:
        per[n] = _checkpoint_summary(cfg, results[n], scores[n], lengths[n])
        if checks:
            per[n]["checks"] = {fam: cs.pass_rate(out) for fam, out in checks[n].items()}
        if n != ref_name:
            per[n]["vs_reference"] = _versus(cfg, ref_name, scores[n], scores[ref_name], lengths[n], lengths[ref_name])
            if checks:
                per[n]["vs_reference"]["checks"] = {
                    fam: cs.mcnemar(checks[ref_name][fam], out) for fam, out in checks[n].items()
                }
    warnings = cs.self_judging_warning(judge_id, trained_against)
    return {
        "n_prompts": len(prompts),
        "judge": judge_id,
        "reference": ref_name,
        "generation": {
            "max_new_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seed": cfg.seed,
        },
        "checkpoints": per,
        "check_families": list(next(iter(checks.values()))) if checks else [],
        "win_rates": cs.win_rate_matrix(scores, tie_tolerance=cfg.tie_tolerance, n_boot=cfg.n_boot, seed=cfg.seed),
        "warnings": warnings,
        "length_control_method": "logistic regression of the per-prompt outcome on the standardised length "
        "difference, intercept unpenalised; the length-controlled win rate is the predicted win rate at equal length "
        "(sigmoid of the intercept), reported only when enough prompts have near-equal lengths on both sides",
    }


def _checkpoint_summary(cfg: CompareConfig, res: dict[str, Any], scores: np.ndarray, lengths: np.ndarray) -> dict:
    texts = [s["text"] for s in res["samples"]]
    new_tokens = int(lengths.sum())
    return {
        "checkpoint": res["checkpoint"],
        "reward": cs.mean_with_ci(scores, n_boot=cfg.n_boot, seed=cfg.seed),
        "length_tokens": {"mean": float(lengths.mean()), "median": float(np.median(lengths))},
        "eos_rate": float(np.mean([s["eos"] for s in res["samples"]])),
        "truncated": int(sum(not s["eos"] for s in res["samples"])),
        "distinct_1": cs.distinct_n(texts, 1),
        "distinct_2": cs.distinct_n(texts, 2),
        "kl_to_reference": res.get("kl"),
        "best_of_n": res.get("best_of_n"),
        "implicit_reward_accuracy": res.get("implicit"),
        "generate_seconds": res["generate_seconds"],
        "new_tokens_per_second": new_tokens / res["generate_seconds"] if res["generate_seconds"] else None,
    }


def _versus(cfg: CompareConfig, ref_name: str, a: np.ndarray, b: np.ndarray, la: np.ndarray, lb: np.ndarray) -> dict:
    kw = {"tie_tolerance": cfg.tie_tolerance, "n_boot": cfg.n_boot, "seed": cfg.seed}
    return {
        "reference": ref_name,
        "win_rate": cs.win_rate_ci(a, b, **kw),
        "length_controlled": cs.length_controlled_win_rate(a, b, la, lb, **kw),
    }


def kl_shown(kl: dict[str, Any]) -> tuple[float, float, float]:
    """The KL the report shows: the sampled k1 estimate when there are samples, else the sum along the answers."""
    if "mean" in kl:
        return kl["mean"], kl["low"], kl["high"]
    along = kl["along_shown_answers"]
    return along["exact_mean"], along["exact_low"], along["exact_high"]


def _pct(d: dict[str, Any] | None, key: str) -> str:
    if not d or d.get(key) is None:
        return "-"
    return f"{d[key] * 100:.1f}% [{d['low'] * 100:.1f}, {d['high'] * 100:.1f}]"


def _fmt_ci(d: dict[str, Any] | None, key: str = "mean") -> str:
    if not d or d.get(key) is None:
        return "-"
    return f"{d[key]:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _kl_cells(c: dict[str, Any]) -> tuple[str, str]:
    kl, bon = c.get("kl_to_reference"), c.get("best_of_n")
    if bon:
        return f"<= {bon['kl_bound']:.3f} (best-of-{bon['n']} bound)", "-"
    if not kl:
        return "-", "-"
    sampled = "{:.3f} [{:.3f}, {:.3f}]".format(kl["mean"], kl["low"], kl["high"]) if "mean" in kl else "-"
    along = kl.get("along_shown_answers")
    if not along:
        return sampled, "-"
    return sampled, "{:.3f} [{:.3f}, {:.3f}]".format(along["exact_mean"], along["exact_low"], along["exact_high"])


def render_markdown(
    report: dict[str, Any], results: dict[str, dict[str, Any]], prompts: list, cfg: CompareConfig
) -> str:
    lines = ["# Checkpoint comparison", ""]
    for w in report["warnings"]:
        lines += [f"> **WARNING:** {w}", ""]
    lines += [
        f"{report['n_prompts']} held-out prompts, judge `{report['judge']}`, generation "
        f"{json.dumps(report['generation'])}. Intervals are 95%: bootstrap over prompts (paired for win rates), "
        "Wilson for pass rates.",
        "",
        "| checkpoint | judge reward | win rate vs " + report["reference"] + " | length-controlled | length (tokens) "
        "| EOS rate | distinct-1 / 2 | KL to its reference, sampled (nats) | KL along the shown answers | "
        "implicit-reward acc |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lc_notes = []
    for n, c in report["checkpoints"].items():
        vs = c.get("vs_reference")
        wr = _pct(vs["win_rate"], "win_rate") if vs else "(reference)"
        lc = vs["length_controlled"] if vs else None
        lcs = "-" if not lc else _pct(lc, "lc_win_rate") if lc.get("identifiable", True) else "not identifiable"
        if lc and not lc.get("identifiable", True):
            lc_notes.append(f"- {n}: {lc['note']}")
        sampled, along = _kl_cells(c)
        ia = c["implicit_reward_accuracy"]
        ias = f"{_pct(ia, 'accuracy')} (n={ia['n']})" if ia else "-"
        lines.append(
            f"| {n} | {_fmt_ci(c['reward'])} | {wr} | {lcs} | {c['length_tokens']['mean']:.1f} | "
            f"{c['eos_rate'] * 100:.0f}% | {c['distinct_1']:.2f} / {c['distinct_2']:.2f} | {sampled} | {along} | {ias} |"
        )
    if lc_notes:
        lines += ["", "Length control could not be identified for:", *lc_notes]
    lines += _checks_section(report)
    lines += _win_matrix_section(report)
    lines += [
        "",
        f"Length control: {report['length_control_method']}.",
        "",
        "KL to the reference: k1 = sum over the answer of log pi(y_t) - log ref(y_t), averaged over answers sampled "
        "from the policy at temperature 1 (several per prompt; CI resamples prompts); k3 is in report.json. 'KL along "
        "the shown answers' sums the full-distribution KL(pi || ref) at each position of the answers in this report "
        "(greedy by default): a path, not an expectation. Best-of-n rows show the analytic bound log n - (n-1)/n.",
        "",
        "![reward distribution](rewards.png) ![win rates](win_rates.png) ![reward vs KL](reward_vs_kl.png)"
        + (" ![checks](checks.png)" if report.get("check_families") else ""),
        "",
        "## Examples",
        "",
    ]
    lines += _examples(results, prompts, cfg)
    return "\n".join(lines) + "\n"


def _checks_section(report: dict[str, Any]) -> list[str]:
    families = report.get("check_families") or []
    if not families:
        return []
    names = list(report["checkpoints"])
    lines = [
        "",
        "## Objective checks (no reward model involved)",
        "",
        "Pass rate with a 95% Wilson interval over the prompts each check applies to; against "
        f"{report['reference']}: exact McNemar test on the prompts where the two differ (b = {report['reference']} "
        "passed and this failed, c = the reverse).",
        "",
        "| check | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for fam in families:
        cells = []
        for n in names:
            c = report["checkpoints"][n]
            pr = c["checks"][fam]
            cell = (
                "-"
                if pr["rate"] is None
                else f"{pr['rate'] * 100:.0f}% [{pr['low'] * 100:.0f}, {pr['high'] * 100:.0f}] (n={pr['n']})"
            )
            mc = (c.get("vs_reference") or {}).get("checks", {}).get(fam)
            if mc and mc["n_discordant"]:
                cell += f"; b={mc['b']} c={mc['c']} p={mc['p_value']:.3g}"
            cells.append(cell)
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return lines


def _win_matrix_section(report: dict[str, Any]) -> list[str]:
    names = list(report["win_rates"])
    lines = [
        "",
        "## Pairwise win rates (row beats column; ties count half)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for a in names:
        cells = []
        for b in names:
            w = report["win_rates"][a][b]
            cells.append(
                "-" if a == b else f"{w['win_rate'] * 100:.1f}% [{w['low'] * 100:.0f}, {w['high'] * 100:.0f}]"
            )
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _examples(results: dict[str, dict[str, Any]], prompts: list, cfg: CompareConfig) -> list[str]:
    lines = []
    for i in range(min(cfg.n_examples, len(prompts))):
        lines += [f"**Prompt:** {prompt_text(prompts[i])}", ""]
        for n in results:
            s = results[n]["samples"][i]
            text = s["text"].replace("\n", " ")
            lines.append(f"- *{n}* (reward {results[n]['scores'][i]:.2f}): {text}")
        lines.append("")
    return lines


def write_plots(report: dict[str, Any], results: dict[str, dict[str, Any]], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    files = []
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.5))
    ax.boxplot([results[n]["scores"] for n in names], tick_labels=names, showmeans=True)
    ax.set_ylabel("judge reward")
    ax.set_title("Reward per checkpoint")
    fig.tight_layout()
    fig.savefig(out_dir / "rewards.png", dpi=110)
    plt.close(fig)
    files.append("rewards.png")

    m = np.array([[report["win_rates"][a][b]["win_rate"] for b in names] for a in names])
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center")
    ax.set_title("Win rate (row vs column)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_dir / "win_rates.png", dpi=110)
    plt.close(fig)
    files.append("win_rates.png")

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for n, c in report["checkpoints"].items():
        kl = kl_shown(c["kl_to_reference"])[0] if c["kl_to_reference"] else 0.0
        kl = c["best_of_n"]["kl_bound"] if c.get("best_of_n") else kl
        r = c["reward"]
        ax.errorbar([kl], [r["mean"]], yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]], fmt="o", capsize=3)
        ax.annotate(n, (kl, r["mean"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("KL to own reference (nats / response)")
    ax.set_ylabel("mean judge reward")
    ax.set_title("Reward vs KL")
    fig.tight_layout()
    fig.savefig(out_dir / "reward_vs_kl.png", dpi=110)
    plt.close(fig)
    files.append("reward_vs_kl.png")
    if report.get("check_families"):
        files.append(_plot_checks(report, out_dir, plt))
    return files


def _plot_checks(report: dict[str, Any], out_dir: Path, plt: Any) -> str:
    """Pass rate per check family and checkpoint, with the Wilson intervals as error bars."""
    families, names = report["check_families"], list(report["checkpoints"])
    fig, ax = plt.subplots(figsize=(1.3 * len(families) + 2.5, 3.6))
    width = 0.8 / len(names)
    for j, n in enumerate(names):
        rates = [report["checkpoints"][n]["checks"][f] for f in families]
        xs = [i + (j - (len(names) - 1) / 2) * width for i in range(len(families))]
        ys = [r["rate"] or 0.0 for r in rates]
        err = [[y - (r["low"] or 0.0) for y, r in zip(ys, rates)], [(r["high"] or 0.0) - y for y, r in zip(ys, rates)]]
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=n)
    ax.set_xticks(range(len(families)), families, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("pass rate")
    ax.set_title("Objective checks (95% Wilson intervals)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "checks.png", dpi=110)
    plt.close(fig)
    return "checks.png"


def write_report(
    report: dict[str, Any], results: dict[str, dict[str, Any]], prompts: list, out_dir: Path, cfg: CompareConfig
) -> None:
    report["plots"] = write_plots(report, results, out_dir)
    samples = {
        n: [
            {"text": s["text"], "score": sc, "tokens": len(s["response_ids"]), "eos": s["eos"]}
            for s, sc in zip(results[n]["samples"], results[n]["scores"])
        ]
        for n in results
    }
    atomic_write_text(out_dir / "samples.json", json.dumps(samples, indent=1))
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, default=float))
    atomic_write_text(out_dir / "report.md", render_markdown(report, results, prompts, cfg))
