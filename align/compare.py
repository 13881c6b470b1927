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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from align import compare_stats as cs


@dataclass
class CompareConfig:
    checkpoints: list[str] = field(default_factory=list, metadata={"help": "Stage dirs, adapters or model refs."})
    names: list[str] | None = field(default=None, metadata={"help": "Display names (default: stage or path)."})
    prompts: str = field(default="builtin:bundled-eval-prompts", metadata={"help": "Held-out prompt source."})
    judge: str | None = field(default=None, metadata={"help": "Reward-model run/dir, or module:function."})
    pairs: str | None = field(default=None, metadata={"help": "Held-out preference pairs (implicit reward acc)."})
    reference: str | None = field(default=None, metadata={"help": "Checkpoint name that others are compared to."})
    max_prompts: int = field(default=64, metadata={"help": "Use the first N prompts."})
    max_pairs: int = field(default=32, metadata={"help": "Use the first N held-out pairs."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation length limit."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling (temperature > 0)."})
    batch_size: int = field(default=16, metadata={"help": "Generation and scoring batch size."})
    seed: int = field(default=0, metadata={"help": "Sampling and bootstrap seed."})
    n_boot: int = field(default=2000, metadata={"help": "Bootstrap resamples for CIs."})
    tie_tolerance: float = field(default=0.0, metadata={"help": "|reward difference| <= this is a tie."})
    n_examples: int = field(default=3, metadata={"help": "Side-by-side examples in the report."})
    output: str = field(default="runs/compare", metadata={"help": "Report directory."})
    dtype: str = field(default="float32", metadata={"help": "Dtype for generation and scoring."})


# --------------------------------------------------------------------------------------------------------------
# Generation and scoring


def generate(model: Any, tok: Any, prompts: list[list[dict]], cfg: CompareConfig) -> list[dict[str, Any]]:
    """Batched generation with left padding and the KV cache; responses cut after their first EOS."""
    import torch

    from align.templates import Encoder

    enc = Encoder(tok)
    prompt_ids = [enc.prompt(p) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out: list[dict[str, Any]] = []
    torch.manual_seed(cfg.seed)
    for i in range(0, len(prompt_ids), cfg.batch_size):
        chunk = prompt_ids[i : i + cfg.batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, p in enumerate(chunk):
            ids[j, width - len(p) :] = torch.tensor(p)
            mask[j, width - len(p) :] = 1
        kwargs: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "pad_token_id": pad,
            "eos_token_id": tok.eos_token_id,
            "use_cache": True,
        }
        if cfg.temperature > 0:
            kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
        else:
            kwargs.update(do_sample=False)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, **kwargs)[:, width:]
        for j, p in enumerate(chunk):
            resp = gen[j].tolist()
            has_eos = tok.eos_token_id in resp
            if has_eos:
                resp = resp[: resp.index(tok.eos_token_id) + 1]
            else:
                while resp and resp[-1] == pad:
                    resp.pop()
            text = tok.decode(resp, skip_special_tokens=True).strip()
            out.append({"prompt_ids": p, "response_ids": resp, "text": text, "eos": has_eos})
    return out


def response_logratio(
    model: Any, samples: list[dict[str, Any]], batch_size: int, *, exact_kl: bool = False
) -> tuple[np.ndarray, ...]:
    """Per-token log-probs of each response under the model with its adapter on and off (its reference), the
    response mask, and (``exact_kl``) the full-distribution KL(policy || reference) at each response position.

    Only response positions go through the LM head, over length buckets (align.fast_head): the prompt positions'
    49K-way softmaxes were most of this pass."""
    import torch

    from align import fast_head

    width_r = max(max(len(s["response_ids"]) for s in samples), 1)
    pol = np.zeros((len(samples), width_r))
    ref = np.zeros((len(samples), width_r))
    kl = np.zeros((len(samples), width_r))
    mask = np.zeros((len(samples), width_r))
    base = model.get_base_model()
    compact = fast_head.supported(base)
    weight = base.get_output_embeddings().weight

    def response_logits(ids, att, labels):
        """Logits [M, V] at the label positions (row-major order) and their (row, col) indices."""
        if compact:
            hidden, (r, c), _ = fast_head.selected_hidden(base, ids, att, labels)
            return hidden, r, c
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
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

    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
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
            hp, r, c = response_logits(ids, att, labels)
            with model.disable_adapter():
                hq, _, _ = response_logits(ids, att, labels)
            lp, lq, k = stats(hp, hq, labels[:, 1:][r, c])
        for n, (row, col) in enumerate(zip(r.tolist(), c.tolist())):
            t = col - (len(chunk[row]["prompt_ids"]) - 1)  # response token index
            pol[i + row, t] = float(lp[n])
            ref[i + row, t] = float(lq[n])
            if exact_kl:
                kl[i + row, t] = float(k[n])
            mask[i + row, t] = 1
    return (pol, ref, mask, kl) if exact_kl else (pol, ref, mask)


