"""Tests for align.stages.ppo.losses (once align.stages.ppo_math): each function checked against its formula or an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from align.stages.ppo.losses import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    apply_missing_eos_penalty,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_per_token,
    last_token_index,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_var,
    masked_whiten,
    normalize_scores,
    policy_loss,
    token_rewards,
    value_loss,
)

RIGHT_MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
LEFT_MASK = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])


def _random_mask(gen: torch.Generator, batch: int, time: int, left: bool) -> torch.Tensor:
    """Random lengths in [1, time], padded on the left or the right."""
    lengths = torch.randint(1, time + 1, (batch,), generator=gen)
    pos = torch.arange(time)
    if left:
        return (pos >= time - lengths[:, None]).float()
    return (pos < lengths[:, None]).float()


def _naive_gae(rewards, values, mask, gamma, lam):
    """Reference GAE: per row, pull out the real tokens, run the textbook loop, put results back."""
    adv = torch.zeros_like(values, dtype=torch.float64)
    for b in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[b, t] > 0]
        r = [float(rewards[b, t]) for t in idx]
        v = [float(values[b, t]) for t in idx]
        last_adv = 0.0
        out = [0.0] * len(idx)
        for i in reversed(range(len(idx))):
            next_v = v[i + 1] if i + 1 < len(idx) else 0.0
            delta = r[i] + gamma * next_v - v[i]
            last_adv = delta + gamma * lam * last_adv
            out[i] = last_adv
        for i, t in enumerate(idx):
            adv[b, t] = out[i]
    returns = torch.where(mask.bool(), adv + values.double(), torch.zeros((), dtype=torch.float64))
    return adv, returns


# ------------------------------------------------------------------------------------------------------------
# Masked statistics
# ------------------------------------------------------------------------------------------------------------


def test_masked_mean_of_all_zero_mask_is_zero_not_nan():
    x = torch.randn(3, 4)
    zero_mask = torch.zeros(3, 4)
    assert masked_mean(x, zero_mask).item() == 0.0
    per_row = masked_mean(x, torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]), dim=1)
    assert not torch.isnan(per_row).any()
    torch.testing.assert_close(per_row, torch.stack([x[0, :2].mean(), torch.tensor(0.0), x[2, 3]]))
    assert masked_var(x, zero_mask).item() == 0.0
    assert masked_sum(x, zero_mask).item() == 0.0


def test_masked_mean_ignores_nonfinite_values_in_padding():
    x = torch.tensor([[1.0, 2.0, float("nan")], [3.0, float("inf"), 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, True]])
    assert masked_sum(x, mask).item() == pytest.approx(6.0)
    assert masked_mean(x, mask).item() == pytest.approx(1.5)


def test_masked_var_matches_numpy_on_masked_values():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    mask = _random_mask(gen, 4, 7, left=False)
    kept = x[mask.bool()].numpy()
    assert masked_var(x, mask).item() == pytest.approx(np.var(kept, ddof=1))
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(np.var(kept, ddof=0))


def test_whitening_uses_only_masked_in_values_and_zeroes_padding():
    gen = torch.Generator().manual_seed(1)
    x = 3.0 + 5.0 * torch.randn(6, 9, generator=gen, dtype=torch.float64)
    mask = _random_mask(gen, 6, 9, left=True)
    w = masked_whiten(x, mask)
    kept = w[mask.bool()]
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-10)
    assert kept.std(unbiased=True).item() == pytest.approx(1.0, rel=1e-6)
    assert (w[~mask.bool()] == 0).all()
    # Changing masked-out values (even to huge numbers) changes nothing.
    x2 = torch.where(mask.bool(), x, torch.full_like(x, 1e6))
    torch.testing.assert_close(masked_whiten(x2, mask), w)


def test_whitening_without_mean_shift_keeps_mean_and_scales_to_unit_std():
    gen = torch.Generator().manual_seed(2)
    x = 4.0 + 2.0 * torch.randn(5, 8, generator=gen, dtype=torch.float64)
    mask = _random_mask(gen, 5, 8, left=False)
    w = masked_whiten(x, mask, shift_mean=False)
    kept, orig = w[mask.bool()], x[mask.bool()]
    assert kept.mean().item() == pytest.approx(orig.mean().item(), rel=1e-9)
    assert kept.std().item() == pytest.approx(1.0, rel=1e-6)


def test_whitening_single_real_token_gives_zero_not_nan():
    x = torch.tensor([[5.0, 1.0, 2.0]])
    w = masked_whiten(x, torch.tensor([[0, 1, 0]]))
    assert torch.equal(w, torch.zeros_like(x))


def _in_two_processes(fn, parts):
    """``fn(part, reduce)`` run on each part at once in its own thread, ``reduce`` summing over the parts as an
    all-reduce does (every part waits for the others' tensors): what two processes would compute."""
    import threading

    posted: list = [None, None]
    barrier = threading.Barrier(2)
    results: list = [None, None]

    def run(rank):
        def reduce(t):
            posted[rank] = t
            barrier.wait()
            total = posted[0] + posted[1]
            barrier.wait()  # both read the sum before either posts its next tensor
            return total

        results[rank] = fn(parts[rank], reduce)

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_whitening_a_batch_split_over_two_processes_gives_the_whole_batch_s_result():
    # Issue 15: PPO whitened advantages per process, so two processes trained on other advantages than one
    # process holding the same global batch.
    gen = torch.Generator().manual_seed(5)
    x = 2.0 + 3.0 * torch.randn(8, 6, generator=gen, dtype=torch.float64)
    mask = _random_mask(gen, 8, 6, left=False)
    x[4:] += 5.0  # the parts differ in mean: per-part whitening would give other numbers
    whole = masked_whiten(x, mask)
    halves = _in_two_processes(
        lambda p, r: masked_whiten(p[0], p[1], reduce=r), [(x[:4], mask[:4]), (x[4:], mask[4:])]
    )
    torch.testing.assert_close(torch.cat(halves), whole)
    assert not torch.allclose(masked_whiten(x[:4], mask[:4]), whole[:4])


def test_explained_variance_of_a_batch_split_over_two_processes_is_the_whole_batch_s():
    gen = torch.Generator().manual_seed(6)
    returns = torch.randn(8, 5, generator=gen)
    values = returns + 0.5 * torch.randn(8, 5, generator=gen)
    values[:4] += 1.0  # a critic biased on one part only
    mask = _random_mask(gen, 8, 5, left=True)
    whole = explained_variance(values, returns, mask)
    parts = [(values[:4], returns[:4], mask[:4]), (values[4:], returns[4:], mask[4:])]
    halves = _in_two_processes(lambda p, r: explained_variance(*p, reduce=r), parts)
    assert halves[0] == pytest.approx(whole, rel=1e-9) and halves[1] == pytest.approx(whole, rel=1e-9)
    assert explained_variance(*parts[0]) != pytest.approx(whole, rel=1e-3)


# ------------------------------------------------------------------------------------------------------------
# Log-probs and entropy
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk_tokens", [None, 1, 4])
def test_logprobs_from_logits_equals_log_softmax_gather(dtype, chunk_tokens):
    gen = torch.Generator().manual_seed(3)
    logits = (3 * torch.randn(3, 5, 11, generator=gen)).to(dtype)
    labels = torch.randint(0, 11, (3, 5), generator=gen)
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[..., None]).squeeze(-1)
    got = logprobs_from_logits(logits, labels, chunk_tokens=chunk_tokens)
    assert got.dtype == torch.float32
    assert got.shape == labels.shape
    torch.testing.assert_close(got, expected)


