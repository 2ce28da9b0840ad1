"""Running ``cli.py`` in a subprocess where the training stack cannot be imported: the check that infer and serve
stay torch-free."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

from tests.conftest import REPO_ROOT

HEAVY = ("torch", "lightning", "transformers", "scipy")  # reported if imported after all
BLOCKED = (*HEAVY, "pytorch_lightning")

# Makes any import of the heavy training stack fail inside the subprocess (scipy too: the service must not pay it).
BLOCKER = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in %r:
            raise ImportError('blocked import of ' + name)
        return None
sys.meta_path.insert(0, _Block())
sys.path.insert(0, %r)
"""


def torch_free_cli(args: Sequence[str]) -> str:
    """Python source that runs ``cli.py ARGS`` with the heavy imports blocked (for ``python -c``)."""
    return BLOCKER % (set(BLOCKED), str(REPO_ROOT)) + f"""
import runpy
sys.argv = ['cli.py', *{list(args)!r}]
try:
    runpy.run_path({str(REPO_ROOT / 'cli.py')!r}, run_name='__main__')
finally:
    print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def run_torch_free(args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cli.py ARGS`` to the end with the heavy imports blocked; asserts it exited 0 having imported none."""
    proc = subprocess.run([sys.executable, "-c", torch_free_cli(args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "HEAVY []" in proc.stdout
    return proc
