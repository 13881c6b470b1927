"""Token log-probabilities computed only where a loss needs them, over length-bucketed rows.

TRL 1.16's SFT and DPO trainers patch the model with a fused LM head (``model(..., labels=..., fused_lm_head=True)``
returns per-token log-probs instead of logits). On devices without Triton (every CPU) that head projects *every*
position through the vocabulary, prompt and padding included, and computes its logging statistics with a dozen
full passes over each ``[tokens, vocab]`` tile. For SmolLM2 (49K vocabulary) on the bundled DPO data only ~20% of
the positions in a batch carry a completion label, and ~35% are padding.

:func:`install` wraps that forward (hand-written: no maintained library does this on CPU) so that, when the call
is the plain case it understands, it

1. runs the backbone over *length buckets*: the batch's rows are sorted by real length and split into contiguous
   groups (chosen by a small dynamic programme that trades padded positions against a per-group overhead), each
   trimmed to its own longest row. Right padding only, so every row keeps its positions 0..n-1 and its outputs are
   those of the padded batch (bit-identical in fp32 up to matmul blocking);
2. projects through the LM head only the hidden states whose next-token label is not ``-100``, in row chunks,
   with a custom autograd function that recomputes each chunk's logits in backward instead of storing them.

Anything else (left padding, packed ``position_ids``, soft-capped or scaled logits, MoE router outputs,
pre-shifted labels) goes to the forward that was there before, unchanged. The result has TRL's
``FusedCausalLMOutput`` fields, so the trainers read it as they read their own.
"""

from __future__ import annotations

from typing import Any

import torch

# Logit elements per chunk in the log-prob function (~128 MB in fp32): bounds the memory of the vocabulary
# projection whatever the batch.
CHUNK_ELEMENTS = 2**25
# Padded positions one extra bucket must save before it is worth its own (smaller, less efficient) forward.
BUCKET_OVERHEAD_TOKENS = 96
# Forward flags that change nothing the compact path returns (it returns a FusedCausalLMOutput either way).
QUIET_FLAGS = {"return_dict", "output_attentions", "output_hidden_states"}