def test_logprobs_from_logits_gradient_matches_reference():
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 4, 7, generator=gen)
    labels = torch.randint(0, 7, (2, 4), generator=gen)
    a = base.clone().requires_grad_(True)
    b = base.clone().requires_grad_(True)
    logprobs_from_logits(a, labels, chunk_tokens=3).sum().backward()
    torch.log_softmax(b, -1).gather(-1, labels[..., None]).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_logprobs_from_logits_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels shape"):
        logprobs_from_logits(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_entropy_of_uniform_distribution_is_log_vocab():
    vocab = 37
    h = entropy_from_logits(torch.full((2, 3, vocab), 1.7, dtype=torch.bfloat16), chunk_tokens=2)
    assert h.shape == (2, 3)
    torch.testing.assert_close(h, torch.full((2, 3), math.log(vocab)))


def test_entropy_matches_categorical_entropy():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 6, 9, generator=gen)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)


# ------------------------------------------------------------------------------------------------------------
# KL estimators
# ------------------------------------------------------------------------------------------------------------


def test_kl_estimators_match_their_definitions_and_k3_is_nonnegative():
    gen = torch.Generator().manual_seed(6)
    lp = -torch.rand(4, 10, generator=gen) * 5
    ref = -torch.rand(4, 10, generator=gen) * 5
    torch.testing.assert_close(kl_per_token(lp, ref, "k1"), lp - ref)
    torch.testing.assert_close(kl_per_token(lp, ref, "k2"), 0.5 * (lp - ref) ** 2)
    k3 = kl_per_token(lp, ref, "k3")
    torch.testing.assert_close(k3, (torch.exp(ref - lp) - 1) - (ref - lp))
    assert (k3 >= 0).all()
    assert (kl_per_token(lp, ref, "k2") >= 0).all()