def load_judge(judge: str, log=print):
    """A reward model (``align rm`` run dir, adapter dir or full model) or a ``module:function`` reward."""
    if ":" in judge and not Path(judge).exists():
        from align.config import import_callable

        return {"kind": "function", "fn": import_callable(judge, f"--judge {judge!r}"), "id": judge}
    from align.models import load_reward_model

    model, tok = load_reward_model(judge)
    p = Path(judge)
    ident = str((p / "model" if (p / "model").is_dir() else p).resolve())
    return {"kind": "model", "model": model, "tok": tok, "id": ident}


def judge_scores(judge: dict[str, Any], prompts: list[list[dict]], texts: list[str], batch_size: int) -> list[float]:
    from align.data.prompts import prompt_text

    if judge["kind"] == "function":
        return [float(x) for x in judge["fn"]([prompt_text(p) for p in prompts], texts)]
    from align.stages.reward import score_sequences
    from align.templates import Encoder

    enc = Encoder(judge["tok"])
    seqs = []
    for p, t in zip(prompts, texts):
        row = enc.preference(p, [{"role": "assistant", "content": t}], [{"role": "assistant", "content": t}])
        seqs.append(row["prompt_ids"] + row["chosen_ids"])
    return score_sequences(judge["model"], seqs, judge["tok"].pad_token_id, batch_size=batch_size)


def implicit_margins(model: Any, tok: Any, pairs: list[Any], batch_size: int) -> list[float]:
    """DPO implicit-reward margins (up to beta) on held-out pairs: policy-vs-reference log-ratio, chosen - rejected."""
    from align.templates import Encoder

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


def load_prompt_records(source: str, limit: int) -> list[list[dict]]:
    from align.data.prompts import load_prompts
    from align.data.spec import DataConfig, SourceSpec

    prompts, _ = load_prompts(DataConfig(sources=[SourceSpec(path=source)], eval_fraction=0.0))
    return [p.prompt for p in prompts[:limit]]


def load_pairs(source: str | None, limit: int) -> list[Any]:
    if not source:
        return []
    from align.data.load import load_preferences
    from align.data.spec import DataConfig, SourceSpec

    data = load_preferences(DataConfig(sources=[SourceSpec(path=source)], eval_fraction=0.0, max_drop_fraction=1.0))
    return (data.train + data.eval)[:limit]


