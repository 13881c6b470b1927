"""The comparison's report: the numbers per checkpoint and against the reference (``report.json``), their markdown
rendering (``report.md``) and the answers with their scores (``samples.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from align.data.prompts import prompt_text
from align.eval.bootstrap import mean_with_ci
from align.eval.pass_rates import mcnemar, pass_rate
from align.eval.plots import write_plots
from align.eval.stats import distinct_n, self_judging_warning
from align.eval.winrate import length_controlled_win_rate, win_rate_ci, win_rate_matrix
from align.tracking import atomic_write_text

if TYPE_CHECKING:  # only for annotations: align.eval.compare imports this module
    from align.eval.compare import CompareConfig


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
            per[n]["checks"] = {fam: pass_rate(out) for fam, out in checks[n].items()}
        if n != ref_name:
            per[n]["vs_reference"] = _versus(cfg, ref_name, scores[n], scores[ref_name], lengths[n], lengths[ref_name])
            if checks:
                per[n]["vs_reference"]["checks"] = {
                    fam: mcnemar(checks[ref_name][fam], out) for fam, out in checks[n].items()
                }
    warnings = self_judging_warning(judge_id, trained_against)
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
        "win_rates": win_rate_matrix(scores, tie_tolerance=cfg.tie_tolerance, n_boot=cfg.n_boot, seed=cfg.seed),
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
        "reward": mean_with_ci(scores, n_boot=cfg.n_boot, seed=cfg.seed),
        "length_tokens": {"mean": float(lengths.mean()), "median": float(np.median(lengths))},
        "eos_rate": float(np.mean([s["eos"] for s in res["samples"]])),
        "truncated": int(sum(not s["eos"] for s in res["samples"])),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
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
        "win_rate": win_rate_ci(a, b, **kw),
        "length_controlled": length_controlled_win_rate(a, b, la, lb, **kw),
    }


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