def test_unknown_kl_estimator_lists_valid_ones():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_per_token(torch.zeros(2), torch.zeros(2), "k4")


def test_monte_carlo_k1_and_k3_approach_exact_kl():
    pi = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.2, 0.2, 0.25, 0.25], dtype=torch.float64)
    exact = float((pi * (pi / ref).log()).sum())  # KL(pi || ref) ~= 0.589
    gen = torch.Generator().manual_seed(7)
    samples = torch.multinomial(pi, 200_000, replacement=True, generator=gen)
    lp, ref_lp = pi.log()[samples], ref.log()[samples]
    tol = 0.02  # Monte-Carlo std errors at this sample size: ~0.0024 (k1), ~0.0012 (k3)
    k1 = kl_per_token(lp, ref_lp, "k1").mean().item()
    k3 = kl_per_token(lp, ref_lp, "k3").mean().item()
    assert k1 == pytest.approx(exact, abs=tol)
    assert k3 == pytest.approx(exact, abs=tol)
    # The tolerance has the power to catch a sign flip: the wrong-way estimates land far outside it.
    assert abs(-k1 - exact) > 10 * tol
    k3_swapped = kl_per_token(ref_lp, lp, "k3").mean().item()  # E_pi[ratio - 1 - log ratio] ~= 1.27
    assert abs(k3_swapped - exact) > 10 * tol


# ------------------------------------------------------------------------------------------------------------
# Rewards
# ------------------------------------------------------------------------------------------------------------


def test_last_token_index_for_right_and_left_padding():
    assert last_token_index(RIGHT_MASK).tolist() == [2, 4, 0]
    assert last_token_index(LEFT_MASK).tolist() == [4, 4, 4]
    assert last_token_index(RIGHT_MASK).dtype == torch.long


def test_last_token_index_names_an_empty_row():
    with pytest.raises(ValueError, match="row 1"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))


@pytest.mark.parametrize("mask", [RIGHT_MASK, LEFT_MASK], ids=["right", "left"])
def test_reward_lands_on_last_real_token_and_padding_is_zero(mask):
    gen = torch.Generator().manual_seed(8)
    lp = -torch.rand(3, 5, generator=gen) * 3
    ref = -torch.rand(3, 5, generator=gen) * 3
    scores = torch.tensor([2.0, -1.0, 0.5])
    kl_coef = 0.1
    rewards, non_score, kl = token_rewards(scores, lp, ref, mask, kl_coef)
    m = mask.bool()
    last = last_token_index(mask)
    kl_part = -kl_coef * (lp - ref)
    for b in range(3):
        for t in range(5):
            if not m[b, t]:
                assert rewards[b, t] == 0 and kl[b, t] == 0
            elif t == last[b]:
                assert rewards[b, t].item() == pytest.approx(kl_part[b, t].item() + scores[b].item())
            else:
                assert rewards[b, t].item() == pytest.approx(kl_part[b, t].item())
    torch.testing.assert_close(non_score, torch.where(m, kl_part, 0.0).sum(1))
    torch.testing.assert_close(kl, torch.where(m, lp - ref, 0.0))
    # The total reward of a sequence is its score plus its KL part.
    torch.testing.assert_close(rewards.sum(1), scores + non_score)


def test_token_rewards_uses_requested_estimator():
    lp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-1.5, -1.0]])
    _, _, kl = token_rewards(torch.tensor([0.0]), lp, ref, torch.ones(1, 2), 0.1, estimator="k3")
    torch.testing.assert_close(kl, kl_per_token(lp, ref, "k3"))
    assert (kl >= 0).all()


def test_missing_eos_penalty_hits_only_truncated_completions():
    scores = torch.tensor([1.0, 2.0, 3.0])
    out = apply_missing_eos_penalty(scores, torch.tensor([True, False, True]), 1.5)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5, 3.0]))
    assert scores.tolist() == [1.0, 2.0, 3.0]  # not modified in place
    with pytest.raises(ValueError, match=">= 0"):
        apply_missing_eos_penalty(scores, torch.tensor([True, False, True]), -1.0)


