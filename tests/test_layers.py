"""The package layering, read from the source: every import of every installed module (those inside functions and
``if TYPE_CHECKING:`` blocks too, and ``importlib.import_module("literal")``) is checked against these rules.

    foundation      fenlei/{__init__,io,errors,cpu,numerics,metrics,plotting,predictions,typed_cli,answers,
                    text_limits}.py,
                    fenlei/pretrained/
                    imports nothing else of fenlei's packages
    middle          datamodules/, lightning_modules/, losses/, fenlei/calibration/
                    import only the foundation and each other, except: lightning_modules -/-> datamodules,
                    datamodules -/-> lightning_modules, losses imports no other middle package;
                    never fenlei.training, deploy, ops, probe, data or serving
    serving         fenlei/serving/ imports only the foundation, and (with the foundation modules it reaches) no
                    third-party module but what ``pip install "fenlei[serve]"`` installs (no torch, lightning,
                    transformers, ...): that install is torch-free (tests/serving/test_install_serve.py runs it)
    all             the import graph of the sub-packages (fenlei.X, datamodules, lightning_modules, losses; each
                    top-level foundation module is a node of its own) is acyclic

``fenlei/commands.py`` and ``fenlei/__main__.py`` (the entry point: it reaches every command through importlib
strings) are not checked. A failure lists each offending import as ``file:line: import``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import tomllib

from tests.conftest import REPO_ROOT

ROOTS = ("fenlei", "datamodules", "lightning_modules", "losses")
ENTRY_POINTS = {"fenlei.commands", "fenlei.__main__"}
FOUNDATION_MODULES = {f"fenlei.{name}" for name in ("io", "errors", "cpu", "numerics", "metrics", "plotting",
                                                    "predictions", "typed_cli", "answers", "text_limits")} | {"fenlei"}
FOUNDATION_PACKAGES = {"fenlei.pretrained"}
MIDDLE = {"datamodules", "lightning_modules", "losses", "fenlei.calibration"}
MIDDLE_FORBIDDEN = {("lightning_modules", "datamodules"), ("datamodules", "lightning_modules"),
                    ("losses", "datamodules"), ("losses", "lightning_modules"), ("losses", "fenlei.calibration")}
# Import names of distributions whose import name differs from the distribution name (for the serve extra check).
IMPORT_NAMES = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pillow": "PIL"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. fenlei.serving.infer
    target: str  # imported module, e.g. fenlei.serving.predictor or numpy.linalg
    where: str  # file:line
    optional: bool  # inside ``try: ... except ImportError`` (a soft dependency)

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {module_name(p): p for root in ROOTS for p in sorted((REPO_ROOT / root).rglob("*.py"))}
    return {name: path for name, path in found.items() if name not in ENTRY_POINTS}


def is_package(name: str) -> bool:
    path = modules().get(name)
    return (path is not None and path.name == "__init__.py") or any(m.startswith(name + ".") for m in modules())


def _guards_import_error(handler: ast.ExceptHandler) -> bool:
    names = [handler.type] if not isinstance(handler.type, ast.Tuple) else list(handler.type.elts)
    return handler.type is None or any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError")
                                       for n in names)


def _resolve_relative(source: str, package: bool, level: int, module: str | None) -> str:
    base = source.split(".") if package else source.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(REPO_ROOT)
    package = path.name == "__init__.py"

    def visit(node: ast.AST, optional: bool) -> Iterator[Import]:
        where = f"{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, where, optional)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve_relative(name, package, node.level, node.module) if node.level else str(node.module)
            for alias in node.names:  # ``from fenlei import pretrained`` imports the module fenlei.pretrained
                sub = f"{target}.{alias.name}"
                yield Import(name, sub if sub in modules() or is_package(sub) else target, where, optional)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield Import(name, node.args[0].value, where, optional)
        if isinstance(node, ast.Try):
            soft = optional or any(_guards_import_error(h) for h in node.handlers)
            for child in node.body:
                yield from visit(child, soft)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from visit(child, optional)
            return
        for child in ast.iter_child_nodes(node):
            yield from visit(child, optional)

    yield from visit(tree, False)


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(imp for name, path in modules().items() for imp in imports_of(name, path))


def is_internal(target: str) -> bool:
    return target.split(".")[0] in ROOTS


def node(module: str) -> str:
    """The node of ``module`` in the sub-package graph: fenlei.X for a sub-package, else the top-level name."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "fenlei" else parts[0]


def layer(module: str) -> str:
    n = node(module)
    if n in FOUNDATION_MODULES or n in FOUNDATION_PACKAGES:
        return "foundation"
    return n


