"""What `pip install .` and the image ship: every package of the product, not only what the tests import from
the source tree (an editable install or the repo root on `sys.path` would hide a missing one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = {"tests", "bench"}


def product_packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")} - NOT_SHIPPED


def test_pyproject_installs_every_product_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert (
        set(config["tool"]["setuptools"]["packages"])
        == product_packages()
        == {
            "agents",
            "connectors",
            "schemas",
            "streams",
        }
    )


def test_the_image_copies_every_product_package() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and len(line.split()) == 3}
    assert product_packages() <= copied