# ------------------------------------------------------------------------------------------------------------
# GAE
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [RIGHT_MASK, LEFT_MASK], ids=["right", "left"])
def test_gae_with_unit_gamma_lambda_and_zero_values_is_reward_to_go(mask):
    gen = torch.Generator().manual_seed(9)
    rewards = torch.randn(3, 5, generator=gen, dtype=torch.float64) * mask
    adv, ret = gae(rewards, torch.zeros_like(rewards), mask, gamma=1.0, lam=1.0)
    # Reward-to-go: reverse cumulative sum (padding holds 0 reward, so it adds nothing), zero on padding.
    to_go = rewards.flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(adv, to_go)
    torch.testing.assert_close(ret, to_go)


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.95), (0.9, 0.5), (1.0, 0.0), (0.5, 1.0)])
def test_gae_matches_naive_per_sequence_loop(left, gamma, lam):
    gen = torch.Generator().manual_seed(10)
    batch, time = 6, 12
    mask = _random_mask(gen, batch, time, left=left)
    rewards = torch.randn(batch, time, generator=gen, dtype=torch.float64)
    values = torch.randn(batch, time, generator=gen, dtype=torch.float64)
    # Garbage on padding must not leak into real positions.
    rewards = torch.where(mask.bool(), rewards, torch.full_like(rewards, 1e3))
    values = torch.where(mask.bool(), values, torch.full_like(values, -1e3))
    adv, ret = gae(rewards, values, mask, gamma, lam)
    ref_adv, ref_ret = _naive_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)
    assert (adv[~mask.bool()] == 0).all() and (ret[~mask.bool()] == 0).all()


def test_gae_same_result_for_left_and_right_padding_of_same_sequences():
    rewards_r = torch.tensor([[0.1, 0.2, 1.0, 0.0], [0.3, -0.5, 0.0, 0.0]])
    values_r = torch.tensor([[0.5, 0.4, 0.3, 0.0], [0.2, 0.1, 0.0, 0.0]])
    mask_r = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    # Shift each row so its real tokens end at the right edge.
    shifts = [1, 2]

    def roll(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[b].roll(shifts[b]) for b in range(2)])

    adv_r, ret_r = gae(rewards_r, values_r, mask_r, 0.9, 0.8)
    adv_l, ret_l = gae(roll(rewards_r), roll(values_r), roll(mask_r), 0.9, 0.8)
    torch.testing.assert_close(roll(adv_r), adv_l)
    torch.testing.assert_close(roll(ret_r), ret_l)


# ------------------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------------------


def test_ratio_one_gives_zero_approx_kl_and_clipfrac():
    gen = torch.Generator().manual_seed(11)
    lp = -torch.rand(4, 6, generator=gen)
    adv = torch.randn(4, 6, generator=gen)
    mask = _random_mask(gen, 4, 6, left=False)
    loss, stats = policy_loss(lp, lp.clone(), adv, mask, clip_range=0.2)
    assert stats["approx_kl"].item() == 0.0
    assert stats["approx_kl_k1"].item() == 0.0
    assert stats["clipfrac"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    assert stats["ratio_max"].item() == pytest.approx(1.0)
    # With ratio 1 the surrogate is just minus the mean advantage.
    assert loss.item() == pytest.approx(-masked_mean(adv, mask).item(), abs=1e-6)


def test_clipped_surrogate_hand_example():
    # Four real tokens, clip 0.2 (ratio clamped to [0.8, 1.2]); pg1 = -A * r, pg2 = -A * clamp(r):
    #   A=+1, r=1.5: pg1 = -1.5, pg2 = -1.2 -> max -1.2 (clipped term active)
    #   A=-1, r=1.5: pg1 = +1.5, pg2 = +1.2 -> max +1.5
    #   A=+1, r=0.5: pg1 = -0.5, pg2 = -0.8 -> max -0.5
    #   A=-1, r=0.5: pg1 = +0.5, pg2 = +0.8 -> max +0.8 (clipped term active)
    # loss = (-1.2 + 1.5 - 0.5 + 0.8) / 4 = 0.15; clipfrac = 2/4 = 0.5; ratio_mean = 1.0; ratio_max = 1.5.
    # approx_kl = mean((r - 1) - ln r) = (2 * (0.5 - ln 1.5) + 2 * (-0.5 - ln 0.5)) / 4
    #           = (0.0945349 * 2 + 0.1931472 * 2) / 4 = 0.1438410
    # approx_kl_k1 = mean(-ln r) = -(2 ln 1.5 + 2 ln 0.5) / 4 = -ln(0.75) / 2 = 0.1438410 (equal here since
    # mean(r) = 1). A fifth, padded token with a huge ratio and advantage must change nothing.
    ratios = torch.tensor([[1.5, 1.5, 0.5, 0.5, 9.0]])
    old = torch.full((1, 5), -2.0)
    new = (old + ratios.log()).requires_grad_(True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, stats = policy_loss(new, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert stats["clipfrac"].item() == pytest.approx(0.5)
    assert stats["ratio_mean"].item() == pytest.approx(1.0, abs=1e-6)
    assert stats["ratio_max"].item() == pytest.approx(1.5, abs=1e-6)
    assert stats["approx_kl"].item() == pytest.approx(0.1438410, abs=1e-6)
    assert stats["approx_kl_k1"].item() == pytest.approx(0.1438410, abs=1e-6)
    # Gradient flows only through unclipped real tokens: d(-A r)/d(log r) / 4 = -A r / 4.
    loss.backward()
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, 1.5 / 4, -0.5 / 4, 0.0, 0.0]]))


