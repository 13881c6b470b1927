"""Where a command's results go: the real stdout, while everything else (ours or a library's) goes to stderr.

``align.cli.main`` sets ``RESULT_OUT`` to the process's stdout and redirects ``sys.stdout`` to stderr for the
command's duration (transformers prints "[INFO] Running in WANDB offline mode" to stdout on import), so ``--json``
and ``--dry-run`` output stays clean.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

RESULT_OUT: Any = None


def emit(text: str) -> None:
    """Print one result to the command's stdout."""
    out = RESULT_OUT or sys.stdout
    try:
        print(text, file=out, flush=True)
    except BrokenPipeError:  # `align data ... --json | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())


def emit_json(obj: Any) -> None:
    emit(json.dumps(obj, indent=2, ensure_ascii=False))


def emit_obj(obj: Any, as_json: bool) -> None:
    emit(json.dumps(obj, indent=2, default=str) if as_json else str(obj))
