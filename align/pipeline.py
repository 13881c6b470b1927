"""``align pipeline``: a recipe's stages in order, each into ``runs/<name>/<stage>/``, outputs passed along.

    align pipeline recipes/quickstart.yaml
    align pipeline recipes/quickstart.yaml --from dpo      # re-run dpo and everything after it
    align pipeline recipes/quickstart.yaml --only compare  # re-run one stage

A pipeline recipe holds shared sections (``model``, ``template``, ``lora``, ``data``, ``agreement``, ``speed``) and one
section per stage (``sft``, ``rm``, ``judge``, ``pairs``, ``dpo``, ``ppo``, ``grpo``, ``rloo``, ``kto``, ``compare``) whose
keys override the shared ones for that stage. Wiring, unless a stage section sets it: the RM starts from the SFT
adapter (``rm_from_sft``), DPO, PPO, GRPO, RLOO and KTO start from SFT, PPO, GRPO and RLOO score with the RM (unless
the section names ``reward_fn`` or ``rewards``), ``pairs`` samples from SFT and ranks with the RM, and DPO then trains
on those pairs (``pairs.jsonl``) instead of the dataset's own, ``judge`` is a second reward model trained only on the
eval split (prompts no policy saw) and is the held-out judge of a stage's ``watch`` section that names none, and
``compare`` compares base and every policy stage under the judge (or the RM when there is no judge stage).
``rounds: N`` repeats the pairs -> DPO loop: round r samples from round r-1's DPO policy and trains on top of it (its
reference), in ``pairs-r<r>/`` and ``dpo-r<r>/``. Every stage recipe is built and validated before anything runs.

Re-running skips stages whose manifest says complete with the same inputs (config, data file hashes, and the
upstream stages' identities), resumes an interrupted stage from its last complete checkpoint, and re-runs
downstream stages when an upstream one changed. ``--from``/``--only`` move the chosen stages' old directories
aside (``<stage>.prev``) and run them afresh.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from align.config import (
    ConfigError,
    build_dataclass,
    config_hash,
    deep_merge,
    load_recipe_dict,
    parse_overrides,
    read_yaml,
    resolve_raw,
    unknown_key_message,
)
from align.data.card import card_hash_for
from align.data.check import check_data
from align.data.prepare import prepare_preferences
from align.data.spec import DataConfig, DataError
from align.eval.compare import CompareConfig, run_compare
from align.runs import lineage_path
from align.stages import registry
from align.stages.plan import data_file_hashes, semantic_hash
from align.tracking import atomic_write_text, process_state, read_manifest

# Read from the stage registry (align/stages/registry.py), the one list of stages; kept under these names for callers.
STAGE_ORDER = registry.ORDER
TRAINING_STAGES = {name: s.module for name, s in registry.TRAINING.items()}
SHARED = ("model", "template", "lora", "data", "agreement", "speed")
TOP_KEYS = {"name", "root", "seed", "stages", "rounds", "rm_from_sft", "report_to", *SHARED, *STAGE_ORDER}


@dataclass
class Pipeline:
    name: str
    root: str
    stages: list[str]
    recipes: dict[str, Any] = field(default_factory=dict)  # stage -> built stage recipe (training stages)
    compare: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def stage_dir(self, stage: str) -> Path:
        return Path(self.root) / self.name / stage


def build_pipeline(
    path: str | None, overrides: list[str] | None = None, raw: dict[str, Any] | None = None
) -> Pipeline:
    """Read and validate the whole pipeline recipe; every stage's recipe is built here (fail fast)."""

    data = raw if raw is not None else read_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides or []))
    stage_sections = {k: data[k] for k in data if k in registry.BY_NAME or k in SHARED}
    data = {**resolve_raw({k: v for k, v in data.items() if k not in stage_sections}), **stage_sections}
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ConfigError(unknown_key_message(unknown[0], sorted(TOP_KEYS), "the pipeline recipe"))
    name = str(data.get("name") or "pipeline")
    root = str(data.get("root") or "runs")
    stages = list(data.get("stages") or registry.DEFAULT_PIPELINE)
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad:
        raise ConfigError(f"stages: unknown stage(s) {bad}; choose from {', '.join(STAGE_ORDER)}.")
    stages = [s for s in STAGE_ORDER if s in stages]  # always in dependency order
    loop = on_policy_loop(stages)
    stages = with_rounds(stages, loop, data.get("rounds", 1))
    pipe = Pipeline(name=name, root=root, stages=stages)
    run_common = {
        "name": name,
        "root": root,
        **({"seed": data["seed"]} if "seed" in data else {}),
        **({"report_to": data["report_to"]} if "report_to" in data else {}),
    }

    def wired(stage: str) -> dict[str, Any]:
        """The stage's section with the registry's wiring filled in where the section does not set it."""
        spec = registry.spec(stage)
        sec = {**spec.defaults, **dict(data.get(spec.name) or {})}
        start, trains_on, round_ = spec.starts_from, spec.trains_on, registry.round_of(stage)
        if round_ > 1:
            # a later round samples from, and trains on top of, the previous round's policy, on this round's pairs
            start = registry.round_name(loop[1], round_ - 1)
            sec["init_from"] = str(pipe.stage_dir(start))
            if trains_on:
                trains_on = registry.round_name(trains_on, round_)
                sec["data"] = {k: v for k, v in (sec.get("data") or {}).items() if k != "sources"}
        if start in stages and not (stage == "rm" and not data.get("rm_from_sft", True)):
            sec.setdefault("init_from", str(pipe.stage_dir(start)))
        if spec.scores_with in stages and "reward_fn" not in sec and "rewards" not in sec:
            sec.setdefault("reward_model", str(pipe.stage_dir(spec.scores_with)))
        watch = sec.get("watch")
        if spec.watch_judge in stages and isinstance(watch, dict) and not watch.get("judge"):
            sec["watch"] = {**watch, "judge": str(pipe.stage_dir(spec.watch_judge))}
        if trains_on in stages and "sources" not in (sec.get("data") or {}):
            # trains on the earlier stage's output; the shared data section still gives the split and drop settings
            made = pipe.stage_dir(trains_on) / f"{spec.trains_on}.jsonl"
            sec["data"] = {**(sec.get("data") or {}), "sources": [{"path": str(made)}]}
        return sec

    for stage in stages:
        if registry.makes(stage) == "data":
            pipe.data = resolve_raw({"data": data.get("data"), "agreement": data.get("agreement")})
            if not isinstance(pipe.data["data"], dict):
                raise ConfigError("The data stage needs a top-level data section (the preference data).")
            continue
        if registry.makes(stage) == "report":
            pipe.compare = dict(data.get("compare") or {})
            # compare loads the models the way the stages did (model.dtype aside: compare.dtype sets that)
            loading = {k: v for k, v in dict(data.get("model") or {}).items() if k != "dtype"}
            if loading:
                pipe.compare.setdefault("model", loading)
            continue
        module = registry.module_of(stage)
        fields = set(module.Recipe.__dataclass_fields__)
        stage_dict = {k: v for k, v in data.items() if k in SHARED and k in fields and v is not None}
        stage_dict = deep_merge(stage_dict, wired(stage))
        stage_dict["run"] = deep_merge(run_common, stage_dict.get("run") or {})
        try:
            recipe = load_recipe_dict(module.Recipe, stage_dict)
        except ConfigError as e:
            raise ConfigError(f"[{stage}] {e}") from None
        if recipe.STAGE != stage:  # the judge, or a later round: its own run directory
            recipe.STAGE = stage  # type: ignore[misc]
            if hasattr(recipe, "training"):  # the pairs stage trains nothing
                recipe.training.output_dir = str(pipe.stage_dir(stage) / "checkpoints")
        pipe.recipes[stage] = recipe
    return pipe


