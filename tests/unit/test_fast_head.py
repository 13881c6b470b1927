"""align's compact LM head: the same log-probs, statistics and gradients as TRL's fused head, computed only at label
positions over length buckets; anything it does not cover falls back to TRL's forward."""

from __future__ import annotations

import pytest
import torch

from align import fast_head


def _tiny_lora(path, seed=1):
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    from align.models import load_causal_lm

    model = load_causal_lm(str(path))
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    torch.manual_seed(seed)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    return get_peft_model(model, cfg)


def _batch(vocab, lengths, prompt_lengths, left=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    lengths_t = torch.tensor(lengths)
    pos = torch.arange(width)[None]
    if left:
        pos = pos.flip(1)
    att = (pos < lengths_t[:, None]).long()
    ids = torch.randint(3, vocab, (len(lengths), width), generator=g).masked_fill(att == 0, 0)
    if left:
        start = width - lengths_t
        comp = (torch.arange(width)[None] >= (start + torch.tensor(prompt_lengths))[:, None]) & (att == 1)
    else:
        comp = (torch.arange(width)[None] >= torch.tensor(prompt_lengths)[:, None]) & (att == 1)
    return ids, att, ids.masked_fill(~comp, -100)


def _run(model, ids, att, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=att, labels=labels, fused_lm_head=True, use_cache=False)
    (out.log_probs.sum() + 0.0).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
    return out, grads


def test_compact_head_matches_trl_fused_head_values_statistics_and_gradients(tiny_model_dir):
    lengths = [7, 30, 12, 29, 5, 18, 31, 9]
    ids, att, labels = _batch(1000, lengths, [3, 10, 4, 20, 2, 17, 5, 8])
    ref, ref_grads = _run(_tiny_lora(tiny_model_dir), ids, att, labels)
    model = _tiny_lora(tiny_model_dir)
    assert fast_head.install(model.get_base_model())
    out, grads = _run(model, ids, att, labels)
    mask = labels[:, 1:] != -100
    assert torch.equal(out.label_mask, mask)
    torch.testing.assert_close(out.log_probs, ref.log_probs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.entropy[mask], ref.entropy[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mean_logits[mask], ref.mean_logits[mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(out.is_top1[mask], ref.is_top1[mask])
    assert out.log_probs[~mask].abs().max() == 0 and out.entropy[~mask].abs().max() == 0
    torch.testing.assert_close(grads, ref_grads, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_left_padded_or_packed_inputs_fall_back_to_the_previous_forward(tiny_model_dir, monkeypatch):
    model = _tiny_lora(tiny_model_dir)
    ids, att, labels = _batch(1000, [7, 30, 12], [3, 10, 4], left=True)
    ref, _ = _run(model, ids, att, labels)
    assert fast_head.install(model.get_base_model())

    def boom(*a, **k):
        raise AssertionError("the compact path must not run on left-padded input")

    monkeypatch.setattr(fast_head, "selected_log_probs", boom)
    out, _ = _run(model, ids, att, labels)
    torch.testing.assert_close(out.log_probs, ref.log_probs)
    # position_ids (packing) are not understood by the compact path either
    pos = torch.arange(ids.shape[1])[None].expand_as(ids)
    model(input_ids=ids, attention_mask=att, labels=labels, position_ids=pos, fused_lm_head=True)
    # and the plain forward (no fused head) is untouched: logits come back
    assert model(input_ids=ids, attention_mask=att).logits.shape[-1] == model.config.vocab_size


def test_selected_log_probs_match_log_softmax_in_chunks_with_weight_gradient(monkeypatch):
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    monkeypatch.setattr(fast_head, "CHUNK_ELEMENTS", 50 * 5)  # 5 rows a chunk: 8 chunks, the last one short
    lp, ent, mean_logit, top1 = fast_head.selected_log_probs(hidden, weight, targets)
    z = hidden @ weight.t()
    logp = torch.log_softmax(z, -1)
    want = logp.gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(lp, want.float())
    torch.testing.assert_close(ent, -(logp.exp() * logp).sum(-1).float())
    torch.testing.assert_close(mean_logit, z.mean(-1).float())
    assert torch.equal(top1, z.argmax(-1) == targets)
    g = torch.randn(37, dtype=torch.float64)
    gh, gw = torch.autograd.grad((lp.double() * g).sum(), (hidden, weight))
    eh, ew = torch.autograd.grad((want * g).sum(), (hidden, weight))
    torch.testing.assert_close(gh, eh, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gw, ew, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "lengths,overhead,expected",
    [
        ([10, 10, 10, 10], 96, [[0, 1, 2, 3]]),  # equal lengths: one group
        ([100, 10, 100, 10], 5, [[1, 3], [0, 2]]),  # two clear modes, cheap groups: split (saves 180 > 5)
        ([100, 10, 100, 10], 500, [[1, 3, 0, 2]]),  # a group costs more than the padding it saves: keep one
        ([50, 49, 51], 0, [[1], [0], [2]]),  # free groups: every row alone (no padding at all)
    ],
)
def test_length_buckets_minimise_padding_plus_overhead(lengths, overhead, expected):
    groups = fast_head.length_buckets(lengths, overhead)
    assert groups == expected
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


def test_length_buckets_cost_is_optimal_against_brute_force():
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(20):
        lengths = [rng.randint(1, 200) for _ in range(7)]
        srt = sorted(lengths)

        def cost(groups, lengths=lengths):
            return sum(max(lengths[i] for i in g) * len(g) + 40 for g in groups)

        best = min(
            sum(max(srt[a:b]) * (b - a) + 40 for a, b in zip((0, *cuts), (*cuts, len(srt))))
            for k in range(len(srt))
            for cuts in itertools.combinations(range(1, len(srt)), k)
        )
        assert cost(fast_head.length_buckets(lengths, 40)) == best


def test_bucketed_reward_model_gives_the_padded_batch_scores_and_gradients(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    from align.models import load_sequence_classifier

    def model():
        torch.manual_seed(1)  # the score head is initialised at load
        m = load_sequence_classifier(str(tiny_model_dir), pad_token_id=0)
        cfg = LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules="all-linear",
            task_type="SEQ_CLS",
            modules_to_save=["score"],
            init_lora_weights=False,
        )
        return m, get_peft_model(m, cfg)

    # Lengths with two clear modes, so the buckets differ (lengths within one bucket made the bucketed forward fall
    # back to the plain one, and the test compared the model with itself).
    lengths = [7, 300, 12, 290, 5, 18, 310, 9]
    groups = fast_head.length_buckets(lengths)
    assert len(groups) >= 2, groups
    ids, att, _ = _batch(1000, lengths, [1] * 8)

    def scores(pm):
        pm.zero_grad()
        logits = pm(input_ids=ids, attention_mask=att, use_cache=False).logits
        (logits.squeeze(-1) * torch.arange(1.0, 9.0)).sum().backward()  # row-specific weights: order matters
        return logits.detach(), torch.cat([p.grad.flatten() for p in pm.parameters() if p.requires_grad])

    want, want_grads = scores(model()[1])
    base, pm = model()
    assert fast_head.install_bucketed_classifier(base)
    widths: list[int] = []  # one forward of the transformer body per bucket, each trimmed to its longest row

    def record_width(module, args, kwargs, out):
        x = kwargs.get("input_ids")
        widths.append((x if x is not None else args[0]).shape[1])

    hook = base.model.register_forward_hook(record_width, with_kwargs=True)
    got, grads = scores(pm)
    hook.remove()
    assert sorted(widths) == sorted(max(lengths[i] for i in g) for g in groups), widths
    assert got.shape == want.shape == (8, 1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads, want_grads, atol=1e-6, rtol=1e-4)


def test_compare_log_ratios_and_exact_kl_match_full_logits(tiny_model_dir):
    from align.compare import response_logratio

    model = _tiny_lora(tiny_model_dir)
    g = torch.Generator().manual_seed(3)
    samples = [
        {"prompt_ids": torch.randint(3, 1000, (p,), generator=g).tolist(),
         "response_ids": torch.randint(3, 1000, (r,), generator=g).tolist()}
        for p, r in [(5, 7), (12, 3), (3, 9), (20, 1)]
    ]  # fmt: skip
    pol, ref, mask, kl = response_logratio(model, samples, batch_size=3, exact_kl=True)
    for i, s in enumerate(samples):
        ids = torch.tensor([s["prompt_ids"] + s["response_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
            with model.disable_adapter():
                lq = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        start, n = len(s["prompt_ids"]) - 1, len(s["response_ids"])
        tgt = ids[0, 1:, None]
        want_p = lp.gather(-1, tgt).squeeze(-1)[start : start + n]
        want_q = lq.gather(-1, tgt).squeeze(-1)[start : start + n]
        want_kl = (lp.exp() * (lp - lq)).sum(-1)[start : start + n]
        assert mask[i].sum() == n and mask[i, :n].all()
        torch.testing.assert_close(torch.tensor(pol[i, :n]).float(), want_p, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.tensor(ref[i, :n]).float(), want_q, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(torch.tensor(kl[i, :n]).float(), want_kl, atol=1e-5, rtol=1e-4)
    assert (kl[mask == 1] > 0).all()  # the adapter (random init) moved every distribution


def test_ppo_micro_batches_drop_shared_left_padding_without_changing_outputs(tiny_model_dir):
    from align.stages.ppo import leading_pad_columns, position_ids_from_mask

    model = _tiny_lora(tiny_model_dir)
    ids, att, _ = _batch(1000, [7, 12, 9], [1, 1, 1], left=True)
    ids = torch.cat([torch.zeros((3, 5), dtype=torch.long), ids], 1)  # 5 more columns of shared padding
    att = torch.cat([torch.zeros((3, 5), dtype=torch.long), att], 1)
    assert leading_pad_columns(att) == 5 + (12 - 12)
    assert leading_pad_columns(att[[0, 2]]) == 5 + 12 - 9
    pos = position_ids_from_mask(att)
    rows = [0, 2]
    lead = leading_pad_columns(att[rows])
    with torch.no_grad():
        full = model(input_ids=ids[rows], attention_mask=att[rows], position_ids=pos[rows], logits_to_keep=4).logits
        cut = model(
            input_ids=ids[rows, lead:],
            attention_mask=att[rows, lead:],
            position_ids=pos[rows, lead:],
            logits_to_keep=4,
        ).logits
    torch.testing.assert_close(cut, full, atol=1e-5, rtol=1e-5)
    assert leading_pad_columns(torch.zeros((2, 4), dtype=torch.long)) == 0
