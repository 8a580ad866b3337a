"""The thin-CLI rule, checked: commands parse, call ``edgedeploy.api``, render.

Whatever a command does must be callable from Python, so the CLI modules may import only
``edgedeploy.api``, ``edgedeploy.errors`` and each other (type-only imports under
``if TYPE_CHECKING:`` aside). And ``import edgedeploy.api`` stays cheap: every command module
imports it at start-up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import edgedeploy.cli

CLI_DIR = Path(edgedeploy.cli.__file__).parent
ALLOWED = ("edgedeploy.api", "edgedeploy.errors")
HEAVY = ("onnx", "onnxruntime", "fabric", "matplotlib", "jinja2")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """Every node under ``node`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    out: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                out += [other, *_runtime_nodes(other)]
            continue
        out += [child, *_runtime_nodes(child)]
    return out


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, module) for every runtime import; ``from edgedeploy import x`` counts as
    ``edgedeploy.x`` (x is a submodule or an attribute of the package itself)."""
    found: list[tuple[int, str]] = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "edgedeploy":
                found += [(node.lineno, f"edgedeploy.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def allowed(module: str) -> bool:
    if module == "edgedeploy" or not module.startswith("edgedeploy."):
        return True
    if module == "edgedeploy.__version__":  # the package's version string, not a module
        return True
    return module in ALLOWED or module == "edgedeploy.cli" or module.startswith("edgedeploy.cli.")


CLI_MODULES = sorted(CLI_DIR.glob("*.py"))


@pytest.mark.parametrize("path", CLI_MODULES, ids=[p.name for p in CLI_MODULES])
def test_cli_modules_import_only_the_api_errors_and_the_cli(path: Path) -> None:
    bad = [f"{path.name}:{line}: {module}"
           for line, module in imported_modules(path.read_text())
           if not allowed(module)]
    assert not bad, "the CLI reaches past edgedeploy.api:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_imports_and_skips_type_checking_blocks() -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "from edgedeploy import zoo\n"
              "if TYPE_CHECKING:\n    from edgedeploy.schemas.target import Target\n"
              "def f():\n    from edgedeploy.deploy.status import TIMELINE_COLUMNS\n"
              "    import edgedeploy.planner\n")
    assert [m for _, m in imported_modules(source) if not allowed(m)] == [
        "edgedeploy.zoo", "edgedeploy.deploy.status", "edgedeploy.planner"]


def test_importing_the_api_stays_cheap() -> None:
    code = ("import sys, edgedeploy.api\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "", f"import edgedeploy.api loaded {result.stdout.strip()}"
