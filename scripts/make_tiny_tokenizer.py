"""Make the committed tiny tokenizer asset (align/assets/tiny-tokenizer) used by builtin:tiny-llama.

A byte-level BPE (so any text encodes) with 1024 tokens, trained on the bundled dataset's text (written for this
project) plus a few fixed sentences. Deterministic: the same inputs give the same tokenizer.json.

    python scripts/make_tiny_tokenizer.py
"""

from __future__ import annotations

import json
from pathlib import Path

from align.models import TINY_TOKENIZER_ASSET, train_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "align" / "data" / "samples"
FIXED = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Human: Can you help me? Assistant: Of course, I am happy to help.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } < > ! ? . , ; : ' \"",
]


def corpus() -> list[str]:
    texts = list(FIXED)
    for name in ("prefs.jsonl", "sft.jsonl", "eval_prompts.jsonl"):
        path = SAMPLES / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            row = json.loads(line)
            for v in row.values():
                if isinstance(v, str):
                    texts.append(v)
                elif isinstance(v, list):
                    texts.extend(m["content"] for m in v if isinstance(m, dict) and "content" in m)
    return texts


def main() -> None:
    out = ROOT / "align" / TINY_TOKENIZER_ASSET
    tok = train_tiny_tokenizer(corpus())
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    (out / "README.md").write_text(
        "# tiny-tokenizer\n\nByte-level BPE, 1024 tokens, for `builtin:tiny-llama` (tests).\n"
        "Made by `python scripts/make_tiny_tokenizer.py` from the bundled dataset's text (written for this project) "
        "and a few fixed sentences.\nSpecial tokens: `<|pad|>` (pad), `<|bos|>` (bos), `<|im_end|>` (eos, end of "
        "turn), `<|im_start|>`. The ChatML chat template renders BOS itself, so rendered text is tokenized with "
        "`add_special_tokens=False`.\n"
    )
    print(f"wrote {out} ({len(tok)} tokens)")


if __name__ == "__main__":
    main()
