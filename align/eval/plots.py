"""The comparison's PNG plots: reward per checkpoint, the win-rate matrix, reward against KL, check pass rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def kl_shown(kl: dict[str, Any]) -> tuple[float, float, float]:
    """The KL the report shows: the sampled k1 estimate when there are samples, else the sum along the answers."""
    if "mean" in kl:
        return kl["mean"], kl["low"], kl["high"]
    along = kl["along_shown_answers"]
    return along["exact_mean"], along["exact_low"], along["exact_high"]


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