class SelectedLogProbs(torch.autograd.Function):
    """``log softmax(hidden @ weight.T)[target]`` for ``hidden [M, H]`` and ``target [M]``, in row chunks.

    Also returns, without gradient, each row's entropy, mean logit and whether the target is the (first) argmax:
    the statistics TRL logs. The backward recomputes each chunk's logits: memory stays at one chunk."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows: int):
        ctx.set_materialize_grads(False)
        device = hidden.device
        compute = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else hidden.dtype
        m = hidden.shape[0]
        logp = torch.empty(m, device=device, dtype=torch.float32)
        lse_all = torch.empty(m, device=device, dtype=torch.float32)
        entropy = torch.empty(m, device=device, dtype=torch.float32)
        mean_logit = torch.empty(m, device=device, dtype=torch.float32)
        top1 = torch.empty(m, device=device, dtype=torch.bool)
        w = weight.to(compute)
        with torch.autocast(device.type, enabled=False):
            for s in range(0, m, chunk_rows):
                e = min(s + chunk_rows, m)
                z = (hidden[s:e].to(compute) @ w.t()).float()
                lse = torch.logsumexp(z, dim=-1)
                tz = z.gather(-1, targets[s:e, None]).squeeze(-1)
                logp[s:e] = tz - lse
                lse_all[s:e] = lse
                p = torch.exp(z - lse[:, None])
                entropy[s:e] = lse - (p * z).sum(-1)
                mean_logit[s:e] = z.mean(-1)
                top1[s:e] = z.argmax(-1) == targets[s:e]
        ctx.save_for_backward(hidden, weight, targets, lse_all)
        ctx.compute = compute
        ctx.chunk_rows = chunk_rows
        ctx.mark_non_differentiable(entropy, mean_logit, top1)
        return logp, entropy, mean_logit, top1

    @staticmethod
    def backward(ctx, grad_logp, *_):
        hidden, weight, targets, lse_all = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if grad_logp is None or not (need_h or need_w):
            return None, None, None, None
        compute, rows = ctx.compute, ctx.chunk_rows
        w = weight.to(compute)
        gh = torch.zeros(hidden.shape, device=hidden.device, dtype=torch.float32) if need_h else None
        gw = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if need_w else None
        g = grad_logp.float()
        with torch.autocast(hidden.device.type, enabled=False):
            for s in range(0, hidden.shape[0], rows):
                e = min(s + rows, hidden.shape[0])
                h = hidden[s:e].to(compute)
                z = (h @ w.t()).float()
                # d logp_target / dz = onehot(target) - softmax(z), scaled by the incoming gradient
                gz = torch.exp(z - lse_all[s:e, None]).mul_(-g[s:e, None])
                gz.scatter_add_(-1, targets[s:e, None], g[s:e, None])
                gz = gz.to(compute)
                if need_h:
                    gh[s:e] = (gz @ w).float()
                if need_w:
                    gw += (gz.t() @ h).float()
        return (
            gh.to(hidden.dtype) if gh is not None else None,
            gw.to(weight.dtype) if gw is not None else None,
            None,
            None,
        )


def selected_log_probs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor):
    """(log_probs, entropy, mean_logit, is_top1) per row of ``hidden`` for its ``targets``; see SelectedLogProbs."""
    rows = max(1, CHUNK_ELEMENTS // max(1, weight.shape[0]))
    return SelectedLogProbs.apply(hidden, weight, targets, rows)


def length_buckets(lengths: list[int], overhead: int = BUCKET_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split rows into groups, each padded to its own longest row, minimising padded positions + overhead per group.

    Rows are sorted by length; an exact dynamic programme over contiguous groups of the sorted order (n is a batch,
    so O(n^2) is nothing). Returns lists of original row indices, shortest group first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ls = [lengths[i] for i in order]
    n = len(ls)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # group = sorted rows i..j-1, padded to ls[j-1]
            c = best[i] + ls[j - 1] * (j - i) + overhead
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def right_padded_lengths(attention_mask: torch.Tensor) -> torch.Tensor | None:
    lengths = attention_mask.sum(dim=1)
    expect = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :] < lengths[:, None]
    return lengths if torch.equal(attention_mask.bool(), expect) else None


def plain_call_lengths(args: tuple, kwargs: dict[str, Any], extra: set[str] = frozenset()) -> torch.Tensor | None:
    """Row lengths when a forward call is the plain case the compact paths cover (keyword ``input_ids`` and a
    right-padded ``attention_mask``, nothing else that changes the result but the ``extra`` keys); else None."""
    # PEFT passes output_attentions / output_hidden_states / return_dict as None: they ask for nothing here.
    given = {k for k, v in kwargs.items() if v is not None and not (k in QUIET_FLAGS and v in (False, True))}
    plain = (
        not args
        and kwargs.get("input_ids") is not None
        and kwargs.get("attention_mask") is not None
        and given <= {"input_ids", "attention_mask", "use_cache", *extra}
        and not kwargs.get("output_attentions")
        and not kwargs.get("output_hidden_states")
    )
    return right_padded_lengths(kwargs["attention_mask"]) if plain else None


def supported(model: Any) -> bool:
    cfg = model.config.get_text_config()
    if getattr(cfg, "final_logit_softcapping", None) is not None:
        return False
    for key in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(cfg, key, None) not in (None, 1, 1.0):
            return False
    if getattr(cfg, "output_router_logits", False):
        return False
    head = model.get_output_embeddings()
    return head is not None and getattr(head, "bias", None) is None and cfg is model.config


def selected_hidden(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    buckets: bool = True,
):
    """Last hidden states at the positions whose next-token label (``labels[:, 1:]``) is not -100, from the backbone
    run over length buckets: ``(hidden [M, H], (rows, cols) into [rows, width - 1], anchor)``; ``anchor`` is a
    scalar tied to the graph (zero-valued use keeps an all-masked batch differentiable)."""
    if lengths is None:
        lengths = right_padded_lengths(attention_mask)
        if lengths is None:
            raise ValueError("the compact LM head needs a right-padded attention_mask")
    backbone = getattr(model, model.base_model_prefix)
    valid = labels[:, 1:] != -100
    groups = length_buckets(lengths.tolist()) if buckets else [list(range(input_ids.shape[0]))]
    hiddens, rows_idx, cols_idx = [], [], []
    anchor = None
    for rows in groups:
        idx = torch.tensor(rows, device=input_ids.device)
        top = max(1, int(lengths[idx].max()))
        out = backbone(input_ids=input_ids[idx, :top], attention_mask=attention_mask[idx, :top], use_cache=False)
        sel = valid[idx, : top - 1]
        r, c = sel.nonzero(as_tuple=True)
        hiddens.append(out.last_hidden_state[:, : top - 1][r, c])
        rows_idx.append(idx[r])
        cols_idx.append(c)
        anchor = out.last_hidden_state.sum() if anchor is None else anchor
    return torch.cat(hiddens), (torch.cat(rows_idx), torch.cat(cols_idx)), anchor


def compact_log_probs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    buckets: bool = True,
):
    """Per-token (log_prob, entropy, mean_logit, is_top1) of ``labels[:, 1:]``, each ``[rows, width - 1]`` and zero
    where the label is -100; the backbone runs over length buckets and the LM head only at label positions.

    ``model`` is a transformers causal LM (PEFT adapters injected or not); ``attention_mask`` must be right-padded
    (``lengths`` from :func:`right_padded_lengths`, computed here when not given)."""
    hidden, (r, c), anchor = selected_hidden(
        model, input_ids, attention_mask, labels, lengths=lengths, buckets=buckets
    )
    shifted = labels[:, 1:]
    n_rows, width = input_ids.shape
    lp, ent, mean_logit, top1 = selected_log_probs(hidden, model.get_output_embeddings().weight, shifted[r, c])
    shape = (n_rows, width - 1)
    log_probs = torch.zeros(shape, device=lp.device, dtype=lp.dtype).index_put((r, c), lp)
    if r.numel() == 0:  # no label at all: stay connected to the model, so backward() gives zero gradients
        log_probs = log_probs + 0.0 * anchor
    return (
        log_probs,
        torch.zeros(shape, device=lp.device).index_put((r, c), ent),
        torch.zeros(shape, device=lp.device).index_put((r, c), mean_logit),
        torch.zeros(shape, device=lp.device, dtype=torch.bool).index_put((r, c), top1),
    )


def install(model: Any, *, buckets: bool = True) -> bool:
    """Wrap ``model.forward`` (already patched by TRL's ``add_fused_lm_head``) with the compact path.

    ``model`` is the transformers model (under PEFT: ``peft_model.get_base_model()``). Returns False, changing
    nothing, for architectures the compact path does not cover."""
    if not supported(model) or getattr(model, "_align_compact_head", False):
        return False
    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward

    def forward(*args, fused_lm_head: bool = False, labels=None, **kwargs):
        plain = fused_lm_head and labels is not None
        lengths = plain_call_lengths(args, kwargs, {"num_items_in_batch"}) if plain else None
        if lengths is None:
            if fused_lm_head:
                kwargs["fused_lm_head"] = True
            if labels is not None:
                kwargs["labels"] = labels
            return previous(*args, **kwargs)
        num_items = kwargs.get("num_items_in_batch")
        log_probs, entropy, mean_logits, is_top1 = compact_log_probs(
            model, kwargs["input_ids"], kwargs["attention_mask"], labels, lengths=lengths, buckets=buckets
        )
        valid = labels[:, 1:] != -100
        denom = valid.sum().clamp(min=1) if num_items is None else num_items
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / denom,
            log_probs=log_probs,
            entropy=entropy,
            mean_logits=mean_logits,
            is_top1=is_top1,
            label_mask=valid,
        )

    model.forward = forward
    model._align_compact_head = True
    return True


class CompactHeadMixin:
    """Trainer mixin: ``speed=SpeedSection`` in the constructor; the compact head replaces TRL's fused head the first
    time a loss or a reference pass is computed (TRL patches its own head inside ``__init__``)."""

    def __init__(self, *args, speed: Any = None, **kwargs):
        self._align_speed = speed
        super().__init__(*args, **kwargs)

    def use_compact_head(self) -> bool:
        speed = getattr(self, "_align_speed", None)
        if speed is None or not speed.compact_lm_head:
            return False
        from peft import PeftModel

        model = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        installed = install(model, buckets=speed.length_buckets)
        return installed or getattr(model, "_align_compact_head", False)

    def compute_loss(self, model, inputs, *args, **kwargs):
        self.use_compact_head()
        return super().compute_loss(model, inputs, *args, **kwargs)


def with_compact_head(trainer_cls: type) -> type:
    """``trainer_cls`` (a TRL trainer that patches a fused LM head) using the compact head instead."""
    return type(f"Compact{trainer_cls.__name__}", (CompactHeadMixin, trainer_cls), {})


def install_bucketed_classifier(model: Any) -> bool:
    """Run a sequence-classification model (a reward model: one pooled score per row) over length buckets.

    Each bucket calls the model's own forward on its rows trimmed to their longest real length, so pooling (the
    last real token) is the model's; the pooled logits are put back in the batch's row order. Right-padded plain
    calls only; anything else goes to the original forward."""
    if getattr(model, "_align_bucketed", False):
        return False
    from transformers.modeling_outputs import SequenceClassifierOutputWithPast

    previous = model.forward

    def forward(*args, **kwargs):
        lengths = plain_call_lengths(args, kwargs)
        if lengths is None:
            return previous(*args, **kwargs)
        groups = length_buckets(lengths.tolist())
        if len(groups) == 1 and int(lengths.max()) == kwargs["input_ids"].shape[1]:
            return previous(*args, **kwargs)
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        parts, order = [], []
        for rows in groups:
            idx = torch.tensor(rows, device=ids.device)
            top = max(1, int(lengths[idx].max()))
            out = previous(input_ids=ids[idx, :top], attention_mask=mask[idx, :top], use_cache=False)
            parts.append(out.logits)
            order.append(idx)
        logits = torch.cat(parts)
        inverse = torch.empty_like(torch.cat(order))
        inverse[torch.cat(order)] = torch.arange(len(inverse), device=inverse.device)
        return SequenceClassifierOutputWithPast(logits=logits[inverse])

    model.forward = forward
    model._align_bucketed = True
    return True
