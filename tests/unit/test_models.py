import json
import time

import pytest
import torch

from align import models


def test_tiny_model_forward_gives_finite_logits_of_vocab_size(tiny_model_dir):
    tok = models.load_tokenizer(str(tiny_model_dir))
    model = models.load_causal_lm(str(tiny_model_dir))
    ids = tok("hello world", add_special_tokens=False, return_tensors="pt").input_ids
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(logits).all()
    n_params = sum(p.numel() for p in model.parameters())
    assert 100_000 < n_params < 1_000_000


def test_tiny_tokenizer_has_distinct_specials_and_a_template_that_renders_bos_once(tiny_model_dir):
    tok = models.load_tokenizer(str(tiny_model_dir))
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_tiny_model_is_deterministic_and_survives_save_reload(tmp_path, tiny_model_dir):
    a = models.build_tiny_model(tmp_path / "a", seed=0)
    model_a = models.load_causal_lm(str(a))
    model_b = models.load_causal_lm(str(tiny_model_dir))
    ids = torch.tensor([[1, 5, 9, 12]])
    assert torch.equal(model_a(ids).logits, model_b(ids).logits)
    model_a.save_pretrained(tmp_path / "re")
    again = models.load_causal_lm(str(tmp_path / "re"))
    assert torch.equal(again(ids).logits, model_a(ids).logits)


def test_cache_entry_without_marker_is_incomplete(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    assert not models.is_complete(d)
    models._write_marker(d, {})
    assert models.is_complete(d)


def test_cache_entry_with_truncated_file_is_incomplete(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x" * 100)
    models._write_marker(d, {})
    (d / "model.safetensors").write_bytes(b"x" * 10)  # a half-written file
    assert not models.is_complete(d)
    (d / "model.safetensors").unlink()
    assert not models.is_complete(d)


def test_marker_that_is_not_json_is_incomplete(tmp_path):
    (tmp_path / models.MARKER).write_text("{half")
    assert not models.is_complete(tmp_path)


def test_fetch_is_a_no_op_when_complete_and_rebuilds_when_incomplete(align_home, tiny_model_dir):
    marker = tiny_model_dir / models.MARKER
    before = json.loads(marker.read_text())["created"]
    assert models.fetch_builtin("tiny-llama") == tiny_model_dir
    assert json.loads(marker.read_text())["created"] == before
    (tiny_model_dir / "config.json").write_text("{}")  # damage it
    logs = []
    models.fetch_builtin("tiny-llama", log=logs.append)
    assert models.is_complete(tiny_model_dir)
    assert any("incomplete" in m for m in logs)


def test_unknown_builtin_lists_known_names():
    with pytest.raises(models.ModelError, match="smollm2-135m-instruct"):
        models.resolve_model_path("builtin:nope")


def test_local_paths_and_hub_ids_resolve_without_fetching(tmp_path):
    assert models.resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert models.resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(models.ModelError, match="does not exist"):
        models.resolve_model_path("./missing/model")


def test_models_list_reports_cached_state(align_home, tiny_model_dir):
    rows = {r["name"]: r for r in models.builtin_status()}
    assert rows["builtin:tiny-llama"]["cached"] is True
    assert set(rows) == {"builtin:tiny-llama", "builtin:smollm2-135m-instruct"}


@pytest.mark.slow
def test_smollm2_fetch_answers_paris_and_second_fetch_is_fast(real_align_home):
    """Real download + GGUF conversion into the user's ALIGN_HOME (shared with the slow stage tests)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.fetch_builtin("smollm2-135m-instruct")
    t0 = time.time()
    assert models.fetch_builtin("smollm2-135m-instruct") == path
    assert time.time() - t0 < 5
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_reward_model_load_from_a_causal_lm_does_not_print_the_missing_score_report(tmp_path, capfd):
    # Issue 15: every reward-model load printed transformers' "score.weight MISSING" report for a head that is
    # meant to be new.
    from align.models import build_tiny_model, load_sequence_classifier

    path = build_tiny_model(tmp_path / "tiny")
    capfd.readouterr()
    model = load_sequence_classifier(str(path))
    captured = capfd.readouterr()
    assert model.score.weight.shape[0] == 1
    assert "MISSING" not in captured.err + captured.out
