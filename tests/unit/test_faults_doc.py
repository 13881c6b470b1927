"""docs/faults.md: every row of the fault matrix names tests, and every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def rows() -> list[tuple[str, str]]:
    out = []
    for line in (ROOT / "docs" / "faults.md").read_text().splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|", line)
        if m:
            out.append((m.group(1), line))
    return out


def test_fault_matrix_has_the_catalogue_rows_one_to_twenty_in_order_and_more():
    numbers = [int(n) for n, _ in rows()]
    assert numbers[:20] == list(range(1, 21)) and len(numbers) > 20
    assert numbers == list(range(1, len(numbers) + 1))


def test_every_row_names_a_test_and_every_named_test_exists():
    defined: dict[str, set[str]] = {}
    for number, line in rows():
        refs = REF.findall(line)
        assert refs, f"row {number} names no test"
        for path, name in refs:
            if path not in defined:
                file = ROOT / path
                assert file.is_file(), f"row {number}: {path} does not exist"
                tree = ast.parse(file.read_text())
                defined[path] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert name in defined[path], f"row {number}: {path}::{name} does not exist"
