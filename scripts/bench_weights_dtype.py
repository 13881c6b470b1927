"""Forward and forward+backward time of SmolLM2-135M with a LoRA (r 16, all linear layers) under CPU bf16 autocast,
with the frozen weights stored in bf16 (align's recipes) or fp32 (TRL's default), with and without activation
checkpointing: why an online training step is not faster than TRL's default (docs/benchmarks.md).

    python scripts/bench_weights_dtype.py [--batch 16] [--tokens 200] [--keep 49] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time


def measure(path: str, dtype: str, checkpointing: bool, ids, keep: int, reps: int) -> tuple[float, float]:
    """(best no-grad forward s, best forward+backward s) over ``reps`` repetitions."""
    import torch
    from peft import LoraConfig, get_peft_model

    from align.models import load_causal_lm

    model = load_causal_lm(path, dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    forward, both = [], []
    for _ in range(reps):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            t = time.perf_counter()
            model(input_ids=ids, logits_to_keep=keep)
            forward.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, logits_to_keep=keep).logits.float().logsumexp(-1).mean()
        loss.backward()
        both.append(time.perf_counter() - t)
        model.zero_grad()
    return min(forward), min(both)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16, help="sequences (16 = a GRPO step of 4 prompts x 4 answers)")
    p.add_argument("--tokens", type=int, default=200, help="tokens per sequence (prompt + answer)")
    p.add_argument("--keep", type=int, default=49, help="positions projected through the LM head (answer + 1)")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from align.models import resolve_model_path

    path = resolve_model_path("builtin:smollm2-135m-instruct")
    ids = torch.randint(0, 49152, (args.batch, args.tokens), generator=torch.Generator().manual_seed(0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x {args.tokens} tokens")
    print("| weights | activation checkpointing | no-grad forward s | forward+backward s |\n|---|---|---|---|")
    for dtype in ("bfloat16", "float32"):
        for checkpointing in (False, True):
            fwd, both = measure(path, dtype, checkpointing, ids, args.keep, args.reps)
            print(f"| {dtype} | {'on' if checkpointing else 'off'} | {fwd:.2f} | {both:.2f} |", flush=True)


if __name__ == "__main__":
    main()
