"""Generation and scoring stand apart: neither package imports the other, so a miner never
loads a scorer and a validator never loads a backend; what both use lives at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import chorus

ROOT = Path(chorus.__file__).parent


def imported(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("package", "other"), [("generation", "scoring"), ("scoring", "generation")]
)
def test_generation_and_scoring_do_not_import_each_other(package: str, other: str) -> None:
    crossing = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported(path)
        if name == f"chorus.{other}" or name.startswith(f"chorus.{other}.")
    }
    assert not crossing
