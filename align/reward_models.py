"""Reward models as scorers: the one way align loads a reward-model run and scores prompt+response pairs.

Used by PPO, the on-policy pairs stage, ``align compare --judge`` and best-of-n. The model comes from
``align.runs.load_reward_model``, which rebuilds it the way it was trained (its ``weights.merged`` chain included). Scores never depend on padding side or batch
composition (docs/faults.md #11), and ids never cross vocabularies: a reward model with another tokenizer or chat template
gets the text re-rendered in its own (docs/faults.md #17).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from align.config import ConfigError, ModelSection
from align.runs import RunDir, load_reward_model
from align.templates import Encoder, Skip, apply_template_choice, encode_text


@torch.no_grad()
def score_sequences(
    model: Any, sequences: list[list[int]], pad_id: int, batch_size: int = 16, padding_side: str = "right"
) -> list[float]:
    """Reward for each token-id sequence (batched, padded, attention-masked). Used by RM eval, PPO, pairs and compare.

    Batches are formed in length order (less padding; scores do not depend on the batch), returned in input order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda k: len(sequences[k]))
    scores: list[float] = []
    for i in range(0, len(sequences), batch_size):
        chunk = [sequences[k] for k in order[i : i + batch_size]]
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, s in enumerate(chunk):
            if padding_side == "right":
                ids[j, : len(s)] = torch.tensor(s)
                mask[j, : len(s)] = 1
            else:
                ids[j, width - len(s) :] = torch.tensor(s)
                mask[j, width - len(s) :] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        scores.extend(logits[:, 0].float().cpu().tolist())
    model.train(was_training)
    out = [0.0] * len(sequences)
    for k, v in zip(order, scores):
        out[k] = v
    return out


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the token -> id mapping (added tokens included): equal fingerprints mean ids mean the same."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def needs_retokenization(policy_tokenizer: Any, rm_tokenizer: Any) -> bool:
    """True when policy ids cannot go to the reward model as they are: another vocabulary, or another chat template
    (the reward model was trained on its own rendering). Ids never cross vocabularies (docs/faults.md #17)."""
    if tokenizer_fingerprint(policy_tokenizer) != tokenizer_fingerprint(rm_tokenizer):
        return True
    rm_template = getattr(rm_tokenizer, "chat_template", None)
    return bool(rm_template) and rm_template != getattr(policy_tokenizer, "chat_template", None)


def retokenize_for_reward_model(
    encoder: Any, prompts: list[list[dict[str, str]]], responses: list[str], ended: list[bool]
) -> list[list[int]]:
    """Prompt+response ids in the reward model's own tokenizer and template, from messages and response texts.

    A response that ended with EOS is rendered as a finished assistant turn (ending with the RM's EOS, as in its
    training data); a truncated one is the RM's rendered prompt followed by the response text, with no EOS.
    """
    out = []
    for prompt, text, done in zip(prompts, responses, ended, strict=True):
        reply = [{"role": "assistant", "content": text}]
        if done:
            try:
                out.append(encoder.reward_pair(prompt, reply, reply)["chosen_ids"])
                continue
            except Skip:
                pass  # a template that renders this turn oddly: fall back to prompt + text + EOS
            out.append(
                encoder.prompt(prompt) + encode_text(encoder.tokenizer, text) + [encoder.tokenizer.eos_token_id]
            )
        else:
            out.append(encoder.prompt(prompt) + encode_text(encoder.tokenizer, text))
    return out


def resolve_reward_model_dir(path: str) -> tuple[Path, Path | None]:
    """(directory holding the weights, RM stage directory or None) for a stage dir or a model dir."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(
            f"reward_model={path!r} does not exist; point it at a reward-model stage directory (runs/<name>/rm) or "
            "a sequence-classification model directory."
        )
    run = RunDir(p) if (p / "model").is_dir() else RunDir.of(p)
    return (run.model_dir if (p / "model").is_dir() else p), (run.path if run.is_run else None)


class RewardModelScorer:
    """A sequence-classification reward model with its own tokenizer; scores prompt+response sequences."""

    def __init__(
        self,
        path: str,
        policy_tokenizer: Any,
        dtype: str = "float32",
        device: Any = "cpu",
        log=print,
        settings: ModelSection | None = None,
    ):
        """``settings``: the calling stage's ``model`` section (align.runs.load_settings says what applies)."""
        model, self.tokenizer, info = load_reward_model(path, dtype=dtype, settings=settings, log=log)
        self.path = str(Path(path).expanduser().resolve())
        self.model_dir = info["model_dir"]
        stats_file = self.model_dir / "reward_stats.json"
        self.stats = json.loads(stats_file.read_text()) if stats_file.is_file() else None
        # a LoRA reward model's adapter directory and the adapters merged under it: a critic adapter can start
        # from them (ppo.value_model adapter, value_init reward_model)
        self.adapter_dir: Path | None = info["adapter_dir"]
        self.merged: list[str] = info["merged"]
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.retokenize = needs_retokenization(policy_tokenizer, self.tokenizer)
        self.encoder = None
        if self.retokenize:
            apply_template_choice(self.tokenizer, None)  # a clear error when the RM has no chat template
            self.encoder = Encoder(self.tokenizer)

    def score_texts(
        self, prompt_messages: list[list[dict[str, str]]], texts: list[str], ended: list[bool], batch_size: int = 16
    ) -> list[float]:
        """Scores of answer texts, each rendered in the reward model's own tokenizer and template: the same ids
        whichever policy wrote the text (a judge comparing checkpoints scores them all alike)."""
        if self.encoder is None:
            apply_template_choice(self.tokenizer, None)
            self.encoder = Encoder(self.tokenizer)
        seqs = retokenize_for_reward_model(self.encoder, prompt_messages, texts, ended)
        return score_sequences(self.model, seqs, self.tokenizer.pad_token_id, batch_size=batch_size)

    def score_head(self) -> nn.Module | None:
        head = getattr(self.model, "score", None)
        return head if isinstance(head, nn.Linear) else None

    def __call__(
        self,
        prompt_messages: list[list[dict[str, str]]],
        sequences: list[list[int]],
        texts: list[str],
        ended: list[bool],
        batch_size: int = 16,
    ) -> list[float]:
        if self.retokenize:
            sequences = retokenize_for_reward_model(self.encoder, prompt_messages, texts, ended)
        return score_sequences(self.model, sequences, self.tokenizer.pad_token_id, batch_size=batch_size)
