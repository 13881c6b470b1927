"""Model cards: a hub-format ``README.md`` in each final checkpoint directory (``<stage>/model``).

Written from the stage's manifest, so it states what produced the checkpoint: base model, the adapters merged under
it, stage and recipe, data sources with their data-card links, agreement, final metrics, and for a reward model its
agreement with the reliable annotators, calibration and length bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from align.tracking import atomic_write_text, read_manifest

# Hub ids of the built-in models, for the card's `base_model` field.
BASE_IDS = {"builtin:smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
KEY_METRICS = (
    "train_loss",
    "eval_loss",
    "eval_perplexity",
    "eval_accuracy",
    "eval_mean_margin",
    "eval_ece",
    "eval_brier",
    "eval_reward_length_pearson",
    "eval_reward_length_spearman",
    "eval_rewards/accuracies",
    "eval_rewards/margins",
    "reward_mean",
    "reward",
    "kl",
    "nonfinite_steps_skipped",
)


def render_model_card(
    manifest: dict[str, Any], config_text: str = "", tags: list[str] | None = None, reward_model: bool = False
) -> str:
    """The card's text. ``tags``: the stage's tags (from the stage registry; default the stage's name);
    ``reward_model``: the checkpoint scores text rather than generating it."""
    stage = manifest.get("stage", "?")
    weights = manifest.get("weights") or {}
    base = weights.get("base") or manifest.get("model", "")
    front = {
        "base_model": BASE_IDS.get(base, base),
        "library_name": "peft",
        "tags": ["align", "lora", *(tags or [stage])],
        "pipeline_tag": "text-classification" if reward_model else "text-generation",
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {stage} checkpoint trained with align",
        "",
        f"A LoRA adapter produced by the `{stage}` stage of the align pipeline on `{base}`.",
        "",
        "## Lineage",
        "",
        f"- base model: `{base}`",
    ]
    for m in weights.get("merged") or []:
        lines.append(f"- merged into the base before training: `{m}`")
    if manifest.get("parent"):
        lines.append(f"- parent checkpoint: `{manifest['parent']}`")
    if manifest.get("reward_model"):
        lines.append(f"- reward model optimised against: `{manifest['reward_model']}`")
    if manifest.get("reference"):
        lines.append(f"- reference model: {manifest['reference']}")
    if manifest.get("run_root"):
        lines.append(
            "- paths that are not absolute are relative to the run root (the directory of the stage directories)"
        )
    data = manifest.get("data") or {}
    lines += ["", "## Data", ""]
    for src in data.get("sources") or []:
        name = src.get("name", "")
        card = Path("data_cards") / f"{name}.md"
        link = f" (data card: `{card}` in the align repository)" if card.is_file() else ""
        lines.append(f"- `{src.get('path')}`: {src.get('rows_taken', '?')} rows{link}")
    if data:
        drops = (data.get("drops") or {}).get("dropped") or {}
        lines.append(
            f"- train {data.get('train')} / eval {data.get('eval')} records; dropped: "
            + (", ".join(f"{k} {v}" for k, v in drops.items()) or "none")
        )
        if data.get("agreement"):
            ag = data["agreement"]
            lines.append(
                f"- annotator agreement: Krippendorff alpha {ag.get('krippendorff_alpha')}, "
                f"band {ag.get('band')}, dropped annotators {ag.get('dropped_annotators')}"
            )
    metrics = manifest.get("metrics") or {}
    shown = {k: metrics[k] for k in KEY_METRICS if k in metrics}
    if shown:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()]
    lines += _reward_quality(manifest)
    lines += _watch_lines(manifest.get("watch"))
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from align.runs import load_policy",
        f"model, tokenizer, info = load_policy({str(weights.get('adapter', 'path/to/model'))!r})"
        + ("  # from the run root" if manifest.get("run_root") else ""),
        "```",
        "",
        f"Produced by align {manifest.get('code_version', '')} in {manifest.get('seconds', '?')} s; "
        f"config hash `{manifest.get('config_hash')}`.",
    ]
    if config_text:
        lines += ["", "## Recipe", "", "```yaml", config_text.strip(), "```"]
    return "\n".join(lines) + "\n"


def _num(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _humans_line(mvh: dict[str, Any]) -> str:
    """Accuracy and kappa against the reliable panel's majority (everyone's when no panel), with its human range."""
    figures = mvh.get("reliable") or mvh
    vs, rng = figures["vs_majority"], figures["human_ceiling"]
    whose = "reliable annotators'" if "reliable" in mvh else "annotators'"
    line = (
        f"- vs the {whose} majority: accuracy {_num(vs.get('accuracy'))}, kappa {_num(vs.get('kappa'))} on "
        f"{vs.get('n_items')} pairs; human range (leave-one-out) accuracy {_num(rng['accuracy']['min'])}.."
        f"{_num(rng['accuracy']['max'])}, kappa {_num(rng['kappa']['min'])}..{_num(rng['kappa']['max'])}"
    )
    if mvh.get("reliable", {}).get("left_out"):
        everyone = mvh["vs_majority"]
        line += (
            f"; left out: {', '.join(mvh['reliable']['left_out'])} (all annotators: accuracy "
            f"{_num(everyone.get('accuracy'))}, kappa {_num(everyone.get('kappa'))})"
        )
    return line


def _reward_quality(manifest: dict[str, Any]) -> list[str]:
    """The "Reward model quality" section: agreement with reliable humans, calibration, length bias."""
    mvh, cal = manifest.get("model_vs_humans"), manifest.get("calibration")
    if not mvh and not cal:
        return []
    lines = ["", "## Reward model quality", ""]
    if mvh:
        lines += [_humans_line(mvh), f"- verdict: {mvh.get('verdict')}"]
    if cal:
        lines.append(
            f"- calibration of sigmoid(margin) on {cal.get('n')} held-out pairs (random orientation, seed "
            f"{cal.get('seed')}): ECE {_num(cal.get('ece'))}, Brier {_num(cal.get('brier'))}"
        )
        length = cal.get("length_correlation") or {}
        if length:
            lines.append(
                f"- reward vs reply length in tokens ({length.get('n')} replies): Pearson "
                f"{_num(length.get('pearson'))}, Spearman {_num(length.get('spearman'))}"
            )
    return lines


def _watch_lines(watch: dict[str, Any] | None) -> list[str]:
    """The "Reward-hacking watch" section: the judge, what the rule saw, and the plot (align/stages/watch.py)."""
    if not watch:
        return []
    fired = watch.get("diverged")
    if fired:
        verdict = (
            f"diverged at iteration {fired['iteration']}: over {fired['window']} sampled iterations the proxy reward "
            f"rose ({fired['proxy_slope']:+.3g}/iteration) while the judge fell ({fired['judge_slope']:+.3g}/iteration)"
        )
        if watch.get("stopped_at") is not None:
            verdict += "; training stopped there (watch.stop_on_divergence)"
    else:
        verdict = "no divergence: the proxy never rose while the judge fell (one-sided slope intervals)"
    plot = f"; plot `{watch['plot']}` in the run directory" if watch.get("plot") else ""
    return [
        "",
        "## Reward-hacking watch",
        "",
        f"- held-out judge `{watch.get('judge')}`, {watch.get('points')} sampled iterations (every "
        f"{watch.get('sample_every')}), window {watch.get('window')}, confidence {watch.get('confidence')}: "
        f"{verdict}{plot}",
    ]


def write_model_card(stage_dir: str | Path, tags: list[str] | None = None, reward_model: bool = False) -> Path | None:
    stage_dir = Path(stage_dir)
    manifest = read_manifest(stage_dir)
    if not manifest or not (stage_dir / "model").is_dir():
        return None
    cfg = stage_dir / "config.yaml"
    out = stage_dir / "model" / "README.md"
    text = render_model_card(manifest, cfg.read_text() if cfg.is_file() else "", tags, reward_model)
    atomic_write_text(out, text)
    return out
