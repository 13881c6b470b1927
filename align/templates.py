"""Chat templating and tokenization, with the guards TRL leaves to the user.

Every stage tokenizes here, then hands token ids to TRL, so the rules hold in one place:

- text is rendered with the tokenizer's chat template (or a named fallback for base models without one) and
  tokenized with ``add_special_tokens=False``: the template already renders BOS where the model wants it, and
  tokenizing with special tokens on would add a second one (docs/faults.md #7);
- the rendered prompt (with the generation prompt) must be a token prefix of prompt+response; a template that
  breaks this on the first rows is misconfigured (ERROR), later rows that break it are skipped and counted as
  ``prefix_mismatch`` (docs/faults.md #6);
- each response ends with EOS exactly once, and that EOS is inside the loss mask; masks are built from positions,
  never from ``token == pad``, so a tokenizer with pad == eos keeps its EOS in the loss (docs/faults.md #8);
- a prompt that leaves no room for a single response token under ``max_length`` is skipped as
  ``truncated_to_empty`` (docs/faults.md #9); longer rows keep the prompt and the start of the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.records import Message
from align.errors import TemplateError  # noqa: F401  (re-exported: importable here as before)

# Named fallbacks for base models that ship without a chat template.
FALLBACK_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
        "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "human-assistant": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'Human: ' + message['content'] + '\n\n' }}"
        "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\n\n' }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    ),
}

# How many rows must pass the prefix check before a failure is counted as a skip instead of an error.
STRICT_ROWS = 8


class Skip(Exception):
    """A row that cannot be used; ``reason`` is its drop-report key."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def apply_template_choice(tokenizer: Any, choice: str | None) -> str:
    """Install the recipe's template choice on ``tokenizer`` and return the template text in use."""
    if choice:
        if choice in FALLBACK_TEMPLATES:
            tokenizer.chat_template = FALLBACK_TEMPLATES[choice]
        elif Path(choice).is_file():
            tokenizer.chat_template = Path(choice).read_text()
        else:
            raise TemplateError(
                f"template.chat_template={choice!r} is neither a named template ({', '.join(FALLBACK_TEMPLATES)}) "
                "nor a file. Leave it empty to use the tokenizer's own template."
            )
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "This tokenizer has no chat template (a base model?). Set template.chat_template to one of "
            f"{', '.join(FALLBACK_TEMPLATES)} or to a Jinja file."
        )
    return tokenizer.chat_template


def with_system(messages: list[Message], system_prompt: str | None) -> list[Message]:
    if system_prompt and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system_prompt}, *messages]
    return list(messages)