def on_policy_loop(stages: list[str]) -> list[str]:
    """The pipeline's on-policy loop: the stage that makes pairs, then the policy stages that train on them
    (``[pairs, dpo]``); empty when the pipeline has no such loop."""
    makers = [s for s in stages if registry.makes(s) == "pairs"]
    trainers = [s for s in stages if makers and registry.spec(s).trains_on == makers[0]]
    return [makers[0], *trainers] if trainers else []


def with_rounds(stages: list[str], loop: list[str], rounds: Any) -> list[str]:
    """The stages with rounds 2..n of the on-policy loop after round 1 (iterative DPO: each round's pairs come from
    the previous round's policy, which the round then trains on top of and takes as its DPO reference)."""
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"rounds={rounds!r}: give a whole number >= 1 (1 = sample pairs and train on them once).")
    if rounds == 1:
        return stages
    if not loop:
        raise ConfigError(
            f"rounds={rounds} repeats the on-policy loop, but stages {stages} have none: add pairs and the stage "
            "that trains on them, e.g. stages: [data, sft, rm, judge, pairs, dpo, compare]."
        )
    last = max(stages.index(s) for s in loop)
    later = [registry.round_name(s, r) for r in range(2, rounds + 1) for s in loop]
    return [*stages[: last + 1], *later, *stages[last + 1 :]]


