"""kill -9 of SFT, RM, DPO, PPO, GRPO, RLOO and KTO on the tiny model, once during a training step and once during a checkpoint
write, each resumed to exactly the uninterrupted run: the same metrics.jsonl rows, manifest metrics and weights.

The kills are real SIGKILLs of a separate ``align`` process, sent by the process itself at a fixed point
(``tests/fixtures/kill9.py``), so each run covers the same fault every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.config import load_recipe
from align.stages import registry
from align.stages.common import checkpoint_problems
from align.tracking import read_manifest

ROOT = Path(__file__).resolve().parents[2]

# Each stage is cut twice: inside its 3rd optimizer step (checkpoint-2 is then the newest), and, resumed from there,
# half-way through writing checkpoint-4. PPO counts iterations: 4 optimizer steps each (2 epochs x 2 minibatches),
# so its 9th optimizer step is the first of iteration 3.
SETTINGS = {
    "sft": (["training.save_steps=2"], 3),
    "rm": (["training.save_steps=2"], 3),
    "dpo": (["training.save_steps=2"], 3),
    "grpo": (["training.save_steps=2"], 3),
    "rloo": (["training.save_steps=2"], 3),
    "kto": (["training.save_steps=2"], 3),
    "ppo": (
        ["ppo.num_iterations=5", "ppo.save_every=2", "ppo.rollout_batch_size=8", "ppo.mini_batch_size=4",
         "ppo.ppo_epochs=2", "ppo.sample_every=1"],
        9,
    ),
}  # fmt: skip
TIMING = ("time", "runtime", "per_second", "_per_s")


@pytest.fixture(autouse=True)
def one_thread():
    """The killed processes run on one thread (OMP_NUM_THREADS=1); the in-process runs match them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_in_process(stage: str, root: Path) -> Path:
    module = registry.module_of(stage)
    recipe = load_recipe(
        module.Recipe, ROOT / "recipes" / "tiny" / f"{stage}.yaml", [f"run.root={root}", *SETTINGS[stage][0]]
    )
    return Path(module.run(recipe))


def killed(stage: str, root: Path, when: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [
        sys.executable, "-m", "tests.fixtures.kill9", when, stage, str(ROOT / "recipes" / "tiny" / f"{stage}.yaml"),
        f"run.root={root}", *SETTINGS[stage][0],
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, (proc.returncode, proc.stderr[-3000:])
    return proc


def rows(out: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock figures (everything else must match the uninterrupted run)."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not any(t in k for t in TIMING)} for x in lines if x.strip()]


def final_metrics(out: Path) -> dict:
    return {k: v for k, v in read_manifest(out)["metrics"].items() if not any(t in k for t in TIMING)}


def weights(out: Path) -> dict[str, torch.Tensor]:
    found = sorted((out / "model").rglob("*.safetensors"))
    assert found
    return {f"{f.relative_to(out)}:{k}": v for f in found for k, v in load_file(str(f)).items()}


def assert_same_numbers(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_numbers(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-6), where
    else:
        assert a == b, where


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo", "grpo", "rloo", "kto"])
def test_kill_9_in_a_step_then_during_a_checkpoint_write_resumes_to_the_uninterrupted_run(
    stage, tmp_path, tiny_model_dir, capsys
):
    straight = run_in_process(stage, tmp_path / "straight")
    out = tmp_path / "cut" / "tiny" / stage
    ckpts = out / "checkpoints"
    unit = "iteration" if stage == "ppo" else "step"

    # (a) SIGKILL inside a training step: nothing after checkpoint-2 was saved, the manifest never left "running".
    killed(stage, tmp_path / "cut", f"step:{SETTINGS[stage][1]}")
    assert read_manifest(out)["status"] == "running"
    assert checkpoint_problems(ckpts / "checkpoint-2") == []
    assert sorted(p.name for p in ckpts.glob("checkpoint-*")) == ["checkpoint-2"]
    assert max(r[unit] for r in rows(out) if unit in r) == 2  # steps 1 and 2 (DPO also logs its step-0 check)

    # (b) Resumed from checkpoint-2, SIGKILL half-way through writing checkpoint-4's optimizer state.
    killed(stage, tmp_path / "cut", "save:4")
    if stage == "ppo":  # PPO writes into a temporary directory renamed when whole: the rename never ran
        assert not (ckpts / "checkpoint-4").exists() and list(ckpts.glob(".tmp-checkpoint-4-*"))
    else:
        assert any(
            "optimizer.pt" in p or "trainer_state.json" in p for p in checkpoint_problems(ckpts / "checkpoint-4")
        )

    # The rerun falls back to checkpoint-2 and finishes as if nothing had happened.
    resumed = run_in_process(stage, tmp_path / "cut")
    log = capsys.readouterr().out
    assert "checkpoint-2" in log and "resuming" in log
    assert read_manifest(resumed)["status"] == "complete" and read_manifest(resumed)["attempts"] == 3
    assert not list(ckpts.glob(".tmp-*"))  # a killed write's leftovers are cleared
    assert len(rows(resumed)) == len(rows(straight))  # the redone steps are not logged twice
    for i, (a, b) in enumerate(zip(rows(straight), rows(resumed))):
        assert_same_numbers(a, b, f"metrics.jsonl row {i}")
    assert_same_numbers(final_metrics(straight), final_metrics(resumed), "manifest metrics")
    w_straight, w_resumed = weights(straight), weights(resumed)
    assert w_straight.keys() == w_resumed.keys()
    for k in w_straight:
        torch.testing.assert_close(w_resumed[k], w_straight[k], rtol=0, atol=1e-6, msg=k)