def test_value_loss_without_clipping_active():
    # |V - V_old| = 0.1 < 0.2, so clip(V) = V and both terms are equal:
    # (1.0 - 1.5)^2 = 0.25, (2.0 - 1.0)^2 = 1.0 -> loss = 0.5 * (0.25 + 1.0) / 2 = 0.3125; vf_clipfrac = 0.
    values = torch.tensor([[1.0, 2.0, 7.0]])
    old = torch.tensor([[1.1, 1.9, 0.0]])
    returns = torch.tensor([[1.5, 1.0, -5.0]])
    mask = torch.tensor([[1, 1, 0]])  # the third, padded token would add a lot if it leaked
    loss, stats = value_loss(values, old, returns, mask, clip_range_value=0.2)
    assert loss.item() == pytest.approx(0.3125)
    assert stats["vf_clipfrac"].item() == 0.0


def test_value_loss_with_clipping_active():
    # Token 1: V=2, V_old=1, R=2 -> clip(V) = 1.2; unclipped 0, clipped (1.2 - 2)^2 = 0.64 -> 0.64 (clipped wins)
    # Token 2: V=0, V_old=1, R=3 -> clip(V) = 0.8; unclipped 9, clipped (0.8 - 3)^2 = 4.84 -> 9
    # loss = 0.5 * (0.64 + 9) / 2 = 2.41; vf_clipfrac = 1/2.
    values = torch.tensor([[2.0, 0.0]], requires_grad=True)
    old = torch.tensor([[1.0, 1.0]])
    returns = torch.tensor([[2.0, 3.0]])
    loss, stats = value_loss(values, old, returns, torch.ones(1, 2), clip_range_value=0.2)
    assert loss.item() == pytest.approx(2.41)
    assert stats["vf_clipfrac"].item() == pytest.approx(0.5)
    # Where the clipped term wins, no gradient reaches V: token 2 gets 0.5 * 2 * (0 - 3) / 2 = -1.5.
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -1.5]]))


def test_explained_variance_perfect_and_mean_predictor():
    gen = torch.Generator().manual_seed(12)
    returns = torch.randn(4, 8, generator=gen)
    mask = _random_mask(gen, 4, 8, left=True)
    assert explained_variance(returns.clone(), returns, mask) == pytest.approx(1.0)
    mean_values = torch.full_like(returns, masked_mean(returns, mask).item())
    assert explained_variance(mean_values, returns, mask) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(explained_variance(torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3)))


# ------------------------------------------------------------------------------------------------------------
# KL controllers
# ------------------------------------------------------------------------------------------------------------


def test_adaptive_kl_rises_above_target_and_falls_below():
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    ctl.update(12.0, n_steps=256)  # error clipped to +0.2: 0.2 * (1 + 0.2 * 256 / 10000) = 0.201024
    assert ctl.value == pytest.approx(0.201024)
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10_000)
    ctl.update(3.0, n_steps=256)  # error -0.5 clipped to -0.2: 0.2 * (1 - 0.00512) = 0.198976
    assert ctl.value == pytest.approx(0.198976)
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=1_000)
    ctl.update(torch.tensor(6.6), n_steps=1_000)  # error 0.1 (inside the clip): 0.2 * 1.1 = 0.22
    assert ctl.value == pytest.approx(0.22)


def test_kl_controllers_state_round_trip():
    ctl = AdaptiveKLController(0.1, target=4.0, horizon=5_000)
    for kl in (9.0, 1.0, 5.5, 4.2):
        ctl.update(kl, n_steps=64)
    resumed = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.state_dict() == ctl.state_dict()
    ctl.update(7.0, 64)
    resumed.update(7.0, 64)
    assert resumed.value == ctl.value
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05
    other = FixedKLController(1.0)
    other.load_state_dict(fixed.state_dict())
    assert other.value == 0.05
    with pytest.raises(ValueError, match="adaptive"):
        other.load_state_dict(ctl.state_dict())


# ------------------------------------------------------------------------------------------------------------
# Running moments
# ------------------------------------------------------------------------------------------------------------


