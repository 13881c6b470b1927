"""Log-probabilities of answers under a policy with its adapter on and off: the KL to its training reference and the
DPO implicit reward, both read from the same pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from align import fast_head
from align.templates import Encoder


def response_logratio(
    model: Any, samples: list[dict[str, Any]], batch_size: int, *, exact_kl: bool = False, policy: Any = None
) -> tuple[np.ndarray, ...]:
    """Per-token log-probs of each response under the model with its adapter on and off (its reference), the
    response mask, and (``exact_kl``) the full-distribution KL(policy || reference) at each response position.

    Only response positions go through the LM head, over length buckets (align.fast_head): the prompt positions'
    49K-way softmaxes were most of this pass. ``policy``: the same policy with its adapter merged (faster: no
    adapter matmuls) for the adapter-on pass. Rows are batched in length order, so a batch carries little padding."""
    import torch

    width_r = max(max(len(s["response_ids"]) for s in samples), 1)
    pol = np.zeros((len(samples), width_r))
    ref = np.zeros((len(samples), width_r))
    kl = np.zeros((len(samples), width_r))
    mask = np.zeros((len(samples), width_r))
    base = model.get_base_model()
    compact = fast_head.supported(base)
    weight = base.get_output_embeddings().weight

    def response_logits(ids, att, labels, net=None):
        """Logits [M, V] at the label positions (row-major order) and their (row, col) indices."""
        if compact:
            hidden, (r, c), _ = fast_head.selected_hidden(net or base, ids, att, labels)
            return hidden, r, c
        logits = (net or model)(input_ids=ids, attention_mask=att).logits[:, :-1]
        r, c = (labels[:, 1:] != -100).nonzero(as_tuple=True)
        return logits[r, c], r, c

    def stats(hp, hq, targets):
        """Per position: log p(target), log q(target), KL(p || q), from hidden states (or logits) in row chunks."""
        lp_all, lq_all, kl_all = [], [], []
        for s in range(0, hp.shape[0], 256):
            zp, zq = hp[s : s + 256], hq[s : s + 256]
            if compact:
                zp, zq = zp.to(weight.dtype) @ weight.t(), zq.to(weight.dtype) @ weight.t()
            lp, lq = torch.log_softmax(zp.float(), -1), torch.log_softmax(zq.float(), -1)
            t = targets[s : s + 256, None]
            lp_all.append(lp.gather(-1, t).squeeze(-1))
            lq_all.append(lq.gather(-1, t).squeeze(-1))
            if exact_kl:
                kl_all.append((lp.exp() * (lp - lq)).sum(-1))
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0)  # noqa: E731
        return cat(lp_all), cat(lq_all), cat(kl_all)

    order = sorted(range(len(samples)), key=lambda k: len(samples[k]["prompt_ids"]) + len(samples[k]["response_ids"]))
    for i in range(0, len(samples), batch_size):
        rows = order[i : i + batch_size]
        chunk = [samples[k] for k in rows]
        seqs = [s["prompt_ids"] + s["response_ids"] for s in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        att = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for j, (s, smp) in enumerate(zip(seqs, chunk)):
            ids[j, : len(s)] = torch.tensor(s)
            att[j, : len(s)] = 1
            labels[j, len(smp["prompt_ids"]) : len(s)] = ids[j, len(smp["prompt_ids"]) : len(s)]
        with torch.no_grad():
            hp, r, c = response_logits(ids, att, labels, policy)
            with model.disable_adapter():
                hq, _, _ = response_logits(ids, att, labels)
            lp, lq, k = stats(hp, hq, labels[:, 1:][r, c])
        for n, (row, col) in enumerate(zip(r.tolist(), c.tolist())):
            t = col - (len(chunk[row]["prompt_ids"]) - 1)  # response token index
            pol[rows[row], t] = float(lp[n])
            ref[rows[row], t] = float(lq[n])
            if exact_kl:
                kl[rows[row], t] = float(k[n])
            mask[rows[row], t] = 1
    return (pol, ref, mask, kl) if exact_kl else (pol, ref, mask)


def implicit_margins(model: Any, tok: Any, pairs: list[Any], batch_size: int) -> list[float]:
    """DPO implicit-reward margins (up to beta) on held-out pairs: policy-vs-reference log-ratio, chosen - rejected."""
    enc = Encoder(tok)
    samples = []
    for r in pairs:
        row = enc.preference(r.prompt, r.chosen, r.rejected)
        samples.append({"prompt_ids": row["prompt_ids"], "response_ids": row["chosen_ids"]})
        samples.append({"prompt_ids": row["prompt_ids"], "response_ids": row["rejected_ids"]})
    pol, ref, mask = response_logratio(model, samples, batch_size)
    ratio = ((pol - ref) * mask).sum(axis=1)
    return [float(ratio[2 * i] - ratio[2 * i + 1]) for i in range(len(pairs))]
