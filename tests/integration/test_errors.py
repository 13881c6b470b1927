"""One error path: every error a user can cause prints one paragraph and exits 2, without a traceback (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def assert_one_paragraph(err: str, *needles: str) -> None:
    assert "Traceback" not in err, err
    # Progress bars redraw with carriage returns; the message is the text from "align <command>: error:" on.
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("align ")]
    assert lines, err
    message = lines[-1]
    for n in needles:
        assert n in message, (n, message)


def test_every_user_error_derives_from_one_base_and_stays_importable_where_it_was():
    from align.agreement import AgreementGateError
    from align.config import ConfigError
    from align.data.spec import DataError
    from align.errors import UserError
    from align.models import ModelError
    from align.stages.common import NoGradientError, NonFiniteError
    from align.stages.dpo import ReferenceCheckError
    from align.templates import TemplateError

    for cls in (
        ConfigError,
        DataError,
        AgreementGateError,
        TemplateError,
        ModelError,
        NonFiniteError,
        NoGradientError,
        ReferenceCheckError,
    ):
        assert issubclass(cls, UserError), cls
    # The built-in bases they had keep working for code that caught those.
    assert issubclass(ConfigError, ValueError) and issubclass(NonFiniteError, RuntimeError)


def test_cli_double_bos_template_is_one_paragraph_exit_2(tmp_path, tiny_model_dir, capsys):
    tpl = tmp_path / "double_bos.jinja"
    tpl.write_text(
        "{{ bos_token }}{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    code, err = run_cli(capsys, "dpo", TINY / "dpo.yaml", f"run.root={tmp_path}", f"template.chat_template={tpl}")
    assert code == 2
    assert_one_paragraph(err, "two BOS tokens", "add_special_tokens=False")


def test_cli_unknown_template_name_is_one_paragraph_exit_2(tmp_path, tiny_model_dir, capsys):
    code, err = run_cli(capsys, "dpo", TINY / "dpo.yaml", f"run.root={tmp_path}", "template.chat_template=alpaca-ish")
    assert code == 2
    assert_one_paragraph(err, "alpaca-ish", "chatml")


def test_cli_diverging_learning_rate_is_one_paragraph_exit_2(tmp_path, tiny_model_dir, capsys):
    code, err = run_cli(capsys, "sft", TINY / "sft.yaml", f"run.root={tmp_path}", "training.learning_rate=1e30")
    assert code == 2
    assert_one_paragraph(err, "non-finite", "Lower the learning rate")


def test_cli_internal_errors_keep_their_traceback(tmp_path, monkeypatch):
    import align.cli

    def boom(stage, args):
        raise KeyError("internal")

    monkeypatch.setattr(align.cli, "run_stage", boom)
    with pytest.raises(KeyError):
        main(["sft", str(TINY / "sft.yaml")])


def test_cli_align_debug_shows_the_traceback_of_a_user_error(tmp_path, tiny_model_dir, monkeypatch):
    from align.templates import TemplateError

    monkeypatch.setenv("ALIGN_DEBUG", "1")
    with pytest.raises(TemplateError):
        main(["dpo", str(TINY / "dpo.yaml"), f"run.root={tmp_path}", "template.chat_template=alpaca-ish"])


BAD_JSONL = (
    b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
    b'{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}\n'  # latin-1, not UTF-8
)
BAD_CSV = b"prompt,chosen,rejected\na,b,c\nd,e,f\ncaf\xe9,g,h\n"


@pytest.mark.parametrize("action", ["validate", "inspect"])
def test_cli_bad_utf8_jsonl_names_file_and_line(action, tmp_path, capsys):
    f = tmp_path / "prefs.jsonl"
    f.write_bytes(BAD_JSONL)
    code, err = run_cli(capsys, "data", action, f)
    assert code == 2
    assert_one_paragraph(err, str(f), "line 2", "UTF-8")


def test_cli_bad_utf8_json_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "prefs.json"
    f.write_bytes(b'[\n {"prompt": "a", "chosen": "b", "rejected": "c"},\n {"prompt": "\xff"}\n]\n')
    code, err = run_cli(capsys, "data", "validate", f)
    assert code == 2
    assert_one_paragraph(err, str(f), "line 3", "UTF-8")


def test_cli_bad_utf8_csv_names_file_and_row(tmp_path, capsys):
    f = tmp_path / "prefs.csv"
    f.write_bytes(BAD_CSV)
    code, err = run_cli(capsys, "data", "validate", f)
    assert code == 2
    assert_one_paragraph(err, str(f), "row 4", "UTF-8")


def test_cli_bad_utf8_in_a_stage_recipe_is_one_paragraph(tmp_path, tiny_model_dir, capsys):
    f = tmp_path / "prefs.jsonl"
    f.write_bytes(BAD_JSONL)
    code, err = run_cli(
        capsys, "dpo", TINY / "dpo.yaml", f"run.root={tmp_path}", f"data.sources=[{{path: {f}}}]", "agreement=null"
    )
    assert code == 2
    assert_one_paragraph(err, "line 2", "UTF-8")


def test_cli_unreadable_file_is_explained(tmp_path, capsys, monkeypatch):
    import align.cli

    def denied(stage, args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "secret.yaml"))

    monkeypatch.setattr(align.cli, "run_stage", denied)
    code, err = run_cli(capsys, "sft", TINY / "sft.yaml")
    assert code == 2
    assert_one_paragraph(err, "secret.yaml", "Permission denied")


def test_cli_wandb_failure_is_explained_not_a_wandb_traceback(tmp_path, capsys, monkeypatch):
    import wandb

    import align.cli

    def rejected(stage, args):
        raise wandb.errors.AuthenticationError("API key is invalid")

    monkeypatch.setattr(align.cli, "run_stage", rejected)
    code, err = run_cli(capsys, "sft", TINY / "sft.yaml")
    assert code == 2
    assert_one_paragraph(err, "wandb failed", "API key is invalid", "report_to")


def test_cli_hub_model_not_cached_is_explained(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_cli(
        capsys, "sft", TINY / "sft.yaml", f"run.root={tmp_path}", "model.name_or_path=nobody/not-a-cached-model"
    )
    assert code == 2
    assert_one_paragraph(err, "nobody/not-a-cached-model", "cache")


@pytest.mark.parametrize("rank,lines", [("0", 1), ("1", 0)])
def test_stage_done_line_is_printed_by_the_main_process_only(rank, lines, tmp_path, capsys, monkeypatch):
    import align.stages.sft as sft

    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(sft, "run", lambda recipe: tmp_path / "tiny" / "sft")
    code, err = run_cli(capsys, "sft", TINY / "sft.yaml", f"run.root={tmp_path}")
    assert code == 0 and err.count("[align] sft done:") == lines