def _fail(rule: str, offending: list[Import]) -> str:
    return f"{rule}: {len(offending)} offending import(s)\n" + "\n".join(f"  {imp}" for imp in offending)


def test_every_module_is_found_and_parsed() -> None:
    names = set(modules())
    assert {"fenlei.serving.serve", "fenlei.io", "fenlei.pretrained", "datamodules", "losses"} <= names
    assert all_imports()  # parses every module
    assert not names & ENTRY_POINTS


def test_foundation_imports_nothing_else_of_fenlei() -> None:
    offending = [imp for imp in all_imports() if layer(imp.source) == "foundation" and is_internal(imp.target)
                 and layer(imp.target) != "foundation"]
    assert not offending, _fail("the foundation imports only the foundation", offending)


def test_middle_layer_imports_only_foundation_and_allowed_peers() -> None:
    offending = []
    for imp in all_imports():
        src, dst = layer(imp.source), layer(imp.target)
        if src not in MIDDLE or not is_internal(imp.target) or dst in ("foundation", src):
            continue
        if dst not in MIDDLE or (src, dst) in MIDDLE_FORBIDDEN:
            offending.append(imp)
    assert not offending, _fail(
        "datamodules/, lightning_modules/, losses/ and fenlei/calibration/ import only the foundation and each other "
        "(lightning_modules may import losses; not lightning_modules<->datamodules; losses imports no peer; never "
        "fenlei.training/deploy/ops/probe/data/serving)", offending)


def serve_extra_imports() -> set[str]:
    """Top-level import names of the base dependencies and the ``serve`` extra declared in pyproject.toml."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = set()
    for requirement in [*project.get("dependencies", []), *project["optional-dependencies"]["serve"]]:
        dist = requirement.split(";")[0]
        for stop in "[<>=!~ ":
            dist = dist.split(stop)[0]
        dist = dist.strip().lower()
        names.add(IMPORT_NAMES.get(dist, dist.replace("-", "_")))
    return names


def test_serving_imports_only_the_foundation_and_the_serve_extra() -> None:
    internal = [imp for imp in all_imports() if layer(imp.source) == "fenlei.serving" and is_internal(imp.target)
                and layer(imp.target) not in ("foundation", "fenlei.serving")]
    assert not internal, _fail("fenlei/serving imports only the foundation", internal)
    # Third-party imports of serving and of every foundation module it reaches (transitively).
    reached, todo = set(), [m for m in modules() if layer(m) == "fenlei.serving"]
    by_source = defaultdict(list)
    for imp in all_imports():
        by_source[imp.source].append(imp)
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        for imp in by_source[module]:
            if is_internal(imp.target):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                parts = imp.target.split(".")
                todo += [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules()]
    allowed = serve_extra_imports() | set(sys.stdlib_module_names)
    assert {"onnxruntime", "tokenizers", "numpy", "fastapi", "uvicorn", "jsonargparse"} <= allowed
    third_party = list(dict.fromkeys(  # one entry per file:line and module
        imp for module in sorted(reached) for imp in by_source[module]
        if not is_internal(imp.target) and not imp.optional and imp.target.split(".")[0] not in allowed))
    others = sorted(m for m in reached if layer(m) != "fenlei.serving")
    assert not third_party, _fail(
        f"fenlei/serving and the modules it reaches ({', '.join(others)}) import only the stdlib, the base "
        "dependencies and the serve extra (optional imports under `except ImportError` aside)", third_party)


def test_subpackage_graph_is_acyclic() -> None:
    edges: dict[str, dict[str, Import]] = defaultdict(dict)
    for imp in all_imports():
        if is_internal(imp.target) and node(imp.source) != node(imp.target):
            edges[node(imp.source)].setdefault(node(imp.target), imp)
    cycles, state, stack = [], {}, []

    def dfs(n: str) -> None:
        state[n] = "open"
        stack.append(n)
        for m in sorted(edges.get(n, {})):
            if state.get(m) == "open":
                loop = [*stack[stack.index(m):], m]
                cycles.append(" -> ".join(loop) + "\n" + "\n".join(
                    f"    {edges[a][b]}" for a, b in zip(loop, loop[1:], strict=False)))
            elif m not in state:
                dfs(m)
        stack.pop()
        state[n] = "done"

    for n in sorted(edges):
        if n not in state:
            dfs(n)
    assert not cycles, "the sub-package import graph has cycles:\n" + "\n".join(f"  {c}" for c in cycles)
