import subprocess
import sys
from dataclasses import dataclass, field

import pytest

from align.config import (
    ConfigError,
    LoraSection,
    RunSection,
    build_dataclass,
    coerce,
    config_hash,
    load_recipe,
    parse_overrides,
    redact,
)


@dataclass
class _Inner:
    rate: float = 0.1
    names: list[str] = field(default_factory=list)
    flag: bool = False
    maybe: int | None = None


@dataclass
class _Recipe:
    STAGE = "toy"
    inner: _Inner = field(default_factory=_Inner)
    lora: LoraSection = field(default_factory=LoraSection)
    run: RunSection = field(default_factory=RunSection)


def test_overrides_become_nested_dicts_typed_by_the_target_field():
    parsed = parse_overrides(["inner.rate=1e-4", "inner.names=[a, b]", "inner.flag=true", "inner.maybe=null"])
    r = build_dataclass(_Recipe, parsed)
    assert r.inner == _Inner(rate=1e-4, names=["a", "b"], flag=True, maybe=None)


def test_yaml_words_like_no_stay_strings_for_string_fields():
    from trl import SFTConfig

    r = build_dataclass(_Recipe, parse_overrides(["run.name=no", "run.resume=off"]))
    assert r.run.name == "no" and r.run.resume == "off"
    cfg = build_dataclass(SFTConfig, {"eval_strategy": False, "output_dir": "x", "use_cpu": True, "bf16": False})
    assert cfg.eval_strategy.value == "no"  # `eval_strategy: no` in a YAML file


def test_override_with_a_list_index_reaches_that_item():
    from align.config import deep_merge

    base = {"data": {"sources": [{"path": "a", "max_rows": 5}, {"path": "b"}]}}
    merged = deep_merge(base, parse_overrides(["data.sources.1.max_rows=7"]))
    assert merged["data"]["sources"] == [{"path": "a", "max_rows": 5}, {"path": "b", "max_rows": "7"}]
    with pytest.raises(ConfigError, match="has 2 item"):
        deep_merge(base, parse_overrides(["data.sources.2.path=c"]))


def test_override_without_equals_is_an_error_with_an_example():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["training.learning_rate"])


def test_scientific_notation_string_is_coerced_to_float_for_float_fields():
    # PyYAML reads "1e-4" as a string; the declared type decides.
    assert coerce("1e-4", float, "k") == pytest.approx(1e-4)
    assert coerce("3", int, "k") == 3
    assert coerce("false", bool, "k") is False
    assert coerce("a,b", list[str], "k") == ["a", "b"]
    assert coerce("null", int | None, "k") is None
    assert coerce("all-linear", list[str] | str, "k") == "all-linear"


def test_wrong_type_names_the_key_and_the_expected_type():
    with pytest.raises(ConfigError, match=r"inner\.rate: expected a number, got 'fast'"):
        build_dataclass(_Recipe, {"inner": {"rate": "fast"}})


def test_unknown_key_names_the_key_suggests_and_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        build_dataclass(_Recipe, {"inner": {"rat": 0.2}})
    msg = str(e.value)
    assert "'inner.rat'" in msg and "Did you mean 'rate'" in msg and "flag, maybe, names, rate" in msg


def test_recipe_file_plus_overrides_resolve_in_order(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("inner:\n  rate: 0.5\n  names: [a]\nlora:\n  r: 4\n")
    r = load_recipe(_Recipe, p, ["inner.rate=0.25", "lora.alpha=8", "run.name=x"])
    assert r.inner.rate == 0.25 and r.inner.names == ["a"] and r.lora.r == 4 and r.lora.alpha == 8
    assert r.run.name == "x"


def test_dataclass_validation_message_is_wrapped_as_config_error():
    with pytest.raises(ConfigError, match="lora.r=0"):
        build_dataclass(_Recipe, {"lora": {"r": 0}})


def test_unknown_top_level_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="Unknown key 'lorra'.*Did you mean 'lora'"):
        load_recipe(_Recipe, None, ["lorra.r=4"])


def test_secrets_are_redacted_but_token_counts_are_not():
    out = redact({"wandb_api_key": "abc", "hub_token": "hf_x", "max_new_tokens": 5, "nested": {"password": "p"}})
    assert out == {"wandb_api_key": "***", "hub_token": "***", "max_new_tokens": 5, "nested": {"password": "***"}}


def test_config_hash_ignores_run_bookkeeping_but_not_settings():
    a = {"run": {"name": "a"}, "lora": {"r": 4}}
    assert config_hash(a) == config_hash({"run": {"name": "b"}, "lora": {"r": 4}})
    assert config_hash(a) != config_hash({"run": {"name": "a"}, "lora": {"r": 8}})


def test_cli_misspelled_key_exits_2_with_one_paragraph_and_no_traceback(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model:\n  name_or_path: builtin:tiny-llama\nlora:\n  rank: 8\n")
    proc = subprocess.run(
        [sys.executable, "-m", "align", "sft", str(recipe), "--dry-run"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "'lora.rank'" in proc.stderr and "Valid keys in lora:" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_dry_run_prints_resolved_config_with_overrides(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "align",
            "sft",
            "recipes/tiny/sft.yaml",
            "--dry-run",
            "training.learning_rate=5e-5",
            "lora.r=4",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import yaml

    cfg = yaml.safe_load(proc.stdout)
    assert cfg["training"]["learning_rate"] == 5e-5 and cfg["lora"]["r"] == 4
    assert cfg["training"]["output_dir"].endswith("sft/checkpoints")


def test_cli_results_go_to_the_current_stdout_after_a_command_returns(capsys):
    import io
    import sys

    from align import cli

    assert cli.main(["models", "list", "--json"]) == 0
    capsys.readouterr()
    buf = io.StringIO()
    old, sys.stdout = sys.stdout, buf
    try:
        cli.emit("later")  # e.g. the pipeline's data stage calling a data command's function
    finally:
        sys.stdout = old
    assert buf.getvalue() == "later\n"


def test_secret_looking_overrides_are_masked_for_records_of_the_command_line():
    from align.config import mask_secret_overrides

    words = ["sft", "r.yaml", "training.hub_token=hf_x", "run.api_key=k", "lora.r=8", "--dry-run",
             "training.model_init_kwargs={token: hf_y, dtype: float32}", "training.max_length=256",
             "training.eos_token_id=2"]  # fmt: skip
    masked = mask_secret_overrides(words)
    assert masked[:6] == ["sft", "r.yaml", "training.hub_token=***", "run.api_key=***", "lora.r=8", "--dry-run"]
    assert masked[6] == 'training.model_init_kwargs={"token": "***", "dtype": "float32"}'
    assert masked[7:] == ["training.max_length=256", "training.eos_token_id=2"]
