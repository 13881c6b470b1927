"""Statistics of one checkpoint's answers (diversity, KL to its reference, implicit-reward accuracy) and the check
that a checkpoint is not judged by the reward model it was trained against. Pure numpy, like the rest of the
comparison statistics (align/eval/bootstrap.py says how the intervals are drawn)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from align.eval.bootstrap import (
    as_vector,
    bootstrap_mean_ci,
    bootstrap_replicates,
    check_bootstrap_args,
    paired_outcomes,
    percentile_ci,
)


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams over whitespace tokens, pooled over all texts.

    N-grams never span two texts. Returns 0.0 when there are no n-grams (e.g. every text is shorter than n).
    Low values across a checkpoint's responses signal repetitive or collapsed generations.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, not one string; wrap it: distinct_n([text], n).")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer (1 for unigrams, 2 for bigrams, ...); got {n!r}.")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts[{i}] is {type(text).__name__}, not str; pass the decoded response texts.")
        tokens = text.split()
        grams = [tuple(tokens[j : j + n]) for j in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else 0.0


def _groups(groups: object | None, rows: int) -> np.ndarray | None:
    """``groups`` as dense cluster ids 0..G-1 (one per row), or None for one cluster per row."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (rows,) or not np.issubdtype(g.dtype, np.integer):
        raise ValueError(
            f"groups must be a 1-D integer array with one prompt id per row ({rows} rows); got dtype {g.dtype} and "
            f"shape {g.shape}."
        )
    return np.unique(g, return_inverse=True)[1].reshape(-1)


def _cluster_mean_ci(
    values: np.ndarray, cluster: np.ndarray | None, n_boot: int, alpha: float, seed: int
) -> tuple[float, float]:
    """Percentile CI for the mean over rows, resampling clusters (prompts) with all their rows."""
    if cluster is None:
        return bootstrap_mean_ci(values, n_boot, alpha, seed)
    sums = np.bincount(cluster, weights=values)
    counts = np.bincount(cluster).astype(float)
    replicates = bootstrap_replicates(
        lambda idx: sums[idx].sum(axis=1) / counts[idx].sum(axis=1), sums.size, n_boot, seed
    )
    return percentile_ci(replicates, alpha)


def sample_kl(
    policy_logprobs: object,
    ref_logprobs: object,
    mask: object,
    *,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    exact_token_kl: object | None = None,
    groups: object | None = None,
) -> dict[str, float | int]:
    """Estimate KL(policy || ref) per response from the policy's own samples, with a bootstrap CI over prompts.

    Inputs are (prompts, tokens) arrays: the log-probability of each sampled response token under the policy
    (``logp``) and under the reference (``logq``), and a 0/1 ``mask`` marking response tokens (values under mask 0,
    e.g. padding, are ignored even if non-finite). Per sequence:

    - k1 = sum over response tokens of ``logp - logq``: unbiased for the sequence KL, but single samples can be
      negative and it is noisy.
    - k3 = sum of ``(r - 1) - log r`` with ``r = q / p = exp(logq - logp)``: also unbiased (E_p[r] = 1 per token),
      never negative, usually lower variance.

    Returns ``mean``/``low``/``high`` for k1, ``k3_mean``/``k3_low``/``k3_high`` for k3 (both in nats per
    sequence) and ``n``. k1 and k3 are only meaningful when the responses were sampled from the policy.

    ``exact_token_kl`` (same shape), when given, holds the full-distribution ``KL(pi(.|prefix) || ref(.|prefix))``
    at each response position; its per-sequence sum (``exact_mean``/``exact_low``/``exact_high``) is the KL
    accumulated along the responses actually produced, never negative, and valid for greedy decoding too.

    Several samples per prompt: ``groups`` (one integer per row, naming the row's prompt) makes the bootstrap
    resample *prompts* with all their rows, since samples of one prompt are correlated and resampling rows alone
    would give too narrow an interval. The estimates stay the mean over all rows (sequences); each replicate is
    ``sum of the drawn prompts' row values / number of their rows``. ``n`` counts rows and ``n_prompts`` the
    distinct groups. Without ``groups`` every row is its own prompt (the same numbers as before groups existed).
    """
    check_bootstrap_args(n_boot, alpha)
    lp = np.asarray(policy_logprobs, dtype=float)
    lq = np.asarray(ref_logprobs, dtype=float)
    m = np.asarray(mask)
    if lp.ndim != 2 or lp.size == 0:
        raise ValueError(f"policy_logprobs must be a non-empty 2-D (prompts, tokens) array; got shape {lp.shape}.")
    if lq.shape != lp.shape or m.shape != lp.shape:
        raise ValueError(
            f"shapes differ: policy_logprobs {lp.shape}, ref_logprobs {lq.shape}, mask {m.shape}; all three must "
            "be (prompts, tokens) over the same sampled responses."
        )
    if not np.all((m == 0) | (m == 1)):
        raise ValueError("mask must contain only 0 and 1 (1 = response token).")
    on = m == 1
    if not (np.all(np.isfinite(lp[on])) and np.all(np.isfinite(lq[on]))):
        raise ValueError(
            "non-finite log-probabilities on masked-in tokens; a -inf under the reference means KL is infinite. "
            "Check the mask covers only sampled response tokens."
        )
    log_ratio = np.where(on, lp - lq, 0.0)  # log p - log q
    k1 = log_ratio.sum(axis=1)
    k3 = np.where(on, np.expm1(-log_ratio) + log_ratio, 0.0).sum(axis=1)
    cluster = _groups(groups, k1.size)
    k1_low, k1_high = _cluster_mean_ci(k1, cluster, n_boot, alpha, seed)
    k3_low, k3_high = _cluster_mean_ci(k3, cluster, n_boot, alpha, seed)
    out: dict[str, float | int] = {
        "mean": float(k1.mean()),
        "low": k1_low,
        "high": k1_high,
        "k3_mean": float(k3.mean()),
        "k3_low": k3_low,
        "k3_high": k3_high,
        "n": int(k1.size),
        "n_prompts": int(k1.size if cluster is None else cluster.max() + 1),
    }
    if exact_token_kl is not None:
        ex = np.asarray(exact_token_kl, dtype=float)
        if ex.shape != lp.shape:
            raise ValueError(f"exact_token_kl has shape {ex.shape}; it must match policy_logprobs {lp.shape}.")
        if not np.all(np.isfinite(ex[on])) or np.any(ex[on] < -1e-6):
            raise ValueError("exact_token_kl must be finite and >= 0 on response tokens (it is a KL divergence).")
        seq = np.where(on, np.maximum(ex, 0.0), 0.0).sum(axis=1)
        ex_low, ex_high = _cluster_mean_ci(seq, cluster, n_boot, alpha, seed)
        out.update(exact_mean=float(seq.mean()), exact_low=ex_low, exact_high=ex_high)
    return out