def _move_aside(path: Path, log) -> None:
    if path.exists():
        prev = path.with_name(path.name + ".prev")
        if prev.exists():
            shutil.rmtree(prev)
        path.rename(prev)
        log(f"[align] pipeline: moved {path} aside to {prev}")


def run_data_stage(pipe: Pipeline, log=print) -> dict[str, Any]:
    """Validate the data, apply the agreement gate, write the data card and drop report into runs/<name>/data."""
    out = pipe.stage_dir("data")
    recipe_text = yaml.safe_dump({k: v for k, v in pipe.data.items() if v is not None}, sort_keys=True)
    inputs = {"recipe": recipe_text, "files": _source_hashes(pipe.data["data"])}
    key = _hash(inputs)
    m = read_manifest(out)
    if m and m.get("status") == "complete" and m.get("config_hash") == key:
        log(f"[align] data already checked in {out}; skipping")
        return m
    state = process_state()
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "recipe.yaml", recipe_text)
        t0 = time.time()
        try:
            checked = check_data(out / "recipe.yaml", out, name="data")
        except DataError as e:
            raise ConfigError(f"[data] {e}") from None
        log(f"[align] data: {checked['report']['kept']} of {checked['report']['total']} rows kept; card in {out}")
        card = json.loads((out / "data.json").read_text())
        manifest = {
            "stage": "data",
            "status": "complete",
            "config_hash": key,
            "card_hash": card_hash_for(out / "data.json"),
            "seconds": round(time.time() - t0, 2),
            "facts": {
                **{k: card.get(k) for k in ("rows", "split", "agreement") if k in card},
                # the gate's decision over both splits: annotators dropped, each split's counts
                "agreement_applied": card.get("preprocessing", {}).get("agreement_applied"),
            },
        }
        atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    state.wait_for_everyone()
    return read_manifest(out) or {}


def _stage_making(pipe: Pipeline, what: str) -> list[str]:
    """The pipeline's stages that make ``what`` ("policy", "reward_model", ...), in order (from the registry)."""
    return [s for s in pipe.stages if registry.makes(s) == what]


