"""The benchmarks stand on the library and the apps alone: none imports the test suite."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_a_bench_does_not_import_the_test_suite(path: Path) -> None:
    test_modules = {Path(p).stem for p in BENCH.parent.joinpath("tests").glob("*.py")}
    wrong = {m for m in imported_modules(path) if m.split(".")[0] in {"tests", *test_modules}}
    assert not wrong, f"{path.name} imports {sorted(wrong)}"