def test_running_moments_equal_numpy_over_concatenated_batches():
    gen = torch.Generator().manual_seed(13)
    batches = [10.0 + 3.0 * torch.randn(n, generator=gen) for n in (7, 1, 32, 5, 64)]
    rm = RunningMoments()
    for b in batches:
        rm.update(b)
    everything = torch.cat(batches).double().numpy()
    assert rm.count == everything.size
    assert rm.mean == pytest.approx(np.mean(everything), rel=1e-12)
    assert rm.std == pytest.approx(np.std(everything), rel=1e-9)
    resumed = RunningMoments()
    resumed.load_state_dict(rm.state_dict())
    extra = torch.randn(9, generator=gen)
    rm.update(extra)
    resumed.update(extra)
    assert resumed.state_dict() == rm.state_dict()


def test_running_moments_rejects_nonfinite_scores():
    with pytest.raises(ValueError, match="non-finite"):
        RunningMoments().update(torch.tensor([1.0, float("nan")]))


def test_normalize_scores_standardises_and_clips():
    scores = torch.tensor([0.0, 2.0, 4.0, 100.0])
    out = normalize_scores(scores, mean=2.0, std=2.0)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0, 49.0]))
    torch.testing.assert_close(normalize_scores(scores, 2.0, 2.0, clip=3.0), torch.tensor([-1.0, 0.0, 1.0, 3.0]))
    assert torch.isfinite(normalize_scores(scores, 2.0, 0.0)).all()


# -- added from the mutation-testing survivors (docs/faults.md, "Mutation testing") -----------------------------


@pytest.mark.parametrize("gamma,lam", [(1.5, 0.9), (0.9, 1.5), (-0.1, 0.9), (0.9, -0.1), (2.0, 2.0)])
def test_gae_rejects_gamma_or_lam_outside_the_unit_interval(gamma, lam):
    r = v = torch.zeros(1, 3)
    with pytest.raises(ValueError, match=rf"gamma and lam must lie in \[0, 1\], got gamma={gamma}, lam={lam}"):
        gae(r, v, torch.ones(1, 3), gamma, lam)


