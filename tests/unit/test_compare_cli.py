"""``align compare``'s flags: one per CompareConfig setting, each reaching the comparison's config."""

from __future__ import annotations

import dataclasses

import pytest

from align import cli
from align.commands import compare as compare_command
from align.eval.compare_config import CompareConfig


def parse(*argv: str):
    return cli.build_parser().parse_args(["compare", *argv])


def test_every_compare_setting_is_a_flag():
    flags = {a.dest for a in cli.build_parser()._subparsers._group_actions[0].choices["compare"]._actions}
    settings = {f.name for f in dataclasses.fields(CompareConfig)} - {"model"}  # model: the pipeline's section
    assert settings <= flags, settings - flags


def test_given_flags_reach_the_config_and_the_rest_keep_its_defaults(monkeypatch):
    seen = {}

    def fake_run(cfg):
        seen["cfg"] = cfg
        return {"warnings": []}

    monkeypatch.setattr(compare_command, "run_compare", fake_run)
    args = parse("runs/a/sft", "runs/a/dpo", "--kl-max-prompts", "24", "--no-checks", "--names", "sft", "dpo",
                 "--top-p", "0.9", "--kl-along-answers", "-o", "out")  # fmt: skip
    assert compare_command.main(args) == 0
    cfg = seen["cfg"]
    assert cfg.checkpoints == ["runs/a/sft", "runs/a/dpo"] and cfg.output == "out"
    assert cfg.kl_max_prompts == 24 and cfg.checks is False and cfg.names == ["sft", "dpo"]
    assert cfg.top_p == pytest.approx(0.9) and cfg.kl_along_answers is True
    untouched = CompareConfig()
    for name in ("prompts", "max_new_tokens", "temperature", "kl_samples", "seed", "n_boot", "dtype", "batch_size"):
        assert getattr(cfg, name) == getattr(untouched, name), name


def test_a_number_flag_with_text_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        parse("runs/a/sft", "--kl-max-prompts", "many")
    assert e.value.code == 2 and "--kl-max-prompts" in capsys.readouterr().err
