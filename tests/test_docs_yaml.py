"""Every YAML snippet in the docs is valid YAML, and every sweep file among them passes the sweep runner's checks.

A W&B sweep ``command:`` written in flow form (``[${env}, ${interpreter}, ...]``) is not YAML at all (``{`` opens a
mapping inside the flow sequence), and a user copying it gets a parse error from ``wandb sweep``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from fenlei.ops.sweep_config import load_sweep
from tests.conftest import REPO_ROOT

FENCE = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
DOCS = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")])


def yaml_snippets() -> list[tuple[str, str]]:
    """``(file:line, text)`` of every fenced yaml block."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append((f"{path.relative_to(REPO_ROOT)}:{line}", match.group(1)))
    return found


SNIPPETS = yaml_snippets()


def test_the_docs_have_yaml_snippets() -> None:
    assert len(SNIPPETS) >= 4  # the fence pattern still finds them (README and docs/experiment_ops.md have some)


@pytest.mark.parametrize(("where", "text"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_every_docs_yaml_snippet_loads(where: str, text: str, tmp_path: Path) -> None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        pytest.fail(f"{where}: invalid YAML: {err}")
    if isinstance(data, dict) and {"program", "command", "parameters"} <= set(data):
        path = tmp_path / "sweep.yaml"
        path.write_text(text, encoding="utf-8")
        spec = load_sweep(path)  # a sweep snippet must also be one the runner accepts
        assert spec.base_args[0] == "fit", where