@pytest.mark.parametrize("gamma,lam", [(0.0, 0.0), (1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_gae_accepts_the_interval_ends(gamma, lam):
    r, v = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.25, 0.125]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma, lam)
    # One-step TD at gamma = 0: the advantage is r - V whatever lam is.
    if gamma == 0.0:
        torch.testing.assert_close(adv, r - v)
    torch.testing.assert_close(ret, adv + v)


def test_gae_on_single_token_responses_is_reward_minus_value():
    r, v = torch.tensor([[1.0], [-2.0]]), torch.tensor([[0.25], [0.5]])
    adv, ret = gae(r, v, torch.ones(2, 1), 0.99, 0.95)
    torch.testing.assert_close(adv, r - v)
    torch.testing.assert_close(ret, r)


def test_gae_and_token_rewards_check_every_tensor_shape():
    good, bad = torch.zeros(2, 3), torch.zeros(2, 4)
    for kwargs in ({"values": bad}, {"mask": bad}, {"rewards": bad}):
        args = {"rewards": good, "values": good, "mask": torch.ones(2, 3), **kwargs}
        with pytest.raises(ValueError, match="shape"):
            gae(args["rewards"], args["values"], args["mask"], 1.0, 1.0)
    for kwargs in ({"logprobs": bad}, {"ref_logprobs": bad}, {"mask": bad}):
        args = {"logprobs": good, "ref_logprobs": good, "mask": torch.ones(2, 3), **kwargs}
        with pytest.raises(ValueError, match="shape"):
            token_rewards(torch.zeros(2), args["logprobs"], args["ref_logprobs"], args["mask"], 0.1)
    with pytest.raises(ValueError, match=r"scores must have shape \[batch\] = \(2,\), got \(3,\)"):
        token_rewards(torch.zeros(3), good, good, torch.ones(2, 3), 0.1)


# ------------------------------------------------------------------------------------------------------------
# Refusals and edge cases (added from mutation testing: docs/faults.md, "Mutation testing")
# ------------------------------------------------------------------------------------------------------------


def test_a_tensor_that_would_silently_broadcast_is_refused_naming_it():
    # (1, 3) broadcasts against (2, 3): without the shape check each function would return a plausible number.
    good, row = torch.zeros(2, 3), torch.zeros(1, 3)
    mask = torch.ones(2, 3)
    calls = {
        "kl_per_token": lambda a: kl_per_token(a["logprobs"], a["ref_logprobs"]),
        "policy_loss": lambda a: policy_loss(a["logprobs"], a["old_logprobs"], a["advantages"], a["mask"], 0.2),
        "value_loss": lambda a: value_loss(a["values"], a["old_values"], a["returns"], a["mask"], 0.2),
        "explained_variance": lambda a: explained_variance(a["values"], a["returns"], a["mask"]),
    }
    names = {
        "kl_per_token": ("logprobs", "ref_logprobs"),
        "policy_loss": ("logprobs", "old_logprobs", "advantages", "mask"),
        "value_loss": ("values", "old_values", "returns", "mask"),
        "explained_variance": ("values", "returns", "mask"),
    }
    for fn, args in names.items():
        for bad in args:
            given = {a: (mask if a == "mask" else good) for a in args} | {bad: row}
            other = args[1] if bad == args[0] else args[0]
            with pytest.raises(ValueError) as err:
                calls[fn](given)
            msg = str(err.value)
            assert f"`{bad}` has shape (1, 3)" in msg or f"`{other}` has shape (2, 3)" in msg, (fn, bad, msg)
            assert msg.endswith("they must match (batch x response tokens)."), msg
    with pytest.raises(ValueError, match=r"`has_eos` has shape \(1,\) but `scores` has shape \(2,\)"):
        apply_missing_eos_penalty(torch.zeros(2), torch.ones(1, dtype=torch.bool), 1.0)
    with pytest.raises(ValueError, match=r"`has_eos` has shape \(2,\) but `scores` has shape \(1,\)"):
        apply_missing_eos_penalty(torch.zeros(1), torch.ones(2, dtype=torch.bool), 1.0)


def test_a_mask_that_cannot_broadcast_is_refused_with_both_shapes():
    with pytest.raises(
        ValueError, match=r"^mask of shape \(2, 4\) cannot be broadcast to values of shape \(2, 3\)\.$"
    ):
        masked_mean(torch.zeros(2, 3), torch.ones(2, 4))


def test_unbiased_variance_of_two_values_is_half_their_squared_difference():
    x, mask = torch.tensor([[1.0, 4.0, 99.0]]), torch.tensor([[1, 1, 0]])
    assert masked_var(x, mask).item() == pytest.approx(4.5)  # ((1 - 2.5)^2 + (4 - 2.5)^2) / (2 - 1)
    assert masked_var(x, mask, unbiased=False).item() == pytest.approx(2.25)
    w = masked_whiten(x, mask)  # +-1.5 / sqrt(4.5)
    torch.testing.assert_close(w, torch.tensor([[-1.5 / math.sqrt(4.5), 1.5 / math.sqrt(4.5), 0.0]]))


def test_log_probs_and_entropy_are_computed_in_chunks_of_bounded_size(monkeypatch):
    import align.stages.ppo.losses as losses

    seen: list[int] = []
    real = torch.log_softmax

    def spy(x, *args, **kwargs):
        seen.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch, "log_softmax", spy)
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(4, 5, 10, generator=gen), torch.randint(0, 10, (4, 5), generator=gen)
    whole = logprobs_from_logits(logits, labels)  # 20 rows fit in one chunk by default
    entropy_from_logits(logits)
    assert seen == [20, 20]
    for fn in (lambda: logprobs_from_logits(logits, labels, chunk_tokens=6), lambda: entropy_from_logits(logits, chunk_tokens=6)):  # fmt: skip
        seen.clear()
        fn()
        assert seen == [6, 6, 6, 2]
    monkeypatch.setattr(losses, "_CHUNK_ELEMENTS", 64)  # 64 fp32 values a chunk: 6 rows of 10 logits
    seen.clear()
    torch.testing.assert_close(logprobs_from_logits(logits, labels), whole)
    assert seen == [6, 6, 6, 2]
    seen.clear()
    entropy_from_logits(torch.randn(3, 100, generator=gen))  # a row larger than a chunk: one row at a time
    assert seen == [1, 1, 1]
    seen.clear()
    logprobs_from_logits(torch.zeros(100, 1), torch.zeros(100, dtype=torch.long))  # vocab 1: 64 rows a chunk
    assert seen == [64, 36]
    with pytest.raises(ValueError, match="chunk_tokens must be a positive integer, got 0"):
        logprobs_from_logits(logits, labels, chunk_tokens=0)


def test_log_probs_and_entropy_of_no_positions_are_empty_fp32_of_the_right_shape():
    logits = torch.zeros(2, 0, 7, dtype=torch.bfloat16)
    lp = logprobs_from_logits(logits, torch.zeros(2, 0, dtype=torch.long))
    ent = entropy_from_logits(logits)
    assert lp.shape == (2, 0) and lp.dtype == torch.float32
    assert ent.shape == (2, 0) and ent.dtype == torch.float32


def test_labels_of_the_wrong_shape_are_refused_naming_both_shapes():
    with pytest.raises(
        ValueError, match=r"labels shape \(2, 4\) must equal logits shape without the vocab axis \(2, 3\)\."
    ):
        logprobs_from_logits(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))


def test_kl_estimator_defaults_to_k1():
    lp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    torch.testing.assert_close(kl_per_token(lp, ref), lp - ref)


