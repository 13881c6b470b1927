"""align.eval.generation.RowSeededSampler: sampling whose randomness belongs to each row, not to the batch."""

from __future__ import annotations

import pytest
import torch

from align.eval.generation import RowSeededSampler

LOGITS = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])


def picks(sampler: RowSeededSampler, logits: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy choices over the sampler's perturbed logits for ``steps`` decoding steps: [rows, steps]."""
    return torch.stack([sampler(None, logits).argmax(-1) for _ in range(steps)], dim=1)


def test_a_row_s_sample_depends_on_its_seed_not_on_the_rows_beside_it():
    # Issue 15: torch.multinomial over the batch made one process sampling 8 prompts and two sampling 4 each draw
    # different answers from the same seed, so 2-process PPO could not match 1-process PPO.
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 50, generator=gen)
    seeds = [1000 + i for i in range(8)]
    whole = picks(RowSeededSampler(seeds, temperature=1.0), logits, steps=12)
    first = picks(RowSeededSampler(seeds[:4], temperature=1.0), logits[:4], steps=12)
    second = picks(RowSeededSampler(seeds[4:], temperature=1.0), logits[4:], steps=12)
    assert torch.equal(torch.cat([first, second]), whole)
    reordered = picks(RowSeededSampler(seeds[::-1], temperature=1.0), logits.flip(0), steps=12)
    assert torch.equal(reordered.flip(0), whole)
    assert len({tuple(r) for r in whole.tolist()}) > 1  # the rows do sample, not all the same


def test_samples_follow_the_tempered_softmax():
    n, temperature = 40000, 0.7
    choice = picks(RowSeededSampler(list(range(n)), temperature), LOGITS.expand(n, -1), steps=1)[:, 0]
    freq = torch.bincount(choice, minlength=5).double() / n
    expected = (LOGITS.double() / temperature).softmax(-1)
    # 40k draws: each frequency is within ~4 standard errors (sqrt(p(1-p)/n) <= 0.0025) of its probability
    torch.testing.assert_close(freq, expected, atol=0.01, rtol=0)


def test_top_p_keeps_the_smallest_set_of_tokens_holding_that_mass():
    n, temperature = 20000, 0.7
    p = (LOGITS / temperature).softmax(-1)  # 0.700, 0.168, 0.040, 0.010, 0.082
    choice = picks(RowSeededSampler(list(range(n)), temperature, top_p=0.8), LOGITS.expand(n, -1), steps=1)[:, 0]
    freq = torch.bincount(choice, minlength=5).double() / n
    assert set(choice.tolist()) == {0, 1}  # 0.700 < 0.8, so the next token joins; together they hold 0.868
    assert freq[0].item() == pytest.approx(float(p[0] / (p[0] + p[1])), abs=0.015)
    top_only = picks(RowSeededSampler(list(range(200)), temperature, top_p=0.5), LOGITS.expand(200, -1), steps=1)
    assert set(top_only.flatten().tolist()) == {0}  # the most probable token alone holds more than 0.5


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        RowSeededSampler([0], temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        RowSeededSampler([0], temperature=1.0, top_p=0.0)
