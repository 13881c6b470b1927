"""The tiny pipeline: all stages in seconds, skipping, resuming, re-running parts, the report, self-judging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from align.pipeline import build_pipeline, run_pipeline
from align.tracking import read_manifest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "tiny" / "pipeline.yaml"
TRAINED = ("sft", "rm", "judge", "dpo")


def _pipe(root: Path, *overrides: str):
    return build_pipeline(str(RECIPE), [f"root={root}", *overrides])


def _ended(pipe) -> dict[str, str]:
    return {s: (read_manifest(pipe.stage_dir(s)) or {}).get("ended_at") for s in pipe.stages}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, align_home, tiny_model_dir):
    root = tmp_path_factory.mktemp("pipe")
    pipe = _pipe(root)
    run_pipeline(pipe)
    return root, pipe


def test_pipeline_runs_every_stage_and_leaves_a_report_with_cis(finished):
    root, pipe = finished
    for s in TRAINED:
        assert read_manifest(pipe.stage_dir(s))["status"] == "complete"
        assert (pipe.stage_dir(s) / "model" / "README.md").read_text().startswith("---\nbase_model:")
    report = json.loads((pipe.stage_dir("compare") / "report.json").read_text())
    assert set(report["checkpoints"]) == {"tiny-llama", "sft", "dpo"}
    dpo = report["checkpoints"]["dpo"]
    assert dpo["reward"]["low"] <= dpo["reward"]["mean"] <= dpo["reward"]["high"]
    assert dpo["vs_reference"]["reference"] == "sft" and 0 <= dpo["vs_reference"]["win_rate"]["win_rate"] <= 1
    assert dpo["kl_to_reference"] is not None and dpo["implicit_reward_accuracy"]["n"] == 8
    assert report["judge"].endswith("judge/model") and report["warnings"] == []
    for png in ("rewards.png", "win_rates.png", "reward_vs_kl.png"):
        assert (pipe.stage_dir("compare") / png).stat().st_size > 1000
    assert "## Pairwise win rates" in (pipe.stage_dir("compare") / "report.md").read_text()
    # Stage wiring: DPO and RM started from SFT; the judge trained on the eval split only.
    # stored relative to the run root (issue 13: "lineage paths inside a run directory are stored relative to the
    # run root"); before, the path as the pipeline wrote it: str(pipe.stage_dir("sft") / "model")
    assert read_manifest(pipe.stage_dir("dpo"))["weights"]["merged"] == ["sft/model"]
    judge = read_manifest(pipe.stage_dir("judge"))
    assert judge["data"]["train"] < judge["data"]["eval"]
    assert read_manifest(pipe.stage_dir("data"))["card_hash"]


def test_second_run_skips_completed_stages(finished):
    root, pipe = finished
    before = _ended(pipe)
    run_pipeline(_pipe(root))
    assert _ended(pipe) == before


def test_only_reruns_one_stage_and_from_reruns_downstream(finished):
    root, pipe = finished
    before = _ended(pipe)
    run_pipeline(_pipe(root), only="compare")
    after = _ended(pipe)
    assert after["sft"] == before["sft"] and after["dpo"] == before["dpo"]
    assert (pipe.stage_dir("compare").with_name("compare.prev") / "report.json").is_file()

    run_pipeline(_pipe(root), from_stage="dpo")
    later = _ended(pipe)
    assert later["sft"] == before["sft"] and later["rm"] == before["rm"]
    assert later["dpo"] != before["dpo"]


def test_changed_upstream_stage_reruns_the_stages_built_on_it(tmp_path, align_home, tiny_model_dir):
    pipe = _pipe(tmp_path, "stages=[sft,dpo]")
    run_pipeline(pipe)
    first = _ended(pipe)
    run_pipeline(_pipe(tmp_path, "stages=[sft,dpo]"), only="sft")
    run_pipeline(_pipe(tmp_path, "stages=[sft,dpo]"))
    second = _ended(pipe)
    assert second["sft"] != first["sft"] and second["dpo"] != first["dpo"]


class _InterruptAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 2:
            raise KeyboardInterrupt


def test_interrupted_stage_resumes_and_the_pipeline_finishes(tmp_path, align_home, tiny_model_dir, monkeypatch):
    import align.stages.dpo as dpo

    pipe = _pipe(tmp_path, "stages=[sft,dpo]", "dpo.training.save_steps=1")
    real = dpo.run
    monkeypatch.setattr(dpo, "run", lambda recipe, callbacks=None: real(recipe, callbacks=[_InterruptAt()]))
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(pipe)
    monkeypatch.setattr(dpo, "run", real)
    assert read_manifest(pipe.stage_dir("dpo"))["status"] == "failed"
    sft_end = read_manifest(pipe.stage_dir("sft"))["ended_at"]
    run_pipeline(_pipe(tmp_path, "stages=[sft,dpo]", "dpo.training.save_steps=1"))
    m = read_manifest(pipe.stage_dir("dpo"))
    assert m["status"] == "complete" and m["attempts"] == 2
    assert read_manifest(pipe.stage_dir("sft"))["ended_at"] == sft_end
    steps = [
        json.loads(x)["step"]
        for x in (pipe.stage_dir("dpo") / "metrics.jsonl").read_text().splitlines()
        if "loss" in json.loads(x)
    ]
    assert steps == [1, 2, 3]  # step 1-2 before the interruption, 3 after resuming from checkpoint-2


def test_judge_that_a_checkpoint_optimised_against_raises_a_loud_warning(finished, tmp_path):
    from align.compare import CompareConfig, run_compare

    root, pipe = finished
    fake_ppo = tmp_path / "ppo"
    import shutil

    shutil.copytree(pipe.stage_dir("dpo"), fake_ppo)
    m = read_manifest(fake_ppo)
    m.update(stage="ppo", reward_model=str(pipe.stage_dir("rm")))
    (fake_ppo / "manifest.json").write_text(json.dumps(m))
    cfg = CompareConfig(
        checkpoints=[str(pipe.stage_dir("sft")), str(fake_ppo)],
        judge=str(pipe.stage_dir("rm")),
        max_prompts=4,
        max_new_tokens=4,
        n_boot=50,
        output=str(tmp_path / "cmp"),
    )
    report = run_compare(cfg, log=lambda *a: None)
    assert len(report["warnings"]) == 1 and "ppo" in report["warnings"][0]
    assert "WARNING" in (tmp_path / "cmp" / "report.md").read_text()


def test_unknown_stage_and_unknown_key_fail_before_anything_runs(tmp_path):
    from align.config import ConfigError

    with pytest.raises(ConfigError, match="unknown stage"):
        _pipe(tmp_path, "stages=[sft,rlhf]")
    with pytest.raises(ConfigError, match=r"\[dpo\].*'dpo.lora.rank'|\[dpo\].*rank"):
        _pipe(tmp_path, "dpo.lora.rank=4")


def test_rounds_sample_each_round_from_the_previous_rounds_policy_and_train_on_top_of_it(
    tmp_path, align_home, tiny_model_dir
):
    pipe = _pipe(tmp_path, "stages=[data,sft,rm,pairs,dpo,compare]", "rounds=2")
    assert pipe.stages == ["data", "sft", "rm", "pairs", "dpo", "pairs-r2", "dpo-r2", "compare"]
    run_pipeline(pipe)
    dpo, pairs2, dpo2 = (read_manifest(pipe.stage_dir(s)) for s in ("dpo", "pairs-r2", "dpo-r2"))
    assert pairs2["status"] == dpo2["status"] == "complete" and pairs2["stage"] == "pairs-r2"
    # round 2's pairs come from round 1's DPO policy, ranked by the same reward model
    assert pairs2["parent"] == "dpo" and pairs2["policy"]["adapter"] == dpo["weights"]["adapter"] == "dpo/model"
    assert pairs2["reward_model"]["path"] == read_manifest(pipe.stage_dir("pairs"))["reward_model"]["path"]
    # round 2's DPO trains on those pairs, on top of round 1's policy (SFT and round 1 merged under it)
    assert dpo2["data"]["sources"][0]["path"] == str(pipe.stage_dir("pairs-r2") / "pairs.jsonl")
    assert dpo2["weights"]["merged"] == ["sft/model", "dpo/model"]  # stored relative to the run root
    assert "- dpo" in (pipe.stage_dir("dpo-r2") / "model" / "README.md").read_text()
    report = json.loads((pipe.stage_dir("compare") / "report.json").read_text())
    assert set(report["checkpoints"]) == {"tiny-llama", "sft", "dpo", "dpo-r2"}


def test_rounds_need_the_on_policy_loop_and_a_whole_number(tmp_path):
    from align.config import ConfigError

    with pytest.raises(ConfigError, match="stages .* have none: add pairs"):
        _pipe(tmp_path, "stages=[data,sft,dpo,compare]", "rounds=2")
    with pytest.raises(ConfigError, match="rounds=0"):
        _pipe(tmp_path, "rounds=0")


def test_compare_gets_the_pipelines_model_loading_settings_but_not_its_dtype(tmp_path):
    pipe = _pipe(tmp_path, "model.attn_implementation=eager", "model.dtype=bfloat16")
    assert pipe.compare["model"]["attn_implementation"] == "eager" and "dtype" not in pipe.compare["model"]
    assert pipe.recipes["dpo"].model.attn_implementation == "eager"
