"""Pure maths of PPO for language models (Ziegler et al. 2019; Stiennon et al. 2020; Huang et al. 2024).

TRL no longer ships a PPO trainer, so the project keeps its own. This module holds only the maths: small pure
functions on torch tensors plus two tiny stateful helpers (KL controllers, running moments), so each piece can be
tested against its formula. Nothing here touches models, tokenizers or the optimiser.

Conventions
-----------
* Sequence tensors are ``[batch, time]`` over *response tokens* only (the prompt is not included).
* ``mask`` is a bool or 0/1 float tensor of the same shape: 1 = real response token (up to and including EOS),
  0 = padding or anything after EOS. Padding may sit on the right or on the left (or both).
* Masked-out positions must hold finite numbers (any finite filler works): ``torch.where`` keeps them out of every
  forward result, but a NaN/inf there would still turn into a NaN gradient through ``exp``.
* Log-probabilities are fp32. Statistics dictionaries hold detached 0-dim tensors, so callers decide when to sync
  with the device (``float(stats["clipfrac"])``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k2", "k3")

# Upper bound on elements per fp32 chunk in logprobs_from_logits / entropy_from_logits (2**26 floats = 256 MiB).
_CHUNK_ELEMENTS = 2**26


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def _check_same_shape(**tensors: Tensor) -> None:
    """Raise ValueError when the named tensors do not all have the same shape."""
    items = list(tensors.items())
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.shape != first.shape:
            raise ValueError(
                f"`{name}` has shape {tuple(t.shape)} but `{first_name}` has shape {tuple(first.shape)}; "
                "they must match (batch x response tokens)."
            )


def _bool_mask(x: Tensor, mask: Tensor) -> Tensor:
    """Return ``mask`` as a bool tensor broadcast to ``x``'s shape."""
    try:
        return torch.broadcast_to(mask.bool(), x.shape)
    except RuntimeError as err:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} cannot be broadcast to values of shape {tuple(x.shape)}."
        ) from err


# ----------------------------------------------------------------------------------------------------------------
# Masked statistics
# ----------------------------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Sum of ``x`` over positions where ``mask`` is 1 (over all elements, or along ``dim``).

    Uses ``torch.where`` rather than ``x * mask`` so that whatever sits in masked-out positions (even inf/NaN)
    cannot leak into the result.
    """
    m = _bool_mask(x, mask)
    kept = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | tuple[int, ...] | None = None) -> Tensor:
    """Mean of ``x`` over masked-in positions; a slice with no masked-in position gives 0 (never NaN)."""
    m = _bool_mask(x, mask)
    total = masked_sum(x, m, dim)
    count = m.sum() if dim is None else m.sum(dim=dim)
    # clamp(min=1): an empty slice has total 0, so 0 / 1 = 0 instead of 0 / 0 = NaN.
    return total / count.clamp(min=1).to(total.dtype)


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of ``x`` over all masked-in positions (a 0-dim tensor).

    With ``unbiased`` the Bessel factor ``n / (n - 1)`` is applied. Fewer than two masked-in values carry no
    spread information, so the result is 0 there (never NaN), which makes whitening a single token give 0.
    """
    m = _bool_mask(x, mask)
    mean = masked_mean(x, m)
    var = masked_mean((x - mean) ** 2, m)
    if unbiased:
        n = m.sum().to(var.dtype)
        # n = 0 -> 0 / 1; n = 1 -> var is already 0; n >= 2 -> n / (n - 1). No host sync needed.
        var = var * n / (n - 1).clamp(min=1)
    return var


