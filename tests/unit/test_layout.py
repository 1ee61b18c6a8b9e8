"""The layout CI keeps: one import root, and layers whose imports flow one way.

Each layer is imported in a fresh interpreter in which the modules it must not reach cannot be imported, so an
import through any path (a helper, a re-export, a third-party package) fails the check, not only a direct one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT

BARE_ROOTS = {"streams", "agents", "schemas", "connectors"}
IO_LIBRARIES = ("faust", "mode", "aiokafka", "aiohttp")
UPPER_LAYERS = ("revpulse.agents", "revpulse.local", "revpulse.cli", "revpulse.replay")

# layer (packages or modules) -> what it must never import, directly or not
LAYERS: dict[str, tuple[str, ...]] = {
    "revpulse.schemas": (*IO_LIBRARIES, "prometheus_client", "revpulse.streams", "revpulse.connectors", *UPPER_LAYERS),
    "revpulse.settings": (*IO_LIBRARIES, "prometheus_client", "revpulse.streams", "revpulse.connectors", *UPPER_LAYERS),
    "revpulse.topics": (*IO_LIBRARIES, "prometheus_client", "revpulse.streams", "revpulse.connectors", *UPPER_LAYERS),
    "revpulse.streams": (*IO_LIBRARIES, "revpulse.connectors", "revpulse.synth", *UPPER_LAYERS),
    "revpulse.connectors": (*IO_LIBRARIES, "prometheus_client", "revpulse.streams", "revpulse.synth", *UPPER_LAYERS),
    "revpulse.synth": (*IO_LIBRARIES, "prometheus_client", "revpulse.streams", "revpulse.connectors", *UPPER_LAYERS),
    "revpulse.agents": ("revpulse.local", "revpulse.synth", "revpulse.cli", "revpulse.replay"),
}

_IMPORT_LAYER = """
import importlib, importlib.abc, pkgutil, sys
layer, forbidden = sys.argv[1], tuple(sys.argv[2:])

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == f or name.startswith(f + ".") for f in forbidden):
            raise ImportError(f"{layer} must not import {name}")
        return None

sys.meta_path.insert(0, Block())
module = importlib.import_module(layer)
if hasattr(module, "__path__"):
    for info in pkgutil.walk_packages(module.__path__, layer + "."):
        importlib.import_module(info.name)
"""


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_LAYER, layer, *LAYERS[layer]],
        cwd="/",  # not the repository root, where the folders would be importable under their bare names
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]


def python_files() -> list[Path]:
    skip = {".venv", ".git", "build", "node_modules"}
    return [path for path in ROOT.rglob("*.py") if not skip & set(path.relative_to(ROOT).parts)]


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


# folder -> its layer, for the static check: an import inside a function escapes the import-time one
FOLDERS = {"schemas": "revpulse.schemas", "streams": "revpulse.streams", "connectors": "revpulse.connectors"}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("folder", sorted(FOLDERS))
def test_no_module_of_a_pure_layer_imports_above_it_anywhere_in_its_code(folder: str) -> None:
    forbidden = LAYERS[FOLDERS[folder]]
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        for path in (ROOT / folder).rglob("*.py")
    }
    assert {name: modules for name, modules in offenders.items() if modules} == {}


def test_nothing_imports_a_layer_by_its_bare_folder_name() -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & BARE_ROOTS) for p in python_files()}
    assert {path: roots for path, roots in offenders.items() if roots} == {}


def test_no_module_name_is_repeated_across_streams_and_agents() -> None:
    names = {layer: {p.stem for p in (ROOT / layer).glob("*.py")} - {"__init__"} for layer in ("streams", "agents")}
    assert names["streams"] & names["agents"] == set()


def test_no_folder_at_the_root_shadows_the_installed_package() -> None:
    assert not (ROOT / "revpulse").exists()
