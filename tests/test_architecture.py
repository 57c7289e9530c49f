"""The layer rules of the package, checked on the source itself (README: Architecture)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "curvprune"

#: folder or module -> curvprune subpackages/modules it must never import (at any depth).
FORBIDDEN = {
    "curvature": (
        "criteria",
        "pruning",
        "structured",
        "experiments",
        "cli",
        "data",
        "models",
        "training",
    ),
    "criteria": ("structured", "pruning", "experiments", "cli", "data", "models", "training"),
    "models": ("pruning", "curvature", "criteria", "experiments", "cli"),
    "structured": ("models", "experiments", "cli", "data", "training"),
    "pruning": ("structured", "experiments", "cli", "data", "models", "training"),
    "_core": (
        "curvature",
        "criteria",
        "pruning",
        "structured",
        "experiments",
        "cli",
        "data",
        "models",
        "training",
    ),
    "experiments": ("cli",),
}


def _sources():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported(path: Path) -> set[str]:
    """Every ``curvprune.X`` this file imports, top-level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "curvprune" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down_the_layers(path):
    layer = _layer(path)
    bad = sorted(_imported(path) & set(FORBIDDEN.get(layer, ())))
    assert not bad, f"{path.relative_to(PACKAGE)} ({layer}) imports {bad}"


def test_no_source_file_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long


def test_no_import_order_hacks():
    hacks = [str(p) for p in _sources() if "noqa: E402" in p.read_text()]
    assert not hacks


def _modules_loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {m.split(".")[0] for m in out}


@pytest.mark.parametrize(
    "code",
    [
        "import curvprune",
        "import contextlib, io\nfrom curvprune.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['list'])",
    ],
    ids=["import", "list"],
)
def test_import_and_list_load_no_heavy_optional_package(code):
    heavy = {
        "torch_pruning",
        "torchvision",
        "matplotlib",
        "sklearn",
        "scipy",
        "transformers",
        "timm",
    }
    assert not _modules_loaded(code) & heavy


def test_structured_names_load_on_first_use():
    loaded = _modules_loaded("import curvprune as cp\ncp.prune_channels")
    assert "torch_pruning" in loaded
