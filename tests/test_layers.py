"""Import layers: the foundation (fenlei.answers ...) imports nothing above it, and the design's top-level packages
stand on it alone: lightning_modules never imports datamodules, nor datamodules lightning_modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def imported_packages(path: Path) -> set[str]:
    """Top-level packages imported anywhere in ``path`` (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0] if not node.module.startswith("fenlei.") else node.module)
    return names


@pytest.mark.parametrize(("package", "forbidden"), [("lightning_modules", "datamodules"),
                                                    ("datamodules", "lightning_modules")])
def test_top_level_packages_do_not_import_each_other(package: str, forbidden: str) -> None:
    offenders = [str(path.relative_to(REPO_ROOT)) for path in sorted((REPO_ROOT / package).rglob("*.py"))
                 if forbidden in imported_packages(path)]
    assert offenders == []


def test_answer_format_is_pure_python_on_the_foundation() -> None:
    imports = imported_packages(REPO_ROOT / "fenlei" / "answers.py")
    assert imports <= {"__future__", "dataclasses", "json", "re", "typing", "fenlei.errors"}
