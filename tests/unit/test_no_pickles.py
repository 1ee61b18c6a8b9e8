"""No code of the product can turn bytes into objects that run code: no pickle, marshal or their kin, imported in
any way. State read from Kafka or the data dir is data (`revpulse.streams.state_codec`); this keeps it so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.paths import ROOT

# What the product is: every folder of the `revpulse` package (pyproject's package-dir).
PRODUCT = ("streams", "agents", "schemas", "connectors", "src/revpulse")
# Modules whose loads can build arbitrary objects or run code.
BANNED = frozenset({"pickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle", "copyreg"})


def product_files() -> list[Path]:
    return sorted(path for folder in PRODUCT for path in (ROOT / folder).rglob("*.py"))


def banned_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every banned module `path` imports: statements, `__import__` and `import_module`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in ("__import__", "import_module") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [(node.lineno, name) for name in names if name.split(".")[0] in BANNED]
    return sorted(found)


def test_the_product_is_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in product_files()}
    assert {"agents/snapshots.py", "streams/state_codec.py", "streams/engine.py", "src/revpulse/cli.py"} <= names


@pytest.mark.parametrize("path", product_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_product_module_imports_pickle_or_marshal(path: Path) -> None:
    assert banned_imports(path) == []


def test_the_check_sees_every_way_of_importing(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nimport marshal as m\nfrom _pickle import loads\nimport importlib\n"
        "importlib.import_module('dill')\n__import__('shelve')\nimport json\n"
    )
    assert banned_imports(sample) == [(1, "pickle"), (2, "marshal"), (3, "_pickle"), (5, "dill"), (6, "shelve")]
