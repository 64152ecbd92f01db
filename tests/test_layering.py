"""The library layer: ``fedmllm/`` imports neither Flower nor Ray, nor the app layers above it.

``clients/`` (Flower ClientApp), ``server/`` (ServerApp, strategies) and ``simulations/`` (entry
points, CLI) depend on the library, never the other way round. Checked twice: statically (an AST
scan of every import statement and every literal ``importlib.import_module`` / ``__import__``
name in ``fedmllm/``) and dynamically (a fresh interpreter imports every ``fedmllm`` module and
must end with neither ``flwr`` nor ``ray`` loaded).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "fedmllm"
FORBIDDEN = ("flwr", "ray", "server", "clients", "simulations")


def _forbidden(module: str | None) -> bool:
    return bool(module) and module.split(".")[0] in FORBIDDEN


def _imported_names(tree: ast.AST):
    """(line, absolute module name) of every import in ``tree``, literal dynamic ones included."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def test_scanner_sees_every_import_form():
    src = ("import flwr\nimport ray.data as rd\nfrom server.strategies import X\nfrom . import sibling\n"
           "import importlib\nimportlib.import_module('clients.app')\n__import__('simulations.cli')\n"
           "from fedmllm.config import Config\nimport torch\n")
    found = [(line, name) for line, name in _imported_names(ast.parse(src)) if _forbidden(name)]
    assert found == [(1, "flwr"), (2, "ray.data"), (3, "server.strategies"), (6, "clients.app"),
                     (7, "simulations.cli")]
    assert not _forbidden("rayon") and not _forbidden("servers") and not _forbidden(None)


def test_library_sources_import_no_flower_ray_or_app_layer():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) > 50  # the scan really walks the library
    offending = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        offending += [f"{path.relative_to(ROOT)}:{line}: {name}"
                      for line, name in _imported_names(tree) if _forbidden(name)]
    assert not offending, "fedmllm/ must not import flwr, ray, server, clients or simulations:\n" + \
        "\n".join(offending)


_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import fedmllm
errors = {}
def onerror(name):
    errors[name] = repr(sys.exc_info()[1])
names = [m.name for m in pkgutil.walk_packages(fedmllm.__path__, "fedmllm.", onerror=onerror)]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        errors[name] = repr(e)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("flwr", "ray"))
print(json.dumps({"modules": names, "errors": errors, "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def imported_all() -> dict:
    """What a fresh interpreter reports after importing every ``fedmllm`` module."""
    proc = subprocess.run([sys.executable, "-c", _IMPORT_ALL], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["modules"]) > 50 and "fedmllm.config" in out["modules"]  # it really walked the tree
    return out


def test_importing_every_library_module_loads_neither_flower_nor_ray(imported_all):
    loaded = imported_all["loaded"]
    assert not loaded, f"importing fedmllm loaded {loaded[:10]} ({len(loaded)} modules)"


def test_every_library_module_imports(imported_all):
    # A module that fails to import hides its imports from the check above.
    assert not imported_all["errors"], f"fedmllm modules that fail to import: {imported_all['errors']}"
