"""What `pip install .` and the image ship: one top-level package, `revpulse`, with every subpackage and the
JSON schemas (an editable install or the repo root on `sys.path` would hide a missing one)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath

from tests.support.paths import ROOT


def source_packages() -> set[str]:
    """Every package in the source tree, by the name it is installed under."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in config["package-dir"].items():
        base = ROOT / folder
        found |= {".".join([package, *init.parent.relative_to(base).parts]) for init in base.rglob("__init__.py")}
    return found


def test_the_wheel_holds_one_top_level_package_with_every_subpackage_and_the_schemas(tmp_path: Path) -> None:
    # Built from a copy: setuptools keeps build/ in the tree it builds, and a stale build/lib would add modules
    # that no longer exist to the wheel.
    source = tmp_path / "source"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "data", "__pycache__", "*.egg-info")
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("revpulse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"revpulse"}
    packages = {name.rsplit("/", 1)[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    assert packages == source_packages()
    schemas = {Path(n).name for n in names if n.startswith("revpulse/schemas/") and n.endswith(".json")}
    assert schemas == {p.name for p in (ROOT / "schemas").rglob("*.json")}
    board = {Path(n).name for n in names if n.startswith("revpulse/agents/board/")}
    assert board == {p.name for p in (ROOT / "agents" / "board").iterdir()}, "the board's page ships"


def test_the_image_copies_every_source_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and len(line.split()) == 3}
    assert {folder.split("/")[0] for folder in config["package-dir"].values()} <= copied


def _final_stage(lines: list[str]) -> tuple[str, dict[str, str]]:
    """The image's last WORKDIR and its ENV values (continuation lines joined)."""
    text = "\n".join(lines).replace("\\\n", " ")
    workdir, env = "/", {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "WORKDIR":
            workdir = words[1]
        elif words[0] == "ENV":
            env |= dict(word.split("=", 1) for word in words[1:])
    return workdir, env


def test_the_image_does_not_run_in_its_data_volume() -> None:
    """Issue 14 item 5: settings read a `.env` from the working directory, so it must not be the data volume (where
    anything that can write the volume could leave one); the web port is reachable from outside the container."""
    workdir, env = _final_stage((ROOT / "Dockerfile").read_text().splitlines())
    data_dir = PurePosixPath(env["REVPULSE_DATA_DIR"])
    assert not PurePosixPath(workdir).is_relative_to(data_dir), (workdir, data_dir)
    assert env["REVPULSE_WEB_HOST"] == "0.0.0.0"
