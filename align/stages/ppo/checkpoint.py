"""Checkpoint and RNG-state IO for PPO runs (written under a temporary name, ``state.json`` last)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from align.stages import common


def checkpoint_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def find_checkpoint(root: Path, log=print) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones are reported and skipped."""
    found = common.find_resume_checkpoint(root, log=log)
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
    common.trim_jsonl(path, last_iteration, key="iteration")
