"""Data sets with one folder per recipe: ``train``, ``calibrate`` and ``eval`` with ``--recipes``.

A recipe folder is what the command takes for one model (an MVTec-like root with
``train/good`` and ``test/``, or a folder of samples); its name is the recipe's, as the
station's ``recipes.models`` names it. ``flowedge train DATA --recipes --out M`` writes
``M/<recipe>`` for each, ``flowedge calibrate M --recipes --normal HELD_OUT`` reads
``HELD_OUT/<recipe>`` for ``M/<recipe>``, and ``flowedge eval M DATA --recipes`` tests
each model on its own recipe's folder. Light (no torch): the CLI checks the layout first.
"""

from __future__ import annotations

import re
from pathlib import Path

from flowedge.core.errors import ConfigError

# a recipe's folder name is also a station config key and a metric label
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


_FLAG = {"recipe": "--recipes", "run": "--per-run"}


def recipe_folders(root: Path, what: str, unit: str = "recipe") -> dict[str, Path]:
    """The recipe (``unit`` "run": run) folders of ``root`` by name, in name order;
    ConfigError naming ``what`` when there are none or a name cannot be one's."""
    if not root.is_dir():
        raise ConfigError(f"{what} {root} is not a directory; check the path")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and p.name != "ground_truth"}
    if not folders:
        raise ConfigError(
            f"{what} {root} has no {unit} folders; with {_FLAG[unit]} it holds one folder "
            f"per {unit} (each a data set of its own)"
        )
    bad = [name for name in folders if not _NAME.match(name)]
    if bad:
        raise ConfigError(
            f"{what} {root}: folder name(s) {', '.join(bad)} cannot name a {unit} (letters, "
            "digits, '_', '.', '-'; at most 64); rename them"
        )
    return folders


def looks_like_recipes(root: Path) -> list[str]:
    """The recipe names when ``root`` is no data set itself but holds data sets (each with
    ``train/good``), so a command without ``--recipes`` can say what to add; else []."""
    if not root.is_dir() or (root / "train").is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    return names


def matched(models: dict[str, Path], data: dict[str, Path], flag: str) -> dict[str, Path]:
    """Each model's recipe folder in ``data``; ConfigError naming any recipe without one."""
    missing = sorted(set(models) - set(data))
    if missing:
        raise ConfigError(
            f"{flag}: no folder for recipe(s) {', '.join(missing)} (it has "
            f"{', '.join(data) or 'none'}); give one folder per recipe the models were trained on"
        )
    return {name: data[name] for name in models}