def implicit_reward_accuracy(
    chosen_margins: object, *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0
) -> dict[str, float | int]:
    """Fraction of held-out preference pairs whose (implicit) reward ranks chosen above rejected, with a CI.

    ``chosen_margins`` is ``reward(chosen) - reward(rejected)`` per pair (for DPO, the implicit reward
    ``beta * (log pi/ref(chosen) - log pi/ref(rejected))``). A margin > 0 counts as correct, == 0 as half
    (a coin flip), < 0 as wrong. Returns ``{"accuracy", "low", "high", "n"}``.
    """
    check_bootstrap_args(n_boot, alpha)
    margins = as_vector(chosen_margins, "chosen_margins")
    correct = paired_outcomes(margins, np.zeros_like(margins), 0.0)
    low, high = bootstrap_mean_ci(correct, n_boot, alpha, seed)
    return {"accuracy": float(correct.mean()), "low": low, "high": high, "n": int(margins.size)}


def _normalise_id(identity: str) -> str:
    """Light, I/O-free normalisation so ``/rm/`` and ``/rm`` match; callers pass resolved paths or fingerprints."""
    return os.path.normpath(identity.strip())


def self_judging_warning(judge_id: str, trained_against: Mapping[str, str | None]) -> list[str]:
    """One loud warning per checkpoint whose judge is the reward model it was optimised against.

    ``judge_id`` and the values of ``trained_against`` (checkpoint name -> reward model it was trained against, or
    None) must be comparable identities: resolved paths or content fingerprints. Only exact matches (after
    stripping whitespace and normalising path separators) are detected; the caller resolves symlinks and relative
    paths. Returns an empty list when no checkpoint is graded by its own reward model.
    """
    if not isinstance(judge_id, str) or not judge_id.strip():
        raise ValueError(f"judge_id must be a non-empty string (resolved path or fingerprint); got {judge_id!r}.")
    judge = _normalise_id(judge_id)
    warnings: list[str] = []
    for name, rm in trained_against.items():
        if rm is None:
            continue
        if not isinstance(rm, str):
            raise ValueError(
                f"trained_against[{name!r}] must be a reward-model path/fingerprint string or None; got {rm!r}."
            )
        if rm.strip() and _normalise_id(rm) == judge:
            warnings.append(
                f"WARNING: SELF-JUDGING: checkpoint {name!r} is scored by the same reward model it was trained "
                f"against ({judge_id}). Its policy was optimised to maximise exactly this model's scores, so it "
                "has learned this judge's quirks and blind spots (reward hacking: e.g. length, flattery, formatting "
                "the judge over-rewards). Its scores and win rates are inflated relative to checkpoints that never "
                "saw this judge, and the comparison is not fair. Re-run `align compare` with a disjoint judge: a "
                "reward model that no compared checkpoint was trained against, ideally trained on different "
                "preference data. Until then treat this checkpoint's numbers as an upper bound."
            )
    return warnings