def run_compare(cfg: CompareConfig, log=print, pairs: list[Any] | None = None) -> dict[str, Any]:
    """Generate, score and write the report; returns the report dict (also ``report.json``)."""
    from align.checkpoints import load_policy

    if not cfg.checkpoints:
        raise ValueError("compare needs at least one checkpoint")
    if not cfg.judge:
        raise ValueError("compare needs a judge: --judge <reward model run or dir> or --judge module:function")
    out_dir = Path(cfg.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = load_prompt_records(cfg.prompts, cfg.max_prompts)
    pairs = pairs if pairs is not None else load_pairs(cfg.pairs, cfg.max_pairs)
    t0 = time.time()
    results: dict[str, dict[str, Any]] = {}
    trained_against: dict[str, str | None] = {}
    for i, ckpt in enumerate(cfg.checkpoints):
        model, tok, info = load_policy(ckpt, dtype=cfg.dtype, log=log)
        name = cfg.names[i] if cfg.names and i < len(cfg.names) else _display_name(ckpt, info, set(results))
        log(f"[align] compare: generating with {name} ({len(prompts)} prompts)")
        tg = time.time()
        samples = generate(model, tok, prompts, cfg)
        entry: dict[str, Any] = {
            "checkpoint": ckpt,
            "info": info,
            "samples": samples,
            "generate_seconds": round(time.time() - tg, 2),
        }
        if info.get("adapter"):
            pol, ref, mask, exact = response_logratio(model, samples, cfg.batch_size, exact_kl=True)
            entry["kl"] = cs.sample_kl(pol, ref, mask, n_boot=cfg.n_boot, seed=cfg.seed, exact_token_kl=exact)
            if pairs:
                entry["implicit"] = cs.implicit_reward_accuracy(
                    np.array(implicit_margins(model, tok, pairs, cfg.batch_size)), n_boot=cfg.n_boot, seed=cfg.seed
                )
        rm = info.get("reward_model")
        trained_against[name] = str(Path(rm, "model").resolve()) if rm and Path(rm, "model").is_dir() else rm
        results[name] = entry
        del model
        gc.collect()

    judge = load_judge(cfg.judge, log=log)
    for entry in results.values():
        texts = [s["text"] for s in entry["samples"]]
        entry["scores"] = judge_scores(judge, prompts, texts, cfg.batch_size)
    report = build_report(cfg, prompts, results, judge["id"], trained_against)
    report["seconds"] = round(time.time() - t0, 1)
    write_report(report, results, prompts, out_dir, cfg)
    log(f"[align] compare: report in {out_dir / 'report.md'}")
    return report


def build_report(
    cfg: CompareConfig,
    prompts: list,
    results: dict[str, dict[str, Any]],
    judge_id: str,
    trained_against: dict[str, str | None],
) -> dict[str, Any]:
    names = list(results)
    ref_name = cfg.reference if cfg.reference in results else names[0]
    scores = {n: np.array(results[n]["scores"], dtype=float) for n in names}
    lengths = {n: np.array([len(s["response_ids"]) for s in results[n]["samples"]], dtype=float) for n in names}
    per: dict[str, Any] = {}
    for n in names:
        texts = [s["text"] for s in results[n]["samples"]]
        per[n] = {
            "checkpoint": results[n]["checkpoint"],
            "reward": cs.mean_with_ci(scores[n], n_boot=cfg.n_boot, seed=cfg.seed),
            "length_tokens": {"mean": float(lengths[n].mean()), "median": float(np.median(lengths[n]))},
            "eos_rate": float(np.mean([s["eos"] for s in results[n]["samples"]])),
            "distinct_1": cs.distinct_n(texts, 1),
            "distinct_2": cs.distinct_n(texts, 2),
            "kl_to_reference": results[n].get("kl"),
            "implicit_reward_accuracy": results[n].get("implicit"),
            "generate_seconds": results[n]["generate_seconds"],
        }
        if n != ref_name:
            per[n]["vs_reference"] = {
                "reference": ref_name,
                "win_rate": cs.win_rate_ci(
                    scores[n], scores[ref_name], tie_tolerance=cfg.tie_tolerance, n_boot=cfg.n_boot, seed=cfg.seed
                ),
                "length_controlled": cs.length_controlled_win_rate(
                    scores[n],
                    scores[ref_name],
                    lengths[n],
                    lengths[ref_name],
                    tie_tolerance=cfg.tie_tolerance,
                    n_boot=cfg.n_boot,
                    seed=cfg.seed,
                ),
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
        "win_rates": cs.win_rate_matrix(scores, tie_tolerance=cfg.tie_tolerance, n_boot=cfg.n_boot, seed=cfg.seed),
        "warnings": warnings,
        "length_control_method": "logistic regression of the per-prompt outcome on the standardised length "
        "difference; the length-controlled win rate is the predicted win rate at equal length (sigmoid of the "
        "intercept)",
    }


def kl_shown(kl: dict[str, Any]) -> tuple[float, float, float]:
    """The KL the report shows: exact along the responses when computed, else the k1 sample estimate."""
    if "exact_mean" in kl:
        return kl["exact_mean"], kl["exact_low"], kl["exact_high"]
    return kl["mean"], kl["low"], kl["high"]


def _fmt_ci(d: dict[str, Any] | None, key: str = "mean", pct: bool = False) -> str:
    if not d:
        return "-"
    k = 100.0 if pct else 1.0
    return (
        f"{d[key] * k:.3f} [{d['low'] * k:.3f}, {d['high'] * k:.3f}]"
        if not pct
        else f"{d[key] * k:.1f}% [{d['low'] * k:.1f}, {d['high'] * k:.1f}]"
    )


def render_markdown(
    report: dict[str, Any], results: dict[str, dict[str, Any]], prompts: list, cfg: CompareConfig
) -> str:
    from align.data.prompts import prompt_text

    lines = ["# Checkpoint comparison", ""]
    for w in report["warnings"]:
        lines += [f"> **WARNING:** {w}", ""]
    lines += [
        f"{report['n_prompts']} held-out prompts, judge `{report['judge']}`, generation "
        f"{json.dumps(report['generation'])}. Intervals are 95% bootstrap CIs over prompts (paired for win rates).",
        "",
        "| checkpoint | judge reward | win rate vs " + report["reference"] + " | length-controlled | length (tokens) "
        "| EOS rate | distinct-1 / 2 | KL to its reference (nats) | implicit-reward acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, c in report["checkpoints"].items():
        vs = c.get("vs_reference")
        wr = (
            f"{vs['win_rate']['win_rate'] * 100:.1f}% [{vs['win_rate']['low'] * 100:.1f}, {vs['win_rate']['high'] * 100:.1f}]"
            if vs
            else "(reference)"
        )
        lc = vs["length_controlled"] if vs else None
        lcs = f"{lc['lc_win_rate'] * 100:.1f}% [{lc['low'] * 100:.1f}, {lc['high'] * 100:.1f}]" if lc else "-"
        kl = c["kl_to_reference"]
        kls = "{:.3f} [{:.3f}, {:.3f}]".format(*kl_shown(kl)) if kl else "-"
        ia = c["implicit_reward_accuracy"]
        ias = (
            f"{ia['accuracy'] * 100:.1f}% [{ia['low'] * 100:.1f}, {ia['high'] * 100:.1f}] (n={ia['n']})" if ia else "-"
        )
        lines.append(
            f"| {n} | {_fmt_ci(c['reward'])} | {wr} | {lcs} | {c['length_tokens']['mean']:.1f} | "
            f"{c['eos_rate'] * 100:.0f}% | {c['distinct_1']:.2f} / {c['distinct_2']:.2f} | {kls} | {ias} |"
        )
    names = list(report["win_rates"])
    lines += [
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
    lines += [
        "",
        f"Length control: {report['length_control_method']}.",
        "",
        "KL to the reference: the full-distribution KL(policy || reference) at every response position, summed over "
        "the response (exact for the responses produced, so it cannot go negative and holds for greedy decoding); "
        "the sampling estimators k1 and k3, valid only for sampled responses, are in report.json.",
        "",
        "![reward distribution](rewards.png) ![win rates](win_rates.png) ![reward vs KL](reward_vs_kl.png)",
        "",
        "## Examples",
        "",
    ]
    for i in range(min(cfg.n_examples, len(prompts))):
        lines += [f"**Prompt:** {prompt_text(prompts[i])}", ""]
        for n in results:
            s = results[n]["samples"][i]
            text = s["text"].replace("\n", " ")
            lines.append(f"- *{n}* (reward {results[n]['scores'][i]:.2f}): {text}")
        lines.append("")
    return "\n".join(lines) + "\n"


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
    return files


def write_report(
    report: dict[str, Any], results: dict[str, dict[str, Any]], prompts: list, out_dir: Path, cfg: CompareConfig
) -> None:
    from align.tracking import atomic_write_text

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


def main(args: Any) -> int:
    """`align compare` entry point (parsed arguments in, exit code out)."""
    from align.cli import emit

    cfg = CompareConfig(
        checkpoints=list(args.checkpoints),
        judge=args.judge,
        prompts=args.prompts or CompareConfig.prompts,
        output=args.output or "runs/compare",
    )
    for key in ("max_prompts", "max_new_tokens", "temperature", "pairs", "reference", "seed"):
        if getattr(args, key, None) is not None:
            setattr(cfg, key, getattr(args, key))
    try:
        report = run_compare(cfg)
    except ValueError as e:
        from align.config import ConfigError

        raise ConfigError(str(e)) from None
    for w in report["warnings"]:
        emit(f"WARNING: {w}")
    emit(f"report: {Path(cfg.output) / 'report.md'}")
    return 0