def render(tokenizer: Any, messages: list[Message], *, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise TemplateError(
            "The tokenized text starts with two BOS tokens: the chat template renders BOS and something adds "
            "another. Tokenize rendered templates with add_special_tokens=False, or remove bos_token from a "
            "custom template."
        )
    return ids


def _trim_to_eos(completion: list[int], eos_id: int) -> list[int]:
    """Keep the response up to and including its first EOS (templates often render '\\n' after it); add EOS if
    the template does not render one."""
    if eos_id in completion:
        return completion[: completion.index(eos_id) + 1]
    return [*completion, eos_id]


def _eos_added(completion: list[int], eos_id: int) -> bool:
    """True when :func:`_trim_to_eos` appended the EOS (the template never renders it), i.e. the EOS is align's and
    not part of what the template renders for later turns."""
    return eos_id not in completion


@dataclass
class Encoder:
    """Tokenizes records for one tokenizer and template, counting the rows it checked."""

    tokenizer: Any
    max_length: int | None = None
    system_prompt: str | None = None
    rows_checked: int = 0

    def __post_init__(self) -> None:
        if self.tokenizer.eos_token_id is None:
            raise TemplateError("The tokenizer has no EOS token; set one (tokenizer.eos_token) before training.")

    # -- shared -------------------------------------------------------------------------------------------------

    def _prompt_and_completion(self, prompt: list[Message], response: list[Message]) -> tuple[list[int], list[int]]:
        p_ids, c_ids, _ = self._turn(prompt, response)
        return p_ids, c_ids

    def _turn(self, prompt: list[Message], response: list[Message]) -> tuple[list[int], list[int], bool]:
        """(prompt ids, completion ids ending in EOS, whether that EOS was added by align rather than rendered)."""
        prompt = with_system(prompt, self.system_prompt)
        p_ids = encode_text(self.tokenizer, render(self.tokenizer, prompt, add_generation_prompt=True))
        full_ids = encode_text(self.tokenizer, render(self.tokenizer, prompt + response))
        if full_ids[: len(p_ids)] != p_ids:
            self._prefix_failure(prompt, p_ids, full_ids)
        completion = full_ids[len(p_ids) :]
        eos = self.tokenizer.eos_token_id
        return p_ids, _trim_to_eos(completion, eos), _eos_added(completion, eos)

    def _prefix_failure(self, prompt, p_ids, full_ids) -> None:
        n = next((i for i, (a, b) in enumerate(zip(p_ids, full_ids)) if a != b), min(len(p_ids), len(full_ids)))
        detail = (
            f"the rendered prompt is not a token prefix of prompt+response (they differ at token {n}: prompt has "
            f"{self.tokenizer.decode(p_ids[n : n + 8])!r}, prompt+response has {self.tokenizer.decode(full_ids[n : n + 8])!r})"
        )
        if self.rows_checked < STRICT_ROWS:
            raise TemplateError(
                f"Chat template check failed on an early row: {detail}. The template renders the prompt "
                "differently alone (generation prompt, <think> insertion, whitespace). Fix the template "
                "(template.chat_template) so that prompt + generation prompt is a prefix of the full conversation."
            )
        raise Skip("prefix_mismatch", detail)

    def _fit(self, p_ids: list[int], c_ids: list[int]) -> list[int]:
        """The completion cut to fit max_length after the prompt; no room for one token = a counted skip."""
        if self.max_length is None:
            return c_ids
        if len(p_ids) >= self.max_length:
            raise Skip("truncated_to_empty", f"prompt has {len(p_ids)} tokens, max_length is {self.max_length}")
        return c_ids[: self.max_length - len(p_ids)]

    # -- per stage ----------------------------------------------------------------------------------------------

    def preference(self, prompt: list[Message], chosen: list[Message], rejected: list[Message]) -> dict[str, Any]:
        """TRL's pre-tokenized preference columns: prompt_ids, chosen_ids, rejected_ids (responses end with EOS)."""
        p_ids, c_ids = self._prompt_and_completion(prompt, chosen)
        p2_ids, r_ids = self._prompt_and_completion(prompt, rejected)
        assert p_ids == p2_ids, "the same prompt must render the same way"
        self.rows_checked += 1
        c_ids, r_ids = self._fit(p_ids, c_ids), self._fit(p_ids, r_ids)
        return {"prompt_ids": p_ids, "chosen_ids": c_ids, "rejected_ids": r_ids}

    def unpaired(self, prompt: list[Message], completion: list[Message]) -> dict[str, Any]:
        """TRL KTOTrainer's pre-tokenized columns: prompt_ids, completion_ids (the completion ends with EOS)."""
        p_ids, c_ids = self._prompt_and_completion(prompt, completion)
        self.rows_checked += 1
        return {"prompt_ids": p_ids, "completion_ids": self._fit(p_ids, c_ids)}

    def sft(self, messages: list[Message]) -> dict[str, Any]:
        """input_ids plus assistant_masks: 1 on every assistant turn's tokens including its EOS, 0 elsewhere."""
        messages = with_system(messages, self.system_prompt)
        input_ids: list[int] = []
        mask: list[int] = []
        # What the template itself rendered so far: input_ids less the EOS align appends to each assistant turn
        # when the template never renders one (e.g. chatml on a model whose EOS is not <|im_end|>). Later turns
        # are checked against this, since the template renders them without align's EOS.
        rendered: list[int] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            p_ids, c_ids, added = self._turn(messages[:i], [m])
            if rendered and p_ids[: len(rendered)] != rendered:
                raise Skip("prefix_mismatch", "an earlier turn renders differently once later turns follow")
            new_prompt = p_ids[len(rendered) :]
            mask += [0] * len(new_prompt) + [1] * len(c_ids)
            input_ids = input_ids + new_prompt + c_ids
            rendered = p_ids + (c_ids[:-1] if added else c_ids)
        if not any(mask):
            raise Skip("no_assistant_turn", "the conversation has no assistant turn to learn from")
        self.rows_checked += 1
        if self.max_length is not None:
            first = mask.index(1)
            if first >= self.max_length:
                raise Skip("truncated_to_empty", f"the first reply starts at token {first} >= max_length")
            input_ids, mask = input_ids[: self.max_length], mask[: self.max_length]
        return {"input_ids": input_ids, "assistant_masks": mask}

    def reward_pair(self, prompt: list[Message], chosen: list[Message], rejected: list[Message]) -> dict[str, Any]:
        """TRL RewardTrainer's pre-tokenized columns: whole sequences chosen_ids / rejected_ids."""
        enc = self.preference(prompt, chosen, rejected)
        return {
            "chosen_ids": enc["prompt_ids"] + enc["chosen_ids"],
            "rejected_ids": enc["prompt_ids"] + enc["rejected_ids"],
        }

    def prompt(self, prompt: list[Message]) -> list[int]:
        """Prompt ids for generation (rollouts, comparison)."""
        return encode_text(
            self.tokenizer, render(self.tokenizer, with_system(prompt, self.system_prompt), add_generation_prompt=True)
        )
