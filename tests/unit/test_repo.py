"""What a newcomer relies on: the README's commands, CI running the same test command, recipes that load."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    head = "\n".join(text.splitlines()[:20])
    return re.findall(r"```bash\n(.+?)\n```", head)


def test_readme_opens_with_exactly_two_commands_install_and_run_then_install_and_test():
    cmds = _readme_commands()
    assert len(cmds) == 2
    assert cmds[0].startswith("bash scripts/setup.sh && ") and "align" in cmds[0]
    assert cmds[1].startswith("bash scripts/setup.sh && ") and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci


def _stage_recipes():
    for p in sorted((ROOT / "recipes").rglob("*.yaml")):
        if "accelerate" in p.parts:
            continue
        yield p


@pytest.mark.parametrize("path", list(_stage_recipes()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_starts_with_its_command_and_loads(path):
    import importlib

    from align.cli import STAGES
    from align.config import load_recipe

    first = path.read_text().splitlines()[0]
    m = re.match(r"# (?:accelerate launch .*-m )?align (\w+) (\S+)", first)
    assert m, f"{path} must start with '# align <stage> {path.relative_to(ROOT)}'"
    stage, ref = m.groups()
    assert ref == str(path.relative_to(ROOT))
    if stage in STAGES:
        module = importlib.import_module(STAGES[stage][0])
        load_recipe(module.Recipe, path)
