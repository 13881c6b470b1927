"""Checkpoint and RNG-state IO for PPO runs (written under a temporary name, ``state.json`` last), and the trainer's
state methods (:class:`PPOCheckpointing`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from align.config import ConfigError
from align.stages.ppo.recipe import ADAPTER_WEIGHTS, CRITIC_DIR, STATE_FILE
from align.stages.resume import find_resume_checkpoint, is_complete_checkpoint, trim_jsonl


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def find_checkpoint(root: Path, log=print) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are reported and skipped."""
    found = find_resume_checkpoint(root, log=log)
    return Path(found) if found else None


def _rng_state() -> dict[str, Any]:
    import numpy as np

    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_rng(directory: Path, rank: int, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {"torch": state["torch"].contiguous()}
    for i, s in enumerate(state.get("cuda", [])):
        tensors[f"cuda_{i}"] = s.contiguous()
    save_file(tensors, str(directory / f"rng_state_{rank}.safetensors"))
    (directory / f"rng_state_{rank}.json").write_text(json.dumps({"python": state["python"], "numpy": state["numpy"]}))


def _read_rng(directory: Path, rank: int) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    js, st = directory / f"rng_state_{rank}.json", directory / f"rng_state_{rank}.safetensors"
    if not (js.is_file() and st.is_file()):
        return None
    state = json.loads(js.read_text())
    tensors = load_file(str(st))
    state["torch"] = tensors["torch"]
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("cuda_"))]
    if cuda:
        state["cuda"] = cuda
    return state


def _trim_jsonl(path: Path, last_iteration: int) -> None:
    """Drop rows logged after ``last_iteration`` (they are redone after a resume)."""
    trim_jsonl(path, last_iteration, key="iteration")


class PPOCheckpointing:
    """The part of :class:`~align.stages.ppo.trainer.PPOTrainer` that writes and restores its state: the policy
    adapter, value head and critic adapter, the optimizer, the KL controller, running moments, counters and every
    process's RNG. A mixin rather than functions so that ``trainer.save_checkpoint()`` and the other methods stay
    where callers and tests use them; it reads the trainer's attributes (``unwrapped``, ``optimizer``, ``plan``...)."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "prompt_cursor": self.prompt_cursor,
            "kl_controller": self.kl_ctl.state_dict(),
            "running_moments": self.moments.state_dict(),
            "nonfinite": {"skipped": self.nonfinite_skipped, "in_a_row": self.nonfinite_in_a_row},
            "world_size": self.accelerator.num_processes,
            "config_hash": self.plan.config_hash,
        }

    def write_weights(self, directory: Path) -> None:
        """The policy adapter alone (``adapter_model.safetensors`` + config, loadable as the policy), the value head
        (``value_head.safetensors``) and, with ``value_model: adapter``, the critic adapter as its own loadable peft
        adapter in ``critic/``."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        model = self.unwrapped
        model.policy.save_pretrained(str(directory), selected_adapters=[model.policy_adapter])
        head = {k: v.detach().cpu().contiguous() for k, v in model.value_head.state_dict().items()}
        save_file(head, str(directory / "value_head.safetensors"))
        if model.value_adapter:
            critic = directory / CRITIC_DIR
            critic.mkdir()
            model.policy.peft_config[model.value_adapter].save_pretrained(str(critic))
            weights = get_peft_model_state_dict(model.policy, adapter_name=model.value_adapter)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(critic / ADAPTER_WEIGHTS))

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/checkpoint-<iteration>`` atomically: a temporary directory renamed when complete."""
        from accelerate.utils import gather_object

        rng = gather_object([(self.accelerator.process_index, _rng_state())])
        root = self.out_dir / "checkpoints"
        final = root / f"checkpoint-{self.iteration}"
        if self.is_main:
            root.mkdir(parents=True, exist_ok=True)
            tmp = root / f".tmp-checkpoint-{self.iteration}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            self.write_weights(tmp)
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            for rank, state in rng:
                _write_rng(tmp, rank, state)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            state = {**self.state_dict(), "files": files, "saved_at": time.time()}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))  # last: marks the checkpoint complete
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._prune(root)
        self.accelerator.wait_for_everyone()
        return final

    def _prune(self, root: Path) -> None:
        keep = self.cfg.keep_checkpoints
        if keep is None:
            return
        complete = [p for p in checkpoint_dirs(root) if is_complete_checkpoint(p)]
        for p in complete[:-keep]:
            shutil.rmtree(p, ignore_errors=True)

    def load_checkpoint(self, path: Path) -> None:
        """Restore adapter, value head, optimizer, KL controller, running moments, counters and RNG states."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = json.loads((path / STATE_FILE).read_text())
        if state.get("config_hash") not in (None, self.plan.config_hash):
            self.log(f"[align] warning: {path} was saved by a different recipe (config hash differs); resuming anyway")
        model = self.unwrapped
        adapters = {model.policy_adapter: path / ADAPTER_WEIGHTS}
        if model.value_adapter:
            adapters[model.value_adapter] = path / CRITIC_DIR / ADAPTER_WEIGHTS
        for name, file in adapters.items():
            if not file.is_file():
                raise ConfigError(
                    f"checkpoint {path} has no {file.relative_to(path)}: it was saved with another ppo.value_model. "
                    "Resume with the recipe that wrote it, or start a new run.name."
                )
            result = set_peft_model_state_dict(model.policy, load_file(str(file)), adapter_name=name)
            unexpected = getattr(result, "unexpected_keys", None)
            if unexpected:
                raise RuntimeError(
                    f"checkpoint {path}: {name} adapter does not fit this model (e.g. {unexpected[:3]})."
                )
        model.value_head.load_state_dict(load_file(str(path / "value_head.safetensors")))
        try:
            self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        except ValueError as e:
            raise ConfigError(
                f"checkpoint {path}: its optimizer state does not fit this run ({e}); it was written by another "
                "align version or recipe. Start a new run.name (or run.resume=never to start this one over)."
            ) from e
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.moments.load_state_dict(state["running_moments"])
        self.iteration = int(state["iteration"])
        self.prompt_cursor = int(state["prompt_cursor"])
        self.nonfinite_skipped = int(state["nonfinite"]["skipped"])
        self.nonfinite_in_a_row = int(state["nonfinite"]["in_a_row"])
        rng = _read_rng(path, self.accelerator.process_index)
        if state.get("world_size") != self.accelerator.num_processes or rng is None:
            self.log(
                f"[align] warning: {path} was saved by {state.get('world_size')} process(es), this run has "
                f"{self.accelerator.num_processes}; the prompt order continues, sampling RNG streams are re-seeded"
            )
            from accelerate.utils import set_seed

            set_seed(self.recipe.run.seed + self.iteration, device_specific=True)
        else:
            _set_rng_state(rng)

    def save_final(self) -> Path:
        model_dir = self.out_dir / "model"
        if self.is_main:
            tmp = self.out_dir / f".tmp-model-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            self.write_weights(tmp)
            self.tokenizer.save_pretrained(str(tmp))
            (tmp / "chat_template.jinja").write_text(self.chat_template)
            if model_dir.exists():
                shutil.rmtree(model_dir)
            os.replace(tmp, model_dir)
        self.accelerator.wait_for_everyone()
        return model_dir
