"""The twin imports no backend (DESIGN.md, decision 11).

The resource graph's types (:mod:`infragym.graph`) and the layer-update bookkeeping
(:mod:`infragym.updates`) sit below both; the backends re-export them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import infragym.twin

TWIN_DIR = Path(infragym.twin.__file__).parent


def _imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (any depth)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the twin package
                base = "infragym.twin" if node.level == 1 else "infragym"
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def test_no_twin_module_imports_a_backend():
    modules = sorted(TWIN_DIR.glob("*.py"))
    assert len(modules) >= 5
    offending = {
        path.name: [
            m
            for m in _imported_modules(path)
            if m == "infragym.backends" or m.startswith("infragym.backends.")
        ]
        for path in modules
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_importing_the_twin_loads_no_backend():
    code = (
        "import sys, infragym.twin.twin; "
        "print(sorted(m for m in sys.modules if m.startswith('infragym.backends')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_backends_re_export_the_graph_types():
    from infragym import graph, updates
    from infragym.backends import base
    from infragym.backends import updates as backend_updates

    for name in ("Change", "LayerSpec", "ResourceRecord"):
        assert getattr(base, name) is getattr(graph, name)
    for name in ("LayerQueue", "Update"):
        assert getattr(backend_updates, name) is getattr(updates, name)
