"""Experience: the seeded prompt order, response masks and positions, and the ``Rollout`` batch one iteration makes."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prompt_indices(n: int, seed: int, start: int, count: int) -> list[int]:
    """``count`` prompt indices from position ``start`` of an endless seeded order (a fresh permutation of the
    ``n`` prompts per pass); deterministic, so a resumed run continues the same order from its cursor."""
    if n < 1:
        raise ValueError("prompt_indices: there are no prompts.")
    out: list[int] = []
    pos = start
    while len(out) < count:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        take = min(count - len(out), n - offset)
        out += perm[offset : offset + take]
        pos += take
    return out


def response_mask(responses: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask [B, R], has_eos [B]): 1 up to and including the first EOS (everything when there is none).

    Built from positions, never from ``token == pad``: with pad == EOS the EOS must stay a response token."""
    is_eos = responses == eos_id
    has_eos = is_eos.any(dim=1)
    first = torch.where(
        has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, responses.shape[1], dtype=torch.long)
    )
    positions = torch.arange(responses.shape[1], device=responses.device).expand_as(responses)
    return positions <= first.unsqueeze(1), has_eos


def leading_pad_columns(attention_mask: torch.Tensor) -> int:
    """How many leading columns are padding in every row. A micro-batch drops them before its forward: with left
    padding and explicit position ids the result is the same, and short prompts stop paying for the longest one."""
    used = attention_mask.bool().any(dim=0).nonzero()
    return int(used[0]) if len(used) else 0


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, as ``generate`` does for left-padded rows."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


@dataclass
class Rollout:
    """One process's rollout batch; sequence tensors are [B, P + R] (prompt left-padded, response right-padded)."""

    prompt_idx: list[int]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_width: int
    responses: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] bool
    has_eos: torch.Tensor  # [B] bool
    texts: list[str]
    raw_scores: torch.Tensor  # [B]
    scores: torch.Tensor  # [B] after penalty, normalisation, clipping
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    non_score_reward: torch.Tensor
    kl: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
