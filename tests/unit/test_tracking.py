import json

from align.tracking import RunRecorder, read_manifest, setup_trackers


def _recorder(tmp_path, **kw):
    return RunRecorder(
        run_dir=tmp_path / "run" / "sft",
        stage="sft",
        config={"run": {"name": "x"}, "secrets": {"wandb_api_key": "k-123"}},
        config_hash="abc",
        model_ref="builtin:tiny-llama",
        parent="runs/x/base",
        data={"fingerprint": "f"},
        **kw,
    )


def test_manifest_records_lineage_versions_and_final_metrics(tmp_path):
    rec = _recorder(tmp_path)
    rec.start()
    m = read_manifest(rec.run_dir)
    assert m["status"] == "running" and m["attempts"] == 1
    rec.log({"loss": 1.5}, step=1)
    rec.finish({"loss": 0.5})
    m = read_manifest(rec.run_dir)
    assert m["status"] == "complete" and m["metrics"] == {"loss": 0.5}
    assert m["stage"] == "sft" and m["parent"] == "runs/x/base" and m["model"] == "builtin:tiny-llama"
    assert m["config_hash"] == "abc" and m["data"] == {"fingerprint": "f"}
    assert {"torch", "transformers", "trl", "peft", "accelerate"} <= set(m["packages"])
    assert m["code_version"].startswith("0.")
    assert m["ended_at"] and m["started_at"]
    rows = [json.loads(line) for line in (rec.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 1 and rows[0]["loss"] == 1.5


def test_secrets_never_reach_config_or_manifest(tmp_path):
    rec = _recorder(tmp_path)
    rec.start()
    rec.finish({}, hub_token="hf_secret")
    for name in ("config.yaml", "manifest.json"):
        text = (rec.run_dir / name).read_text()
        assert "k-123" not in text and "hf_secret" not in text


def test_second_start_counts_attempts(tmp_path):
    _recorder(tmp_path).start()
    rec = _recorder(tmp_path)
    rec.start()
    assert read_manifest(rec.run_dir)["attempts"] == 2


def test_non_main_process_writes_nothing(tmp_path):
    rec = _recorder(tmp_path, is_main=False)
    rec.start()
    rec.log({"loss": 1})
    rec.finish({})
    assert not (tmp_path / "run").exists()


def test_wandb_defaults_to_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert setup_trackers(["wandb"], "proj") == ["wandb"]
    import os

    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_PROJECT"] == "proj"
    assert setup_trackers([], "proj") == []


def test_wandb_with_a_key_fails_fast_instead_of_retrying_for_minutes(monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    setup_trackers(["wandb"], "proj")
    assert os.environ.get("WANDB_MODE") is None  # online: a key is configured
    assert float(os.environ["WANDB_INIT_TIMEOUT"]) <= 30  # issue 15: an unreachable server hung for 107 s
