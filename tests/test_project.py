"""Project-level contracts: CI runs exactly the README's test command; the CLI stays thin and lazy."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", quickstart, flags=re.S)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one() -> None:
    commands = readme_commands()
    assert len(commands) == 2
    main_job, test_job = commands
    assert main_job.startswith("bash scripts/setup_env.sh && ") and "cli.py fit --config configs/quickstart.yaml" in main_job
    assert test_job.startswith("bash scripts/setup_env.sh && ") and "pytest" in test_job
    ci_lines = [line for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert test_job in ci_lines


def test_cli_module_imports_nothing_heavy() -> None:
    """``cli.py`` itself must not import torch/lightning/transformers: subcommands import what they use."""
    code = "import sys; sys.path.insert(0, '.'); import cli; print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
