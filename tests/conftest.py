"""Shared fixtures: an isolated ALIGN_HOME per session, the tiny model built once, offline hubs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REAL_ALIGN_HOME = os.environ.get("ALIGN_HOME")


@pytest.fixture
def real_align_home(monkeypatch):
    """`slow` tests use the user's real model cache (SmolLM2 is fetched once, not per test session)."""
    if REAL_ALIGN_HOME is None:
        monkeypatch.delenv("ALIGN_HOME", raising=False)
    else:
        monkeypatch.setenv("ALIGN_HOME", REAL_ALIGN_HOME)


@pytest.fixture(scope="session")
def align_home(tmp_path_factory):
    """A private model cache for the test session (the real SmolLM2 cache is used only by `slow` tests)."""
    home = tmp_path_factory.mktemp("align_home")
    old = os.environ.get("ALIGN_HOME")
    os.environ["ALIGN_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("ALIGN_HOME", None)
    else:
        os.environ["ALIGN_HOME"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(align_home):
    from align.models import fetch_builtin

    return fetch_builtin("tiny-llama", log=lambda *a: None)
