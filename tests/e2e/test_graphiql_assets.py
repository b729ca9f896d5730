"""The committed GraphiQL assets are what tools/graphiql builds from its lockfile, byte for byte,
and a wheel of the project ships them (``pip install`` needs no Node.js)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from service.server.graphiql import ASSET_DIR

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "graphiql"


def digests(directory: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.iterdir())
        if path.is_file()
    }


def test_the_build_reproduces_the_committed_assets(tmp_path: Path) -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("rebuilding the GraphiQL assets needs Node.js 20+ and npm on PATH")
    work = tmp_path / "graphiql"
    work.mkdir()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        shutil.copy2(TOOLS / name, work / name)
    shutil.copytree(TOOLS / "src", work / "src")
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=work,
        check=True,
        timeout=150,
        stdout=subprocess.DEVNULL,
    )
    out = tmp_path / "out"
    subprocess.run(["node", "build.mjs", str(out)], cwd=work, check=True, timeout=60)
    assert digests(out) == digests(ASSET_DIR)


def test_the_lockfile_pins_what_the_issue_names() -> None:
    package = json.loads((TOOLS / "package.json").read_text())
    for section in ("dependencies", "devDependencies"):
        for name, version in package[section].items():
            assert version[0].isdigit(), f"{name} {version}: pin exact versions"
    assert {"graphiql", "react", "react-dom", "graphql", "graphql-ws"} <= set(
        package["dependencies"]
    )
    assert "esbuild" in package["devDependencies"]


def test_a_wheel_ships_the_assets(tmp_path: Path) -> None:
    """Build a wheel from a copy of the sources (the working tree stays untouched)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "service", source / "service", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(source),
        ],
        check=True,
        timeout=120,
    )
    [wheel] = (tmp_path / "dist").glob("graphql_service-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in digests(ASSET_DIR):
        assert f"service/server/graphiql/{name}" in names
