"""Summarise PPO runs from their metrics.jsonl: early vs late means, reward trend, critic fit and the time split.

    python scripts/ppo_summary.py runs/smollm2/ppo [more stage dirs ...] [--window 4]

The figures in docs/benchmarks.md come from this. The reward trend is an OLS slope of the mean RM score per
iteration with a 95% t interval (needs scipy, which the dev install brings).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

WINDOW_KEYS = (
    ("reward/mean", "RM score (raw)"),
    ("reward/shaped_mean", "shaped reward"),
    ("eos_rate", "EOS rate"),
    ("response_length/mean", "response length"),
    ("kl", "KL to reference (k1, per response)"),
    ("explained_variance", "critic explained variance"),
    ("loss/value", "value loss"),
)
TIME_KEYS = ("generate", "logprobs", "score", "train")


def ols_slope(y: list[float]) -> tuple[float, float, float]:
    """(slope, low, high): least-squares slope of y over 1..n with a 95% t interval."""
    from scipy import stats

    x = np.arange(1, len(y) + 1, dtype=float)
    fit = stats.linregress(x, np.asarray(y, dtype=float))
    half = stats.t.ppf(0.975, len(y) - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


def summarise(stage: Path, window: int) -> str:
    rows = [json.loads(line) for line in (stage / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if len(rows) < 3:
        raise SystemExit(f"{stage}: {len(rows)} iteration(s) logged; a summary needs at least 3.")
    manifest = json.loads((stage / "manifest.json").read_text()) if (stage / "manifest.json").is_file() else {}
    w = min(window, len(rows) // 2)
    lines = [
        f"## {stage}",
        f"value_model={manifest.get('value_model', 'head')} value_init={manifest.get('value_init')} "
        f"value_adapter_init={manifest.get('value_adapter_init')} iterations={len(rows)} status={manifest.get('status')}",
        "",
        f"| | iterations 1-{w} | iterations {len(rows) - w + 1}-{len(rows)} |",
        "|---|---|---|",
    ]
    for key, label in WINDOW_KEYS:
        if key in rows[0]:
            first = statistics.fmean(r[key] for r in rows[:w])
            last = statistics.fmean(r[key] for r in rows[-w:])
            lines.append(f"| {label} | {first:.3f} | {last:.3f} |")
    slope, low, high = ols_slope([r["reward/mean"] for r in rows])
    lines.append("")
    lines.append(f"RM score slope per iteration: {slope:+.4f} (95% CI {low:+.4f}, {high:+.4f})")
    median = statistics.median(r["time/iteration"] for r in rows)
    split = ", ".join(f"{k} {statistics.median(r[f'time/{k}_frac'] for r in rows):.0%}" for k in TIME_KEYS)
    tokens = statistics.median(r["rollout_tokens_per_s"] for r in rows)
    lines.append(f"median iteration {median:.1f} s ({split}); {tokens:.1f} rollout tokens/s")
    norms = [k for k in rows[0] if k.startswith("grad_norm/")]
    if norms:
        lines.append(
            "median gradient norm before clipping: "
            + ", ".join(f"{k.split('/', 1)[1]} {statistics.median(r[k] for r in rows):.3f}" for k in norms)
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stages", nargs="+", type=Path, help="PPO stage directories (holding metrics.jsonl)")
    parser.add_argument("--window", type=int, default=4, help="iterations averaged at the start and at the end")
    args = parser.parse_args()
    print("\n\n".join(summarise(stage, args.window) for stage in args.stages))


if __name__ == "__main__":
    main()
