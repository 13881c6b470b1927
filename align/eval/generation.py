"""One generation path for every stage that samples from a policy: compare, the on-policy pairs stage and PPO.

Two guarantees the stages rely on:

- **Neutral sampling.** Only the settings a recipe names shape the distribution. transformers fills every sampling
  field a ``GenerationConfig`` leaves unset from the model's own ``generation_config.json`` (a repetition penalty,
  ``min_p``, ``top_k=50``...), so a PPO rollout could be drawn from a different distribution than the one PPO then
  scores. :func:`neutral_defaults` swaps in a blank config for the call.
- **Speed.** Prompts are generated in batches of similar length (less left padding), with the KV cache; a LoRA
  policy can be generated from a merged copy (:func:`merged_copy`), which skips the adapter's extra matmuls on
  every layer at every decoding step.

Responses are cut after their first EOS; ``eos`` says whether the answer ended or hit ``max_new_tokens``.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig


@dataclass
class Sampling:
    """What shapes the distribution answers are drawn from; nothing else does (see the module docstring)."""

    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "0 = greedy decoding; > 0 samples."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (1 = off)."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0 = off)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling RNG."})

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, found {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), found {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], found {self.top_p}.")

    def config(self, eos_id: int, pad_id: int) -> GenerationConfig:
        """The complete generation config: every sampling field set, so nothing is inherited."""
        # Greedy decoding leaves the sampling fields unset (transformers warns about them otherwise); with
        # neutral_defaults in force nothing fills them from the model.
        sample = self.temperature > 0
        warpers = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k} if sample else {}
        return GenerationConfig(
            do_sample=sample,
            **warpers,
            min_p=None,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            max_new_tokens=self.max_new_tokens,
            eos_token_id=eos_id,
            pad_token_id=pad_id,
            use_cache=True,
        )


class RowSeededSampler:
    """Sampling whose randomness belongs to each row, not to the batch: a logits processor for greedy ``generate``
    that turns it into sampling from ``softmax(logits / temperature)`` (within the ``top_p`` nucleus).

    Row ``j`` draws its noise from a generator of its own, seeded with ``seeds[j]``, and picks
    ``argmax(logits / temperature + Gumbel noise)``, which is a draw from that softmax (the Gumbel-max trick). A
    row's answer then depends on its seed and its prompt only, not on which other prompts share its batch or on how
    many processes split the batch: with ``torch.multinomial`` on the batch, one process sampling 8 prompts and two
    processes sampling 4 each give different answers from the same seed. Each row takes one draw per decoding
    step, used or not, so its t-th token always uses its t-th draw.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"RowSeededSampler samples: temperature must be > 0, found {temperature}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], found {top_p}.")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1:
            # Keep the most probable tokens whose probabilities sum to top_p (at least one): drop a token when the
            # tokens more probable than it already hold top_p of the mass.
            ordered, order = torch.sort(logits, dim=-1, descending=True)
            before = ordered.softmax(dim=-1).cumsum(dim=-1) - ordered.softmax(dim=-1)
            drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= self.top_p)
            logits = logits.masked_fill(drop, float("-inf"))
        uniform = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in self.generators])
        tiny = torch.finfo(torch.float32).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1 - 1e-7)))
        return logits + gumbel.to(logits.device)


@dataclass
class Sample:
    """One generated answer: its prompt's index in the input list, the ids, the decoded text and whether it ended."""

    index: int
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    eos: bool


@contextlib.contextmanager
def neutral_defaults(model: Any) -> Iterator[None]:
    """Blank ``generation_config`` on the model and every module under it while generating (a peft wrapper
    delegates to the inner model, whose config is the one transformers reads)."""
    saved = [(m, m.generation_config) for m in model.modules() if getattr(m, "generation_config", None) is not None]
    try:
        for m, _ in saved:
            m.generation_config = GenerationConfig()
        yield
    finally:
        for m, cfg in saved:
            m.generation_config = cfg


def merged_copy(model: Any) -> Any:
    """A plain model with the LoRA adapter merged in, for fast generation (the original keeps its adapter, so its
    reference stays reachable). Models without an adapter come back as they are."""
    if not hasattr(model, "merge_and_unload"):
        return model
    return copy.deepcopy(model).merge_and_unload()


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: generation continues from the right edge of every row."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, s in enumerate(seqs):
        ids[j, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[j, width - len(s) :] = 1
    return ids, mask


def cut_at_eos(tokens: list[int], eos_id: int, pad_id: int) -> tuple[list[int], bool]:
    """The response up to and including its first EOS (True), or without trailing padding (False)."""
    if eos_id in tokens:
        return tokens[: tokens.index(eos_id) + 1], True
    while tokens and tokens[-1] == pad_id:
        tokens = tokens[:-1]
    return tokens, False


@torch.no_grad()
def generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    sampling: Sampling,
    *,
    num_samples: int = 1,
    batch_size: int = 64,
) -> list[Sample]:
    """``num_samples`` answers per prompt, returned grouped by prompt in input order (prompt 0's samples first).

    Rows are batched in order of prompt length so a batch shares little padding; the RNG is seeded once, so the
    same call gives the same answers."""
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    gen_cfg = sampling.config(eos_id, pad_id)
    rows = [(i, p) for i, p in enumerate(prompt_ids) for _ in range(num_samples)]
    order = sorted(range(len(rows)), key=lambda k: (len(rows[k][1]), k))
    device = next(model.parameters()).device
    torch.manual_seed(sampling.seed)
    done: dict[int, Sample] = {}
    was_training = model.training
    model.eval()
    with neutral_defaults(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = left_pad([rows[k][1] for k in chunk], pad_id)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=gen_cfg)
            for j, k in enumerate(chunk):
                resp, ended = cut_at_eos(out[j, ids.shape[1] :].tolist(), eos_id, pad_id)
                text = tokenizer.decode(resp, skip_special_tokens=True).strip()
                done[k] = Sample(rows[k][0], rows[k][1], resp, text, ended)
    model.train(was_training)
    return [done[k] for k in range(len(rows))]
