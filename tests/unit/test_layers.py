"""The layers contract (pyproject.toml, [tool.importlinter]) holds, so `python -m pytest -q` fails on a
back-reference: a library module importing the command layer, or a lower layer importing a higher one."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    assert LINT_IMPORTS.is_file(), "lint-imports is missing: install the dev extras (bash scripts/setup.sh)"
    # run from `cwd` so that `align` is that directory's package, whatever is installed in the environment
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_layers_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_back_reference_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "align", tmp_path / "align", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    records = tmp_path / "align" / "data" / "records.py"
    records.write_text(records.read_text() + "\nfrom align.commands.console import emit  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "align.data.records -> align.commands.console" in result.stdout
