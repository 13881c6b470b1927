"""The one generation path: only the recipe's sampling settings shape the answers, answers end at EOS, and a merged
copy of a LoRA policy generates what the adapter model generates."""

from __future__ import annotations

import torch
from transformers import GenerationConfig

from align.eval.generation import Sampling, cut_at_eos, generate, merged_copy, neutral_defaults
from align.models import load_causal_lm, load_tokenizer
from align.templates import Encoder

PROMPTS = [
    [{"role": "user", "content": "What causes the seasons?"}],
    [{"role": "user", "content": "Name a prime number, please, and say why it is prime."}],
    [{"role": "user", "content": "Hi"}],
]


def _model_and_ids(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    tok = load_tokenizer(str(tiny_model_dir))
    enc = Encoder(tok)
    return model, tok, [enc.prompt(p) for p in PROMPTS]


def _texts(samples):
    return [s.text for s in samples]


def test_generation_config_of_the_model_does_not_leak_into_greedy_or_sampled_answers(tiny_model_dir):
    model, tok, ids = _model_and_ids(tiny_model_dir)
    greedy = Sampling(max_new_tokens=12)
    sampled = Sampling(max_new_tokens=12, temperature=1.0, seed=3)
    clean = (_texts(generate(model, tok, ids, greedy)), _texts(generate(model, tok, ids, sampled, num_samples=2)))
    # A model whose generation_config.json sets extra logits processors (as many hub models do).
    model.generation_config = GenerationConfig(
        repetition_penalty=50.0, no_repeat_ngram_size=1, min_p=0.9, top_k=2, temperature=0.1
    )
    leaky = (_texts(generate(model, tok, ids, greedy)), _texts(generate(model, tok, ids, sampled, num_samples=2)))
    assert leaky == clean
    assert model.generation_config.repetition_penalty == 50.0  # restored after the call
    # Without the neutral defaults, transformers fills the unset fields from the model's config: the leak is real.
    naive = model.generate(
        input_ids=torch.tensor([ids[0]]), generation_config=GenerationConfig(do_sample=False, max_new_tokens=12)
    )
    with neutral_defaults(model):
        neutral = model.generate(
            input_ids=torch.tensor([ids[0]]), generation_config=GenerationConfig(do_sample=False, max_new_tokens=12)
        )
    assert naive.tolist() != neutral.tolist()


def test_samples_come_back_grouped_by_prompt_in_input_order_and_reproducibly(tiny_model_dir):
    model, tok, ids = _model_and_ids(tiny_model_dir)
    s = Sampling(max_new_tokens=8, temperature=1.0, seed=0)
    first = generate(model, tok, ids, s, num_samples=3, batch_size=4)
    assert [x.index for x in first] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(x.prompt_ids == ids[x.index] for x in first)
    again = generate(model, tok, ids, s, num_samples=3, batch_size=4)
    assert _texts(again) == _texts(first)
    # Batching changes the order rows are drawn in but never which prompt an answer belongs to.
    one_by_one = generate(model, tok, ids, Sampling(max_new_tokens=8), batch_size=1)
    together = generate(model, tok, ids, Sampling(max_new_tokens=8), batch_size=64)
    assert _texts(one_by_one) == _texts(together)


def test_answers_are_cut_after_their_first_eos_and_padding_is_dropped():
    assert cut_at_eos([5, 6, 2, 7, 2], eos_id=2, pad_id=0) == ([5, 6, 2], True)
    assert cut_at_eos([5, 6, 0, 0], eos_id=2, pad_id=0) == ([5, 6], False)
    assert cut_at_eos([5, 2, 2, 2], eos_id=2, pad_id=2) == ([5, 2], True)  # pad == eos keeps the EOS


def test_merged_copy_generates_what_the_adapter_model_generates(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, tok, ids = _model_and_ids(tiny_model_dir)
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    fast = merged_copy(peft_model)
    assert not hasattr(fast, "peft_config")
    s = Sampling(max_new_tokens=10)
    assert _texts(generate(fast, tok, ids, s)) == _texts(generate(peft_model, tok, ids, s))
    with peft_model.disable_adapter():  # the original keeps its adapter (and so its reference)
        base = _texts(generate(peft_model, tok, ids, s))
    assert base != _texts(generate(peft_model, tok, ids, s))