def run_compare_stage(pipe: Pipeline, log=print) -> dict[str, Any]:
    """Compare the pipeline's policies (base first) under the last reward model it trained (the judge, when it has
    one); the first policy stage (SFT) is the reference, and best-of-n samples it under the first reward model."""
    out = pipe.stage_dir(_stage_making(pipe, "report")[0])
    sec = dict(pipe.compare)
    include_base = sec.pop("include_base", True)
    policies = _stage_making(pipe, "policy")
    reward_models = _stage_making(pipe, "reward_model")
    ckpts = [str(pipe.stage_dir(s)) for s in policies]
    best_of_n = sec.pop("best_of_n", None) or []
    if best_of_n and policies:
        # What the reward model buys without training: the best of n SFT answers under the RM (not the judge).
        ns = best_of_n if isinstance(best_of_n, list) else [best_of_n]
        ckpts += [f"bon:{pipe.stage_dir(policies[0])}@{int(n)}" for n in ns]
        if reward_models:
            sec.setdefault("bon_reward_model", str(pipe.stage_dir(reward_models[0])))
    base = next((r.model.name_or_path for r in pipe.recipes.values()), None)
    if include_base and base:
        ckpts = [base, *ckpts]
    sec.setdefault("checkpoints", ckpts)
    if reward_models:
        sec.setdefault("judge", str(pipe.stage_dir(reward_models[-1])))
    sec.setdefault("reference", policies[0] if policies else None)
    sec["output"] = str(out)
    cfg = build_dataclass(CompareConfig, sec, "compare")
    upstream = {c: (read_manifest(c) or {}).get("ended_at") for c in [*cfg.checkpoints, cfg.judge or ""]}
    key = _hash({"cfg": {k: v for k, v in sec.items()}, "upstream": upstream})
    m = read_manifest(out)
    if m and m.get("status") == "complete" and m.get("config_hash") == key and (out / "report.json").is_file():
        log(f"[align] compare already done in {out}; skipping")
        return m
    pairs = None
    preference_trained = [s for s in policies if registry.spec(s).trains_on is not None]
    if preference_trained:
        # Held-out human-labelled pairs for DPO's implicit-reward accuracy: DPO's own data, or, when DPO trains on
        # on-policy pairs (all from training prompts), the preference data those pairs were sampled for.
        spec = registry.spec(preference_trained[0])
        src = pipe.recipes[spec.trains_on] if spec.trains_on in pipe.stages else pipe.recipes[spec.name]
        pairs = prepare_preferences(src.data, src.agreement).eval[: cfg.max_pairs]
    state = process_state()
    if state.is_main_process:
        report = run_compare(cfg, log=log, pairs=pairs)
        atomic_write_text(
            out / "manifest.json",
            json.dumps(
                {
                    "stage": "compare",
                    "status": "complete",
                    "config_hash": key,
                    "report": lineage_path(out / "report.md", out),
                    "warnings": report["warnings"],
                    "seconds": report["seconds"],
                    "ended_at": time.time(),
                },
                indent=2,
            ),
        )
    state.wait_for_everyone()
    return read_manifest(out) or {}


def _set_aside_if_stale(out: Path, recipe: Any, state: Any, log) -> None:
    """A stage directory made from other inputs (its recipe, data or an upstream stage changed) cannot be resumed or
    skipped: in a pipeline it is moved aside and the stage runs again (the stage command alone refuses instead)."""

    m = read_manifest(out)
    if m and m.get("config_hash") and m["config_hash"] != semantic_hash(recipe):
        if state.is_main_process:
            log(f"[align] pipeline: inputs of {out.name} changed since it ran; running it again")
            _move_aside(out, log)
        state.wait_for_everyone()


def run_pipeline(
    pipe: Pipeline, *, from_stage: str | None = None, only: str | None = None, log=print
) -> dict[str, Any]:
    for flag, value in (("--from", from_stage), ("--only", only)):
        if value and value not in pipe.stages:
            raise ConfigError(f"{flag} {value}: this pipeline's stages are {', '.join(pipe.stages)}.")
    selected = pipe.stages
    if only:
        selected = [only]
    elif from_stage:
        selected = pipe.stages[pipe.stages.index(from_stage) :]
    forced = set(selected) if (only or from_stage) else set()
    state = process_state()
    if state.is_main_process:
        for s in forced:
            _move_aside(pipe.stage_dir(s), log)
    state.wait_for_everyone()
    timings: dict[str, float] = {}
    for stage in selected:
        t0 = time.time()
        log(f"[align] pipeline {pipe.name}: stage {stage}")
        if registry.makes(stage) == "data":
            run_data_stage(pipe, log=log)
        elif registry.makes(stage) == "report":
            run_compare_stage(pipe, log=log)
        else:
            recipe = pipe.recipes[stage]
            _set_aside_if_stale(pipe.stage_dir(stage), recipe, state, log)
            registry.module_of(stage).run(recipe)
        gc.collect()
        timings[stage] = round(time.time() - t0, 1)
    summary = {
        "name": pipe.name,
        "stages": selected,
        "seconds": timings,
        "report": str(pipe.stage_dir("compare") / "report.md") if "compare" in selected else None,
    }
    if state.is_main_process:
        log(f"[align] pipeline {pipe.name} done: " + ", ".join(f"{k} {v}s" for k, v in timings.items()))
    return summary


def _source_hashes(data_section: dict[str, Any] | None) -> dict[str, str]:

    return data_file_hashes(DataConfig.from_dict(data_section or {}))


def _hash(obj: dict[str, Any]) -> str:

    return config_hash(obj, ignore=())
