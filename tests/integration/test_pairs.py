"""The on-policy pairs stage on the tiny model: counts that add up, lineage in the manifest, a data card, resume to
the same result; and best-of-n in compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.config import ConfigError, load_recipe
from align.stages import pairs as pairs_stage
from align.stages import reward
from align.tracking import read_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, align_home, tiny_model_dir):
    root = tmp_path_factory.mktemp("pairs-rm")
    recipe = load_recipe(reward.Recipe, ROOT / "recipes/tiny/rm.yaml", [f"run.root={root}", "training.max_steps=2"])
    return reward.run(recipe)


def _recipe(root: Path, rm_dir: Path, *overrides: str):
    return load_recipe(
        pairs_stage.Recipe,
        ROOT / "recipes/tiny/pairs.yaml",
        [f"run.root={root}", f"reward_model={rm_dir}", *overrides],
    )


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_pairs_keep_best_against_worst_and_count_every_prompt(tmp_path, rm_dir):
    out = pairs_stage.run(_recipe(tmp_path, rm_dir, "pairs.min_margin=0.05"))
    m = read_manifest(out)
    rows = _rows(out / "pairs.jsonl")
    drops = m["drops"]
    assert drops["total"] == m["metrics"]["prompts"] == len(_rows(out / "candidates.jsonl"))
    assert drops["kept"] == len(rows) and drops["kept"] + sum(drops["dropped"].values()) == drops["total"]
    assert set(drops["dropped"]) <= {"no_eos", "identical_answers", "margin_below_threshold"}
    for r in rows:
        assert r["margin"] == pytest.approx(r["score_chosen"] - r["score_rejected"]) and r["margin"] >= 0.05
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]
    cands = {c["id"]: c["candidates"] for c in _rows(out / "candidates.jsonl")}
    for r in rows:  # chosen is the best candidate that ended, rejected the worst other one
        ended = [c["score"] for c in cands[r["id"]] if c["eos"]]
        assert r["score_chosen"] == pytest.approx(max(ended))
        assert r["score_rejected"] == pytest.approx(min(c["score"] for c in cands[r["id"]]))
    # 3 policy samples plus the dataset's chosen reply per prompt (pairs.dataset_replies=chosen)
    assert all(sum(c["source"] == "policy" for c in cs) == 3 for cs in cands.values())
    assert all(sum(c["source"] == "dataset" for c in cs) == 1 for cs in cands.values())
    # lineage and sampling settings
    assert m["status"] == "complete" and m["stage"] == "pairs"
    assert m["reward_model"]["path"] == str(rm_dir) and m["policy"]["base"] == "builtin:tiny-llama"
    assert m["sampling"]["num_samples"] == 3 and m["sampling"]["temperature"] == 0.8
    card = json.loads((out / "pairs.json").read_text())
    assert card["card_hash"] == m["card_hash"] and (out / "pairs.md").is_file()


def test_an_interrupted_pairs_run_resumes_to_the_same_pairs(tmp_path, rm_dir):
    full = pairs_stage.run(_recipe(tmp_path / "a", rm_dir, "pairs.batch_size=9"))
    cut = tmp_path / "b" / "tiny" / "pairs"
    cut.mkdir(parents=True)
    lines = (full / "candidates.jsonl").read_text().splitlines()
    # an interruption after the first chunk of 3 prompts, in the middle of writing the next line
    (cut / "candidates.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    resumed = pairs_stage.run(_recipe(tmp_path / "b", rm_dir, "pairs.batch_size=9"))
    assert (resumed / "pairs.jsonl").read_text() == (full / "pairs.jsonl").read_text()
    again = pairs_stage.run(_recipe(tmp_path / "b", rm_dir, "pairs.batch_size=9"))  # complete: skipped
    assert read_manifest(again)["ended_at"] == read_manifest(resumed)["ended_at"]


def test_pairs_settings_that_cannot_make_a_pair_are_refused_before_anything_runs(tmp_path, rm_dir):
    with pytest.raises(ConfigError, match="no pair"):
        _recipe(tmp_path, rm_dir, "pairs.num_samples=1", "pairs.dataset_replies=none")
    with pytest.raises(ConfigError, match="greedy"):
        _recipe(tmp_path, rm_dir, "pairs.temperature=0")
    with pytest.raises(ConfigError, match="reward_model"):
        # the tiny recipe names a reward model since d2ccddc; without one the stage must still refuse to load
        load_recipe(
            pairs_stage.Recipe, ROOT / "recipes/tiny/pairs.yaml", [f"run.root={tmp_path}", "reward_model=null"]
        )


def _spy_on_model_loading(monkeypatch) -> list[tuple[str, dict]]:
    """Record the keyword arguments of every policy and reward-model load that goes through align.runs."""
    import align.runs

    calls: list[tuple[str, dict]] = []
    for name in ("load_causal_lm", "load_sequence_classifier"):
        real = getattr(align.runs, name)

        def spy(path, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs))
            return _real(path, **kwargs)

        monkeypatch.setattr(align.runs, name, spy)
    return calls


LOADING = ["model.revision=main", "model.trust_remote_code=true", "model.attn_implementation=eager"]


def test_pairs_loads_its_policy_and_reward_model_with_every_model_setting(tmp_path, rm_dir, monkeypatch):
    calls = _spy_on_model_loading(monkeypatch)
    maker = pairs_stage.CandidateMaker(_recipe(tmp_path, rm_dir, *LOADING), log=lambda *a: None)
    assert [name for name, _ in calls] == ["load_causal_lm", "load_sequence_classifier"]
    for _, kwargs in calls:  # both bases are the recipe's builtin:tiny-llama, so the revision applies to both
        assert kwargs["revision"] == "main" and kwargs["trust_remote_code"] is True
        assert kwargs["attn_implementation"] == "eager"
    assert maker.model.config._attn_implementation == "eager"
    assert maker.rm.model.config._attn_implementation == "eager"


def test_compare_loads_with_the_model_section_and_refuses_a_model_dtype(tmp_path, rm_dir, monkeypatch):
    from align.compare import CompareConfig, run_compare
    from align.config import ConfigError, ModelSection

    calls = _spy_on_model_loading(monkeypatch)
    settings = ModelSection(revision="main", trust_remote_code=True, attn_implementation="eager")
    common = {"judge": str(rm_dir), "max_prompts": 2, "max_new_tokens": 2, "kl_samples": 0, "n_boot": 20}
    cfg = CompareConfig(checkpoints=["builtin:tiny-llama"], model=settings, output=str(tmp_path / "c"), **common)
    run_compare(cfg, log=lambda *a: None)
    assert [name for name, _ in calls] == ["load_causal_lm", "load_sequence_classifier"]
    assert all(kw["attn_implementation"] == "eager" and kw["trust_remote_code"] is True for _, kw in calls)
    assert all(kw["revision"] == "main" for _, kw in calls)
    bf16 = ModelSection(dtype="bfloat16")
    with pytest.raises(ConfigError, match="compare.dtype"):
        run_compare(CompareConfig(checkpoints=["builtin:tiny-llama"], model=bf16, **common), log=lambda *a: None)


def test_compare_reports_best_of_n_with_its_kl_bound(tmp_path, rm_dir):
    import math

    from align.compare import CompareConfig, best_of_n_kl_bound, run_compare

    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 0.75)
    cfg = CompareConfig(
        checkpoints=["builtin:tiny-llama", "bon:builtin:tiny-llama@4"],
        judge=str(rm_dir),
        bon_reward_model=str(rm_dir),
        max_prompts=6,
        max_new_tokens=6,
        n_boot=50,
        output=str(tmp_path / "cmp"),
    )
    report = run_compare(cfg, log=lambda *a: None)
    bon = report["checkpoints"]["bon4-tiny-llama"]
    assert bon["best_of_n"] == {"n": 4, "temperature": 0.8, "kl_bound": pytest.approx(math.log(4) - 0.75)}
    # judged by the reward model that picked the answers: the report says the judge is not independent
    assert any("bon4-tiny-llama" in w for w in report["warnings"])
    assert "best-of-4 bound" in (tmp_path / "cmp" / "report.md").read_text()
    with pytest.raises(ValueError, match="bon:<policy run>@<n>"):
        run_compare(CompareConfig(checkpoints=["bon:x@"], judge=str(rm_dir), output=str(tmp_path / "c2")))
