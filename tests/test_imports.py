"""Imports point one way: the core contract imports no one, the station is imported by nothing.

Reads every module of the ``flowedge`` package as source (no import needed, so the test
also covers modules whose dependencies are absent here) and checks each ``import`` of a
flowedge module, at any depth (also inside functions), against the layer order below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Each package may import itself and the packages to its left, never one to its right.
LAYERS = ("core", "modalities", "flows", "backends", "calibration", "export", "edge", "top")
FOLDERS = {
    "core": REPO / "flowedge" / "core",
    "modalities": REPO / "flowedge" / "modalities",
    "backends": REPO / "flowedge" / "backends",
    "flows": REPO / "flows",
    "calibration": REPO / "calibration",
    "export": REPO / "export",
    "edge": REPO / "edge",
}


def layer_of_module(name: str) -> str | None:
    """The layer of an absolute module name, None when it is not flowedge."""
    parts = name.split(".")
    if parts[0] != "flowedge":
        return None
    if len(parts) == 1:
        return "top"
    return parts[1] if parts[1] in FOLDERS else "top"


def module_files() -> list[tuple[str, Path]]:
    """Every module with its layer; a folder of flowedge/ that is no layer of its own (the
    historian) belongs to the top, with the CLI."""
    layers = {folder: layer for layer, folder in FOLDERS.items()}
    files = []
    for path in (REPO / "flowedge").rglob("*.py"):
        inside = next((layers[f] for f in layers if path.is_relative_to(f)), "top")
        if inside == "top":
            files.append(("top", path))
    for layer, folder in FOLDERS.items():
        files += [(layer, path) for path in folder.rglob("*.py")]
    return files


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute flowedge imports"
            base = node.module or ""
            # `from flowedge import x` may name a subpackage: judge by the name it imports
            names = [f"{base}.{a.name}" for a in node.names] if base == "flowedge" else [base]
            found += [(node.lineno, name) for name in names]
    return found


def violations() -> list[str]:
    problems = []
    for layer, path in module_files():
        rank = LAYERS.index(layer)
        for line, name in imported_modules(path):
            target = layer_of_module(name)
            if target is None or name == "flowedge.__version__":
                continue
            if LAYERS.index(target) > rank:
                problems.append(f"{path.relative_to(REPO)}:{line}: {layer} imports {name}")
    return problems


def test_every_package_imports_only_lower_layers() -> None:
    assert violations() == []


def test_old_top_level_names_are_gone() -> None:
    """Only ``flowedge`` is installed: ``import edge`` would be someone else's package."""
    old = ("flows", "edge", "calibration", "export")
    stray = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for _, path in module_files()
        for line, name in imported_modules(path)
        if name.split(".")[0] in old
    ]
    assert stray == []


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("flowedge.core.card", "core"),
        ("flowedge.edge.loop.pipeline", "edge"),
        ("flowedge.cli", "top"),
        ("flowedge", "top"),
        ("numpy", None),
    ],
)
def test_layer_of_module(name: str, layer: str | None) -> None:
    assert layer_of_module(name) == layer


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """Guard against a checker that passes because it reads nothing."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from flowedge.edge.config import load_config\n")
    assert imported_modules(bad) == [(2, "flowedge.edge.config")]
    assert len(module_files()) > 50
    assert ("top", REPO / "flowedge" / "historian" / "service.py") in module_files()


def test_backends_that_run_without_torch_import_no_training_stack() -> None:
    """The table says which backends a station without torch can run; their modules agree."""
    from flowedge.core.backend_table import BACKENDS

    for spec in BACKENDS.values():
        path = REPO / Path(*spec.module.split(".")).with_suffix(".py")
        training = [
            name
            for _, name in imported_modules(path)
            if name.split(".")[0] == "torch" or layer_of_module(name) == "flows"
        ]
        assert (training == []) == spec.runs_without_torch, f"{spec.name}: {training}"


def station_references(path: Path) -> list[str]:
    """Imports of the station (``flowedge.edge``) in a file, also as a module-name string."""
    found = [name for _, name in imported_modules(path) if name.startswith("flowedge.edge")]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        text = node.value if isinstance(node, ast.Constant) else None
        if isinstance(text, str) and text.startswith("flowedge.edge."):
            found.append(text)
    return found


def test_only_the_cli_reaches_the_station() -> None:
    """The station is a leaf: training, export, the API and the other commands never load it,
    so a workstation install (or a notebook) never starts threads, sockets or a spool."""
    outside = [
        f"{path.relative_to(REPO)}: {name}"
        for layer, path in module_files()
        if layer != "edge" and path != REPO / "flowedge" / "cli.py"
        for name in station_references(path)
    ]
    assert outside == []
    assert station_references(REPO / "flowedge" / "cli.py")  # the checker reads strings too
