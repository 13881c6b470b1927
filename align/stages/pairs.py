"""On-policy preference pairs: sample k answers per training prompt from a policy, rank them with a reward model,
keep best-vs-worst as a preference dataset that DPO trains on.

    align pairs recipes/smollm2-135m/pairs.yaml init_from=runs/quickstart/sft reward_model=runs/quickstart/rm

Why: DPO on a fixed, hand-written preference set learns to tell those pairs apart, not to write answers a held-out
judge prefers (the off-policy gap). Sampling the pairs from the policy being trained is the field's answer
(rejection sampling in Llama 2, iterative/online DPO, Tulu 3's on-policy preference data). A behaviour the policy
never produces (declining a harmful request, say) gives no sample to prefer, so ``pairs.dataset_replies`` lets the
dataset's own reply for a prompt join the candidates: the reward model can then pick it as the better answer.

Per prompt: ``num_samples`` answers drawn with the recipe's sampling settings and nothing else (one generation path,
:mod:`align.eval.generation`), plus the dataset replies when asked; every candidate scored by the reward model
(loaded through :class:`align.reward_models.RewardModelScorer`, which rebuilds an RM trained on top of SFT the way it
was trained). The best candidate that ended (EOS) becomes ``chosen``, the lowest-scored different one ``rejected``.
Prompts are dropped, and counted by reason, when no candidate ended (``no_eos``), all candidates are the same text
(``identical_answers``), or best - worst < ``pairs.min_margin`` (``margin_below_threshold``): kept + dropped =
prompts.

Run directory ``<root>/<name>/pairs/``: ``pairs.jsonl`` (conversational rows: ``prompt``, ``chosen``, ``rejected``
message lists, ``score_chosen``, ``score_rejected``, ``margin``, ``chosen_source`` / ``rejected_source`` = policy or
dataset), ``candidates.jsonl`` (every candidate with its score, written per chunk of prompts so a stopped run resumes
where it stopped, to the same result), a data card ``pairs.md`` / ``pairs.json``, ``config.yaml`` and
``manifest.json`` (sampling settings, policy and reward-model lineage, drop counts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from align.agreement import AgreementConfig
from align.config import ConfigError, ModelSection, RunSection, TemplateSection, stage_dir, to_plain
from align.data.card import build_card_facts, card_hash_for, write_card
from align.data.prepare import prepare_preferences
from align.data.prompts import load_prompts
from align.data.records import PreferenceRecord
from align.data.spec import DataConfig
from align.data.split import prompt_key
from align.data.validate import DropReport
from align.eval.generation import Sampling, generate, merged_copy
from align.reward_models import RewardModelScorer
from align.runs import lineage_path, lineage_weights, load_policy
from align.stages import common
from align.stages.plan import semantic_hash
from align.templates import Encoder, Skip, apply_template_choice
from align.tracking import RunRecorder, atomic_write_text, process_state, read_manifest

DATASET_REPLIES = ("none", "chosen", "both")
NO_EOS, IDENTICAL, LOW_MARGIN = "no_eos", "identical_answers", "margin_below_threshold"
PAIRS_FILE, CANDIDATES_FILE = "pairs.jsonl", "candidates.jsonl"


@dataclass
class PairsSection:
    num_samples: int = field(default=4, metadata={"help": "Answers sampled from the policy per prompt (k)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature of the candidates."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1 = off)."})
    max_new_tokens: int = field(default=96, metadata={"help": "Longest candidate answer in tokens."})
    dataset_replies: str = field(
        default="none",
        metadata={"help": "Dataset replies that join the candidates: none, chosen, or both (chosen and rejected)."},
    )
    min_margin: float = field(default=0.0, metadata={"help": "Drop prompts whose best - worst score is below this."})
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many training prompts."})
    batch_size: int = field(default=64, metadata={"help": "Generation batch (rows = prompts x samples)."})
    score_batch_size: int = field(default=32, metadata={"help": "Reward-model scoring batch."})

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ConfigError(f"pairs.num_samples={self.num_samples}: sample at least 1 answer per prompt.")
        if self.dataset_replies not in DATASET_REPLIES:
            raise ConfigError(
                f"pairs.dataset_replies={self.dataset_replies!r}: use one of {', '.join(DATASET_REPLIES)}."
            )
        if self.num_samples < 2 and self.dataset_replies == "none":
            raise ConfigError(
                "pairs.num_samples=1 with pairs.dataset_replies=none leaves one candidate per prompt, so no pair: "
                "sample 2 or more, or let the dataset replies join (pairs.dataset_replies=chosen)."
            )
        if self.temperature <= 0:
            raise ConfigError(
                f"pairs.temperature={self.temperature}: candidates must be sampled (> 0); greedy decoding gives k "
                "copies of one answer."
            )
        Sampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)


@dataclass
class Recipe:
    STAGE: ClassVar[str] = "pairs"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig | None = None
    agreement: AgreementConfig | None = field(default=None, metadata={"help": "Annotator agreement gate."})
    template: TemplateSection = field(default_factory=TemplateSection)
    run: RunSection = field(default_factory=RunSection)
    init_from: str | None = field(default=None, metadata={"help": "Policy to sample from: a stage dir (e.g. SFT)."})
    reward_model: str | None = field(default=None, metadata={"help": "Reward-model stage dir that ranks answers."})
    pairs: PairsSection = field(default_factory=PairsSection)

    def __post_init__(self) -> None:
        common.require_data(self)
        if not self.reward_model:
            raise ConfigError(
                "the pairs stage needs reward_model=<a reward-model stage directory> (e.g. runs/<name>/rm) to rank "
                "the sampled answers."
            )


# --------------------------------------------------------------------------------------------------------------
# Prompts and candidates


@dataclass
class PromptItem:
    id: str
    prompt: list[dict[str, str]]
    replies: list[tuple[str, str]] = field(default_factory=list)  # (text, "dataset") joining the candidates


def training_prompts(recipe: Recipe) -> tuple[list[PromptItem], dict[str, Any]]:
    """The training split's prompts (same prompt-hash split as every stage), with the dataset replies that join the
    candidates when ``pairs.dataset_replies`` asks for them; and the data facts for the manifest."""
    cfg = recipe.pairs
    if cfg.dataset_replies == "none":
        train, report = load_prompts(recipe.data)
        items = [PromptItem(p.id, p.prompt) for p in train]
        info = report.manifest_info(train)
    else:
        prepared = prepare_preferences(recipe.data, recipe.agreement)
        by_key: dict[str, PromptItem] = {}
        for r in prepared.train:
            item = by_key.setdefault(prompt_key(r.prompt), PromptItem(r.id, r.prompt))
            sides = [r.chosen] if cfg.dataset_replies == "chosen" else [r.chosen, r.rejected]
            for reply in sides:
                text = reply[-1]["content"]
                if text not in [t for t, _ in item.replies]:
                    item.replies.append((text, "dataset"))
        items = list(by_key.values())
        info = prepared.manifest_info()
    if cfg.max_prompts is not None:
        items = items[: cfg.max_prompts]
    return items, info


def choose_pair(candidates: list[dict[str, Any]], min_margin: float) -> tuple[dict | None, dict | None, str | None]:
    """(chosen, rejected, drop reason): the best-scored candidate that ended against the lowest-scored candidate
    with a different text."""
    ended = [c for c in candidates if c["eos"]]
    if not ended:
        return None, None, NO_EOS
    best = max(ended, key=lambda c: c["score"])
    others = [c for c in candidates if c["text"] != best["text"]]
    if not others:
        return None, None, IDENTICAL
    worst = min(others, key=lambda c: c["score"])
    if best["score"] - worst["score"] < min_margin:
        return None, None, LOW_MARGIN
    return best, worst, None


def pair_row(item: PromptItem, chosen: dict[str, Any], rejected: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item.id,
        "prompt": item.prompt,
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "score_chosen": chosen["score"],
        "score_rejected": rejected["score"],
        "margin": chosen["score"] - rejected["score"],
        "chosen_source": chosen["source"],
        "rejected_source": rejected["source"],
    }


class CandidateMaker:
    """Samples and scores candidates for chunks of prompts; each chunk's RNG is seeded from the run seed and the
    chunk index, so a resumed run draws what the uninterrupted one drew."""

    def __init__(self, recipe: Recipe, log=print):
        self.recipe = recipe
        policy_ref = recipe.init_from or recipe.model.name_or_path
        # every model.* field: dtype, revision (of model.name_or_path), trust_remote_code, attn_implementation
        model, tok, self.policy_info = load_policy(
            policy_ref, dtype=recipe.model.dtype, settings=recipe.model, log=log
        )
        apply_template_choice(tok, recipe.template.chat_template)
        self.tokenizer = tok
        self.model = merged_copy(model)
        self.encoder = Encoder(tok, system_prompt=recipe.data.system_prompt)
        self.rm = RewardModelScorer(recipe.reward_model, tok, dtype=recipe.model.dtype, log=log, settings=recipe.model)

    def chunk(self, items: list[PromptItem], index: int) -> list[list[dict[str, Any]]]:
        cfg = self.recipe.pairs
        sampling = Sampling(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=self.recipe.run.seed * 1_000_003 + index,
        )
        prompt_ids = [self.encoder.prompt(it.prompt) for it in items]
        samples = generate(
            self.model, self.tokenizer, prompt_ids, sampling, num_samples=cfg.num_samples, batch_size=cfg.batch_size
        )
        cands: list[dict[str, Any]] = []
        for s in samples:
            seq = s.prompt_ids + s.response_ids
            cands.append({"i": s.index, "text": s.text, "eos": s.eos, "source": "policy", "seq": seq})
        for i, it in enumerate(items):
            for text, source in it.replies:
                reply = [{"role": "assistant", "content": text}]
                try:
                    seq = self.encoder.reward_pair(it.prompt, reply, reply)["chosen_ids"]
                except Skip:
                    continue  # a reply the template cannot render as a finished turn cannot be scored fairly
                cands.append({"i": i, "text": text, "eos": True, "source": source, "seq": seq})
        scores = self.rm(
            [items[c["i"]].prompt for c in cands],
            [c["seq"] for c in cands],
            [c["text"] for c in cands],
            [c["eos"] for c in cands],
            batch_size=cfg.score_batch_size,
        )
        per_prompt: list[list[dict[str, Any]]] = [[] for _ in items]
        for c, sc in zip(cands, scores, strict=True):
            per_prompt[c["i"]].append({k: v for k, v in c.items() if k not in ("i", "seq")} | {"score": float(sc)})
        return per_prompt


# --------------------------------------------------------------------------------------------------------------
# The stage


def _read_done(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Candidates already made by an interrupted run, by prompt id (a torn last line is ignored: written again)."""
    done: dict[str, list[dict[str, Any]]] = {}
    if not path.is_file():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break
        done[row["id"]] = row["candidates"]
    return done


