"""Imports flow one way through the data flow: a package imports only packages before it.

Function-level imports count too (they are how circles hide). The device runtime imports nothing
of the host; twins (simulated boards) are never imported by the cost model or the planner.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "toolchain" / "edgedeploy"
#: The data flow, first to last (README "Layout"). The zoo builds its models from onnx alone
#: (it needs only errors), so any stage may name a zoo model, e.g. in a missing-file hint.
ORDER = ["runtime", "errors", "resources", "zoo", "schemas", "boards", "importers", "execute",
         "costmodel", "testing", "twins", "planner", "generator", "deploy", "refine",
         "benchmarks", "api", "cli"]


def _unit(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "edgedeploy":
                continue
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names
                    if a.name.startswith("edgedeploy.")}
    return {u for u in out if u in ORDER}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _unit(p) in ORDER)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_packages_before_its_own(path: Path) -> None:
    own = ORDER.index(_unit(path))
    later = sorted(u for u in _imports(path) if ORDER.index(u) > own)
    assert not later, f"{path.relative_to(PACKAGE)} imports {later}, which come after it"


def test_the_cost_model_and_planner_never_see_the_twins() -> None:
    for unit in ("costmodel", "planner"):
        for path in (PACKAGE / unit).rglob("*.py"):
            assert "twins" not in _imports(path), path
