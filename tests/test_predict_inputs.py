"""``flowedge predict`` on what users give it: odd file names, and logs the model cuts into cycles."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from flowedge.cli import main


def test_a_file_name_that_is_not_utf8_is_scored_and_written_escaped(
    tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((synthetic_dataset / "test" / "good").glob("*.png"))
    odd = folder / os.fsdecode(b"part\xff-7.png")  # a Latin-1 name on a UTF-8 file system
    shutil.copy(good[0], odd)
    shutil.copy(good[1], folder / "zz.png")
    out = tmp_path / "scores.csv"
    assert main(["predict", str(tiny_checkpoint), str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [Path(r["file"]).name for r in rows] == ["part\\xff-7.png", "zz.png"]
    assert all(r["score"] and not r["error"] for r in rows)
