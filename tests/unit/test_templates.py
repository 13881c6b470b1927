"""Template guards (FAULTS 6-9) on the tiny tokenizer, one that adds BOS itself, and one with pad == eos."""

import pytest

from align.models import tiny_tokenizer
from align.templates import FALLBACK_TEMPLATES, STRICT_ROWS, Encoder, Skip, TemplateError, apply_template_choice

PROMPT = [{"role": "user", "content": "What colour is the sky?"}]
CHOSEN = [{"role": "assistant", "content": "It is usually blue."}]
REJECTED = [{"role": "assistant", "content": "Green."}]


@pytest.fixture
def tok():
    return tiny_tokenizer()


def test_preference_ids_have_one_bos_and_responses_end_with_eos_once(tok):
    enc = Encoder(tok).preference(PROMPT, CHOSEN, REJECTED)
    full = enc["prompt_ids"] + enc["chosen_ids"]
    assert full[0] == tok.bos_token_id and full.count(tok.bos_token_id) == 1
    for key in ("chosen_ids", "rejected_ids"):
        assert enc[key][-1] == tok.eos_token_id and enc[key].count(tok.eos_token_id) == 1
    assert tok.decode(enc["chosen_ids"], skip_special_tokens=True) == "It is usually blue."


def test_sft_mask_covers_every_assistant_turn_and_its_eos_only(tok):
    msgs = [*PROMPT, *CHOSEN, {"role": "user", "content": "And at night?"}, {"role": "assistant", "content": "Dark."}]
    enc = Encoder(tok).sft(msgs)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    learned = [i for i, m in zip(ids, mask) if m]
    assert tok.decode(learned, skip_special_tokens=True) == "It is usually blue.Dark."
    assert learned.count(tok.eos_token_id) == 2 and learned[-1] == tok.eos_token_id
    assert mask[0] == 0


def test_eos_stays_in_the_loss_mask_when_pad_equals_eos(tok):
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    enc = Encoder(tok).sft([*PROMPT, *CHOSEN])
    eos_positions = [i for i, t in enumerate(enc["input_ids"]) if t == tok.eos_token_id]
    assert enc["assistant_masks"][eos_positions[-1]] == 1


class _AddsBosTokenizer:
    """A tokenizer that prepends BOS whatever it is asked (like Llama's with add_bos_token=True)."""

    def __init__(self, tok):
        self.tok = tok
        self.bos_token_id, self.eos_token_id = tok.bos_token_id, tok.eos_token_id

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [self.bos_token_id, *self.tok(text, add_special_tokens=False)["input_ids"]]}

    def apply_chat_template(self, *a, **kw):
        return self.tok.apply_chat_template(*a, **kw)

    def decode(self, *a, **kw):
        return self.tok.decode(*a, **kw)


def test_double_bos_is_an_error_naming_add_special_tokens(tok):
    with pytest.raises(TemplateError, match="two BOS.*add_special_tokens=False"):
        Encoder(_AddsBosTokenizer(tok)).preference(PROMPT, CHOSEN, REJECTED)


def test_prompt_that_fills_max_length_is_skipped_as_truncated_to_empty(tok):
    long_prompt = [{"role": "user", "content": "word " * 400}]
    with pytest.raises(Skip) as e:
        Encoder(tok, max_length=64).preference(long_prompt, CHOSEN, REJECTED)
    assert e.value.reason == "truncated_to_empty"


def test_long_response_is_cut_but_keeps_at_least_one_token(tok):
    enc = Encoder(tok, max_length=40).preference(PROMPT, [{"role": "assistant", "content": "a b c " * 50}], REJECTED)
    assert 0 < len(enc["chosen_ids"]) and len(enc["prompt_ids"]) + len(enc["chosen_ids"]) == 40


def test_template_whose_prompt_is_not_a_prefix_errors_early_then_skips(tok):
    # A template that renders the last user turn differently when no reply follows (e.g. <think> insertion).
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: <think>' }}{% endif %}"
    )
    enc = Encoder(tok)
    with pytest.raises(TemplateError, match="not a token prefix"):
        enc.preference(PROMPT, CHOSEN, REJECTED)
    enc.rows_checked = STRICT_ROWS
    with pytest.raises(Skip) as e:
        enc.preference(PROMPT, CHOSEN, REJECTED)
    assert e.value.reason == "prefix_mismatch"


def test_model_without_template_needs_a_named_fallback(tok):
    tok.chat_template = None
    with pytest.raises(TemplateError, match="chatml, human-assistant"):
        apply_template_choice(tok, None)
    assert apply_template_choice(tok, "human-assistant") == FALLBACK_TEMPLATES["human-assistant"]
    enc = Encoder(tok).preference(PROMPT, CHOSEN, REJECTED)
    assert enc["chosen_ids"][-1] == tok.eos_token_id and enc["chosen_ids"].count(tok.eos_token_id) == 1


def test_unknown_template_name_is_an_error(tok):
    with pytest.raises(TemplateError, match="neither a named template"):
        apply_template_choice(tok, "alpaca-ish")


def test_template_that_never_renders_eos_keeps_multi_turn_sft_conversations(tok):
    # Issue 15: the chatml fallback on a model whose EOS is not <|im_end|> never renders EOS; the EOS align appends
    # to each assistant turn used to break the next turn's prefix check, dropping every multi-turn conversation.
    tok.add_special_tokens({"eos_token": "<|endoftext|>"})
    assert tok.eos_token_id != tok.convert_tokens_to_ids("<|im_end|>")
    apply_template_choice(tok, "chatml")
    enc = Encoder(tok)
    msgs = [*PROMPT, *CHOSEN, {"role": "user", "content": "And at night?"}, {"role": "assistant", "content": "Dark."}]
    for _ in range(STRICT_ROWS + 2):  # past the strict rows too: nothing may be skipped as prefix_mismatch
        out = enc.sft(msgs)
    ids, mask = out["input_ids"], out["assistant_masks"]
    learned = [i for i, m in zip(ids, mask) if m]
    assert learned.count(tok.eos_token_id) == 2 and learned[-1] == tok.eos_token_id  # each turn ends with EOS
    assert tok.decode(learned, skip_special_tokens=True).replace("<|im_end|>", "").split() == [
        "It", "is", "usually", "blue.", "Dark.",
    ]  # fmt: skip
    # Without align's EOS the token stream is exactly what the template renders for the whole conversation.
    from align.templates import encode_text, render

    assert [i for i in ids if i != tok.eos_token_id] == encode_text(tok, render(tok, msgs))