def test_last_token_index_refuses_masks_that_are_not_2d_or_have_no_tokens():
    with pytest.raises(ValueError, match=r"^mask must be 2-D \[batch, time\], got shape \(3,\)\.$"):
        last_token_index(torch.ones(3))
    with pytest.raises(ValueError, match=r"drop empty responses or give each at least one token \(e\.g\. EOS\)\.$"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match=r"row 0 .*empty rows: \[0, 1\]"):
        last_token_index(torch.zeros(2, 0))  # no time steps at all


def test_missing_eos_penalty_may_be_zero_or_fractional_and_keeps_the_scores_dtype():
    scores, has_eos = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([True, False])
    assert torch.equal(apply_missing_eos_penalty(scores, has_eos, 0.0), scores)
    out = apply_missing_eos_penalty(scores, has_eos, 0.3)
    assert out.dtype == torch.float64 and out.tolist() == [1.0, 2.0 - 0.3]
    with pytest.raises(ValueError, match=r"missing-EOS penalty must be >= 0 \(it is subtracted\), got -1"):
        apply_missing_eos_penalty(scores, has_eos, -1.0)


def test_clip_ranges_must_be_positive():
    z, m = torch.zeros(1, 2), torch.ones(1, 2)
    with pytest.raises(ValueError, match=r"^clip_range must be > 0, got 0\.0\.$"):
        policy_loss(z, z, z, m, 0.0)
    with pytest.raises(ValueError, match=r"^clip_range_value must be > 0, got 0\.0\.$"):
        value_loss(z, z, z, m, 0.0)


def test_value_clipping_limits_moves_in_both_directions():
    # The new value moved 1.0 below the old one; clipped at 0.2 it counts as old - 0.2 where that loses more.
    old, ret, m = torch.tensor([[0.0, 0.0]]), torch.tensor([[-2.0, 2.0]]), torch.ones(1, 2)
    new = torch.tensor([[-1.0, 1.0]])
    loss, stats = value_loss(new, old, ret, m, 0.2)
    # per token: max((v - R)^2, (clip(v) - R)^2) = max(1, 1.8^2) = 3.24 on both sides
    assert loss.item() == pytest.approx(0.5 * 3.24)
    assert stats["vf_clipfrac"].item() == 1.0


def test_kl_controllers_refuse_bad_settings_and_incomplete_states():
    FixedKLController(0.0)  # no penalty is a valid choice
    with pytest.raises(ValueError, match=r"^kl_coef must be >= 0, got -0\.1\.$"):
        FixedKLController(-0.1)
    for bad in ((0.0, 6.0, 100.0), (0.1, 0.0, 100.0), (0.1, 6.0, 0.0)):
        with pytest.raises(ValueError, match=r"^init_kl_coef, target and horizon must all be > 0, got "):
            AdaptiveKLController(*bad)
    with pytest.raises(ValueError, match=r"^current_kl must be finite, got nan; check the rollout"):
        AdaptiveKLController(0.1, 6.0, 100.0).update(float("nan"), 8)
    with pytest.raises(ValueError, match=r"^adaptive KL controller state_dict is missing \['horizon'\]\.$"):
        AdaptiveKLController(0.1, 6.0, 100.0).load_state_dict({"type": "adaptive", "value": 0.1, "target": 6.0})
    with pytest.raises(ValueError, match=r"^fixed KL controller state_dict is missing \['value'\]\.$"):
        FixedKLController(0.1).load_state_dict({"type": "fixed"})


def test_running_moments_start_empty_and_refuse_bad_input_and_incomplete_states():
    moments = RunningMoments()
    assert moments.state_dict() == {"mean": 0.0, "m2": 0.0, "count": 0}
    with pytest.raises(ValueError, match=r"^RunningMoments\.update got non-finite values; check the reward model"):
        moments.update(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match=r"^RunningMoments state_dict is missing \['m2', 'count'\]\.$"):
        moments.load_state_dict({"mean": 1.0})


def test_score_normalisation_divides_by_a_small_std_and_clips_both_ends_in_the_scores_dtype():
    scores = torch.tensor([-10.0, 0.1, 10.0], dtype=torch.float64)
    out = normalize_scores(scores, 0.0, 0.3)
    assert out.dtype == torch.float64 and out[1].item() == 0.1 / 0.3  # fp64 all the way: std not rounded to fp32
    torch.testing.assert_close(
        normalize_scores(scores, 0.0, 0.5, clip=0.5), torch.tensor([-0.5, 0.2, 0.5], dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=r"^clip must be > 0 \(or None to disable\), got 0\.$"):
        normalize_scores(scores, 0.0, 1.0, clip=0)