def pooled_mean_var(
    x: Tensor, mask: Tensor, reduce: Callable[[Tensor], Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance of ``x`` over masked-in positions of a batch whose parts may sit in several
    processes: ``reduce`` sums a tensor over them (e.g. an all-reduce; None = this part is the whole batch). Two
    passes, the mean first and then squared deviations from it, as exact as :func:`masked_var`; fewer than two
    masked-in values give variance 0."""
    reduce = reduce or (lambda t: t)
    m = _bool_mask(x, mask)
    total = reduce(torch.stack([masked_sum(x, m), m.sum().to(x.dtype)]))
    n = total[1]
    mean = total[0] / n.clamp(min=1)
    # n / (n - 1) is Bessel's factor; for n <= 1 the squared deviations are 0 already.
    var = reduce(masked_sum((x - mean) ** 2, m)) / n.clamp(min=1) * n / (n - 1).clamp(min=1)
    return mean, var


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    *,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Standardise ``x`` with mean and (unbiased) variance taken from masked-in positions only.

    ``shift_mean=False`` rescales to unit variance but keeps the original mean (``(x - mu) / sigma + mu``), which
    is how rewards are sometimes whitened without moving their baseline. Masked-out positions of the output are 0.
    ``reduce``: sums a tensor over the processes that each hold a part of the batch (e.g. an all-reduce), so every
    part is whitened with the statistics of the whole batch, as one process holding all of it would be.
    """
    m = _bool_mask(x, mask)
    mean, var = pooled_mean_var(x, m, reduce)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(m, whitened, torch.zeros((), dtype=whitened.dtype, device=whitened.device))


# ----------------------------------------------------------------------------------------------------------------
# Log-probabilities and entropy
# ----------------------------------------------------------------------------------------------------------------


def _chunk_rows(n_rows: int, vocab: int, chunk_tokens: int | None) -> int:
    if chunk_tokens is not None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be a positive integer, got {chunk_tokens}.")
        return chunk_tokens
    return max(1, min(n_rows, _CHUNK_ELEMENTS // max(vocab, 1)))


def logprobs_from_logits(logits: Tensor, labels: Tensor, *, chunk_tokens: int | None = None) -> Tensor:
    """Log-probability of ``labels`` under ``logits``: ``log_softmax(logits.float())[..., label]``.

    Shapes: ``logits [..., V]`` (any float dtype), ``labels [...]`` (long, every entry a valid token id: replace
    ignore-index values such as -100 with any id and mask them out) -> fp32 ``[...]``.

    Memory: the positions are processed in chunks of ``chunk_tokens`` rows (default: as many as fit in ~256 MiB of
    fp32), so a bf16 ``[B, T, V]`` tensor is never copied whole to fp32; only one chunk's log-softmax exists at a
    time when no gradient is recorded (rollout). Under autograd each chunk's fp32 log-softmax is kept for the
    backward pass, which is what log_softmax itself needs.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal logits shape without the vocab axis "
            f"{tuple(logits.shape[:-1])}."
        )
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1, 1).long()
    rows = _chunk_rows(flat_logits.shape[0], vocab, chunk_tokens)
    out = [
        torch.log_softmax(lg, dim=-1, dtype=torch.float32).gather(-1, lb).squeeze(-1)
        for lg, lb in zip(flat_logits.split(rows), flat_labels.split(rows), strict=True)
    ]
    # No positions: split gives one empty chunk, so this still returns fp32 of labels' shape.
    return torch.cat(out).reshape(labels.shape)


def entropy_from_logits(logits: Tensor, *, chunk_tokens: int | None = None) -> Tensor:
    """Entropy ``-sum_v p_v log p_v`` of the softmax at each position: ``[..., V] -> fp32 [...]``.

    Computed in fp32 from the log-softmax, in chunks of positions (see ``logprobs_from_logits``).
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    rows = _chunk_rows(flat_logits.shape[0], vocab, chunk_tokens)
    out = []
    for lg in flat_logits.split(rows):
        logp = torch.log_softmax(lg, dim=-1, dtype=torch.float32)
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out).reshape(logits.shape[:-1])  # no positions: one empty chunk (see logprobs_from_logits)


# ----------------------------------------------------------------------------------------------------------------
# KL and rewards
# ----------------------------------------------------------------------------------------------------------------


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi (Schulman, "Approximating KL divergence").

    With ``log_ratio = logprobs - ref_logprobs`` (log pi/ref at the sampled token):
    ``k1 = log_ratio`` (unbiased, can be negative); ``k2 = 0.5 * log_ratio**2`` (biased, low variance, >= 0);
    ``k3 = (exp(-log_ratio) - 1) + log_ratio`` (unbiased and >= 0).
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs)
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        # ref_logprobs - logprobs = -log_ratio; expm1 is exp(.) - 1 without cancellation near 0.
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; valid estimators are {', '.join(KL_ESTIMATORS)}.")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last masked-in position in each row of a ``[batch, time]`` mask -> ``LongTensor[batch]``.

    Works for right and left padding. A row with no real token has no last token and raises ValueError.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D [batch, time], got shape {tuple(mask.shape)}.")
    m = mask.bool()
    # Position where real, -1 where padding; the row maximum is the last real position (-1: no real token).
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    # The -1 column is built from the batch size, not sliced from `positions`: a mask with no time steps has no
    # column to slice, and amax over nothing would fail before the empty rows are named (found by mutation testing).
    sentinel = torch.full((m.shape[0], 1), -1, dtype=positions.dtype, device=m.device)
    marked = torch.cat([sentinel, torch.where(m, positions, -1)], dim=1)
    last = marked.amax(dim=1)
    if bool((last < 0).any()):
        empty = (last < 0).nonzero().flatten().tolist()
        raise ValueError(
            f"row {empty[0]} of the response mask has no real token (empty rows: {empty}); "
            "drop empty responses or give each at least one token (e.g. EOS)."
        )
    return last


def token_rewards(
    scores: Tensor,
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    kl_coef: float | Tensor,
    estimator: str = "k1",
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token PPO rewards: a KL penalty on every real token plus the sequence score on the last real token.

    Shapes: ``scores [B]``, ``logprobs/ref_logprobs/mask [B, T]``. The score is added at ``last_token_index(mask)``,
    so it never lands on padding or after EOS as long as the mask stops at EOS.

    Returns ``(rewards [B, T], non_score_reward [B], kl [B, T])``: the per-token rewards, the per-sequence sum of
    the KL part ``-kl_coef * kl``, and the per-token KL estimate; all are 0 at masked-out positions.
    """
    _check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    if scores.shape != logprobs.shape[:1]:
        raise ValueError(f"scores must have shape [batch] = {tuple(logprobs.shape[:1])}, got {tuple(scores.shape)}.")
    m = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    kl = torch.where(m, kl_per_token(logprobs, ref_logprobs, estimator), zero)
    kl_part = torch.where(m, -kl_coef * kl, zero)
    rows = torch.arange(m.shape[0], device=m.device)
    rewards = kl_part.clone()
    rewards[rows, last_token_index(m)] += scores.to(rewards.dtype)
    return rewards, kl_part.sum(dim=1), kl


def apply_missing_eos_penalty(scores: Tensor, has_eos: Tensor, penalty: float) -> Tensor:
    """Return ``scores`` minus ``penalty`` where the *completion* never emitted EOS (``has_eos`` False).

    Truncated completions otherwise tend to score well; the penalty discourages running to the length limit.
    Does not modify ``scores`` in place.
    """
    if penalty < 0:
        raise ValueError(f"missing-EOS penalty must be >= 0 (it is subtracted), got {penalty}.")
    _check_same_shape(scores=scores, has_eos=has_eos)
    return scores - penalty * (~has_eos.bool()).to(scores.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------------------------


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens ``[B, T]``.

    ``delta_t = r_t + gamma * V_next - V_t``, ``A_t = delta_t + gamma * lam * A_next``, with ``V = A = 0`` after
    the last real token (the episode ends there). Returns ``(advantages, returns)``, ``returns = advantages +
    values``; both are 0 at masked-out positions. Inputs are rollout tensors and should be detached.
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}.")
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    # Padding is skipped by carrying (next_value, next_adv) unchanged across masked-out positions: a padded
    # position neither contributes nor resets the recursion, so right, left (and interior) padding all reduce to
    # the recursion over the real tokens of each row. Python loop over T: T is at most a few thousand.
    for t in reversed(range(values.shape[1])):
        real = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = torch.where(real, adv, zero)
        next_value = torch.where(real, values[:, t], next_value)
        next_adv = torch.where(real, adv, next_adv)
    returns = torch.where(m, advantages + values, zero)
    return advantages, returns


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate loss (to minimise), shapes ``[B, T]``.

    ``ratio = exp(logprobs - old_logprobs)``, ``pg_loss1 = -A * ratio``,
    ``pg_loss2 = -A * clamp(ratio, 1 - eps, 1 + eps)``, loss = masked mean of ``max(pg_loss1, pg_loss2)``.

    Stats (detached, 0-dim):
    ``approx_kl``: masked mean of ``(ratio - 1) - log(ratio)``, the k3 estimate of KL(old || new) (>= 0);
    ``approx_kl_k1``: masked mean of ``old_logprobs - logprobs = -log(ratio)``, the k1 estimate of the same KL;
    ``clipfrac``: share of real tokens where the clipped term is the active one (``pg_loss2 > pg_loss1``);
    ``ratio_mean`` and ``ratio_max`` over real tokens (0 when there are none).
    """
    _check_same_shape(logprobs=logprobs, old_logprobs=old_logprobs, advantages=advantages, mask=mask)
    if clip_range <= 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range}.")
    m = mask.bool()
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    pg_loss_max = torch.max(pg_loss1, pg_loss2)
    loss = masked_mean(pg_loss_max, m)
    with torch.no_grad():
        ratio_d = ratio.detach()
        log_ratio_d = log_ratio.detach()
        stats = {
            "approx_kl": masked_mean((ratio_d - 1.0) - log_ratio_d, m),
            "approx_kl_k1": masked_mean(-log_ratio_d, m),
            "clipfrac": masked_mean((pg_loss2 > pg_loss1).to(ratio_d.dtype), m),
            "ratio_mean": masked_mean(ratio_d, m),
            # ratio > 0, so filling masked-out positions with 0 leaves the max over real tokens unchanged.
            "ratio_max": torch.where(m, ratio_d, torch.zeros_like(ratio_d)).amax(),
        }
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range_value: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss ``0.5 * masked_mean(max((V - R)^2, (clip(V, V_old - eps, V_old + eps) - R)^2))``.

    Shapes ``[B, T]``. Stats (detached, 0-dim): ``vf_clipfrac``, the share of real tokens where the clipped term
    is the larger one (so the gradient through ``V`` is cut there).
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if clip_range_value <= 0:
        raise ValueError(f"clip_range_value must be > 0, got {clip_range_value}.")
    m = mask.bool()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    v_loss_unclipped = (values - returns) ** 2
    v_loss_clipped = (v_clipped - returns) ** 2
    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
    loss = 0.5 * masked_mean(v_loss_max, m)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((v_loss_clipped > v_loss_unclipped).to(values.dtype), m)}
    return loss, stats


def explained_variance(
    values: Tensor, returns: Tensor, mask: Tensor, *, reduce: Callable[[Tensor], Tensor] | None = None
) -> float:
    """``1 - Var[R - V] / Var[R]`` over real tokens: 1 = perfect critic, 0 = no better than the mean, NaN when
    ``Var[R]`` is 0 (undefined). ``reduce``: as in :func:`pooled_mean_var`, for a batch split over processes."""
    _check_same_shape(values=values, returns=returns, mask=mask)
    m = mask.bool()
    var_returns = float(pooled_mean_var(returns.detach().double(), m, reduce)[1])
    if var_returns == 0.0:
        return math.nan
    var_residual = float(pooled_mean_var((returns - values).detach().double(), m, reduce)[1])
    return 1.0 - var_residual / var_returns


# ----------------------------------------------------------------------------------------------------------------
# KL controllers
# ----------------------------------------------------------------------------------------------------------------


def _check_controller_state(state: Mapping[str, Any], kind: str, keys: tuple[str, ...]) -> None:
    if state.get("type") != kind:
        raise ValueError(f"state_dict is for a {state.get('type')!r} KL controller, cannot load it into {kind!r}.")
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(f"{kind} KL controller state_dict is missing {missing}.")


class FixedKLController:
    """Constant KL coefficient (``update`` is a no-op)."""

    def __init__(self, kl_coef: float) -> None:
        if kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}.")
        self.value = float(kl_coef)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, Any]:
        return {"type": "fixed", "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_controller_state(state, "fixed", ("value",))
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. (2019), a proportional controller towards ``target``.

    ``error = clip(KL / target - 1, -0.2, 0.2)``, ``value *= 1 + error * n_steps / horizon``. ``current_kl`` must
    be in the same units as ``target`` (usually the per-sequence KL summed over tokens, averaged over the batch);
    ``n_steps`` is the number of samples (episodes) the measurement covers.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if init_kl_coef <= 0 or target <= 0 or horizon <= 0:
            raise ValueError(
                f"init_kl_coef, target and horizon must all be > 0, got {init_kl_coef}, {target}, {horizon}."
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float | Tensor, n_steps: int) -> None:
        current = float(current_kl)
        if not math.isfinite(current):
            raise ValueError(f"current_kl must be finite, got {current}; check the rollout for NaN log-probs.")
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"type": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_controller_state(state, "adaptive", ("value", "target", "horizon"))
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


# ----------------------------------------------------------------------------------------------------------------
# Score normalisation
# ----------------------------------------------------------------------------------------------------------------


class RunningMoments:
    """Running mean and standard deviation of all values seen, merged batch by batch.

    Uses the parallel merge formula (Chan et al. 1979) on Python floats (fp64), so the result equals the mean and
    population std (``ddof=0``, like ``numpy.std``) of the concatenation of every batch, without keeping them.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.count = 0

    @property
    def var(self) -> float:
        """Population variance (0 before any update)."""
        return self.m2 / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        """Population standard deviation (0 before any update)."""
        return math.sqrt(self.var)

    def update(self, x: Tensor) -> None:
        """Merge a batch of values (any shape) into the running statistics. Non-finite values are rejected."""
        xs = x.detach().reshape(-1).double()
        n = xs.numel()
        if n == 0:
            return
        if not bool(torch.isfinite(xs).all()):
            raise ValueError("RunningMoments.update got non-finite values; check the reward model's scores.")
        batch_mean = float(xs.mean())
        batch_m2 = float(((xs - batch_mean) ** 2).sum())
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta * delta * self.count * n / total
        self.count = total

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = [k for k in ("mean", "m2", "count") if k not in state]
        if missing:
            raise ValueError(f"RunningMoments state_dict is missing {missing}.")
        self.mean = float(state["mean"])
        self.m2 = float(state["m2"])
        self.count = int(state["count"])


def normalize_scores(
    scores: Tensor, mean: float | Tensor, std: float | Tensor, clip: float | None = None, eps: float = 1e-8
) -> Tensor:
    """``(scores - mean) / max(std, eps)``, then clamped to ``[-clip, clip]`` when ``clip`` is given."""
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be > 0 (or None to disable), got {clip}.")
    std_t = torch.as_tensor(std, dtype=scores.dtype, device=scores.device).clamp(min=eps)
    out = (scores - mean) / std_t
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out