def _chunks(items: list[PromptItem], per_chunk: int) -> list[list[PromptItem]]:
    return [items[i : i + per_chunk] for i in range(0, len(items), per_chunk)]


def _data_card(out: Path, rows: list[dict[str, Any]], report: DropReport, recipe: Recipe) -> str | None:
    records = [
        PreferenceRecord(id=r["id"], prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"], source="pairs")
        for r in rows
    ]
    facts = build_card_facts(
        "pairs",
        kind="preference",
        train=records,
        eval_records=[],
        report=report,
        sources=[{"name": "pairs", "path": str(out / PAIRS_FILE), "format": "conversational", "rows": report.total}],
        leakage={"prompts_in_both": 0},
        settings={"split_method": "on-policy pairs from the training split", **to_plain(recipe.pairs)},
    )
    _, json_path = write_card(facts, out, "pairs")
    return card_hash_for(json_path)


def run(recipe: Recipe, callbacks: list | None = None) -> Path:
    """Make (or finish, or skip) the on-policy pairs dataset; returns the stage directory."""
    out = stage_dir(recipe)
    state = process_state()
    config_hash = semantic_hash(recipe)
    m = read_manifest(out)
    if m and m.get("status") == "complete" and m.get("config_hash") == config_hash and (out / PAIRS_FILE).is_file():
        print(f"[align] {recipe.STAGE} already complete in {out} (same config); skipping.")
        return out
    if m and m.get("config_hash") not in (None, config_hash):
        raise ConfigError(
            f"{out} holds pairs made from another recipe or upstream run; use a new run.name or delete that "
            "directory (the pipeline moves it aside for you)."
        )
    if state.is_main_process:
        _make_pairs(recipe, out, config_hash)
    state.wait_for_everyone()
    return out


def _make_pairs(recipe: Recipe, out: Path, config_hash: str) -> None:
    items, data_info = training_prompts(recipe)
    if not items:
        raise ConfigError("the pairs stage found no training prompts; check data.sources and data.eval_fraction.")
    cfg = recipe.pairs
    recorder = RunRecorder(
        run_dir=out,
        stage=recipe.STAGE,
        config=to_plain(recipe),
        config_hash=config_hash,
        model_ref=recipe.model.name_or_path,
        parent=lineage_path(recipe.init_from, out) if recipe.init_from else None,
        data=data_info,
    )
    recorder.start()
    maker = CandidateMaker(recipe)
    cand_path = out / CANDIDATES_FILE
    done = _read_done(cand_path)
    atomic_write_text(cand_path, "".join(json.dumps({"id": k, "candidates": v}) + "\n" for k, v in done.items()))
    per_chunk = max(1, cfg.batch_size // cfg.num_samples)
    for index, chunk in enumerate(_chunks(items, per_chunk)):
        if all(it.id in done for it in chunk):
            continue
        made = maker.chunk(chunk, index)
        with open(cand_path, "a", encoding="utf-8") as f:
            for it, cands in zip(chunk, made, strict=True):
                done[it.id] = cands
                f.write(json.dumps({"id": it.id, "candidates": cands}) + "\n")
        print(f"[align] {recipe.STAGE}: {len(done)}/{len(items)} prompts sampled and scored")
    rows, report, stats = _select(items, done, cfg.min_margin)
    atomic_write_text(out / PAIRS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    card_hash = _data_card(out, rows, report, recipe)
    recorder.finish(
        stats,
        sampling={k: v for k, v in to_plain(cfg).items() if k not in ("batch_size", "score_batch_size")},
        policy=_stored_policy_info(maker.policy_info, out),
        reward_model={
            "path": lineage_path(recipe.reward_model, out),
            "merged": [lineage_path(m, out) for m in maker.rm.merged],
            "retokenized": maker.rm.retokenize,
        },
        drops=report.to_dict(),
        card_hash=card_hash,
        pairs_file=PAIRS_FILE,
    )
    print(
        f"[align] {recipe.STAGE} complete: {report.kept} pairs from {report.total} prompts {report.dropped or ''} in {out}"
    )


def _stored_policy_info(info: dict[str, Any], out: Path) -> dict[str, Any]:
    """The sampling policy's lineage as the manifest stores it (paths inside the run root relative to it)."""
    stored = {**info, **lineage_weights(info, out)}
    if isinstance(info.get("reward_model"), str):  # a PPO policy: the reward-model run it was optimised against
        stored["reward_model"] = lineage_path(info["reward_model"], out)
    return stored


def _select(
    items: list[PromptItem], done: dict[str, list[dict[str, Any]]], min_margin: float
) -> tuple[list[dict[str, Any]], DropReport, dict[str, Any]]:
    """The kept pairs, the drop counts (kept + dropped = prompts) and summary figures for the manifest."""
    report = DropReport()
    rows: list[dict[str, Any]] = []
    best_policy, n_candidates, ended = [], 0, 0
    for it in items:
        cands = done[it.id]
        report.add_rows(1)
        n_candidates += len(cands)
        ended += sum(c["eos"] for c in cands if c["source"] == "policy")
        policy = [c["score"] for c in cands if c["source"] == "policy"]
        if policy:
            best_policy.append(max(policy) - sum(policy) / len(policy))
        chosen, rejected, reason = choose_pair(cands, min_margin)
        if reason:
            report.add_drop(reason, it.id)
            continue
        rows.append(pair_row(it, chosen, rejected))
    n_policy = sum(1 for it in items for c in done[it.id] if c["source"] == "policy")
    stats = {
        "prompts": len(items),
        "pairs": len(rows),
        "candidates": n_candidates,
        "policy_eos_rate": ended / max(n_policy, 1),
        "mean_margin": sum(r["margin"] for r in rows) / max(len(rows), 1),
        "chosen_from_dataset": sum(r["chosen_source"] == "dataset" for r in rows),
        "rejected_from_dataset": sum(r["rejected_source"] == "dataset" for r in rows),
        "best_of_n_gain": sum(best_policy) / max(len(best_policy), 1),
    }
    return rows, report, stats
