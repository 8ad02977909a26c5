"""The history out of the station: tables (CSV, parquet) and a training set (MVTec layout).

A table has one row per decision with its latest review (:data:`.query.COLUMNS`);
parquet needs pyarrow (the ``robot`` extra). The dataset holds the reviewed samples
whose input was kept as evidence: ``train/good`` the reviewed-normal ones (false alarms,
confirmed normal), ``test/good`` a held-out share of them (never in train/good) and
``test/anomaly`` the confirmed defects (confirmed anomalies, missed defects), plus
``history.json`` saying where each file came from. ``flowedge train OUT`` trains on it,
``flowedge eval`` and ``flowedge calibrate --normal OUT/test/good`` use the test part.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowedge.calibration.history.query import COLUMNS, HistoryRow, Query, select
from flowedge.calibration.history.review import DEFECT, NORMAL
from flowedge.calibration.history.store import HistoryDB
from flowedge.core.errors import ConfigError, DataError

TABLE_FORMATS = (".csv", ".parquet")
PARQUET_HINT = "writing parquet needs pyarrow: pip install 'flowedge[robot]' (or write .csv)"
MANIFEST = "history.json"


def write_table(rows: list[HistoryRow], out: Path) -> None:
    """CSV or parquet by ``out``'s suffix, written whole or not at all."""
    suffix = out.suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ConfigError(f"{out}: the table's name must end in {' or '.join(TABLE_FORMATS)}")
    partial = out.with_name(f".{out.name}.partial")
    if suffix == ".parquet":
        _parquet(rows, partial)
    else:
        _csv(rows, partial)
    os.replace(partial, out)


def _csv(rows: list[HistoryRow], out: Path) -> None:
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(row.as_dict() for row in rows)


def _parquet(rows: list[HistoryRow], out: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(PARQUET_HINT) from None
    numbers = {"seq": pa.int64(), "score": pa.float64(), "threshold": pa.float64()}
    numbers["normalised_score"] = pa.float64()
    schema = pa.schema([(name, numbers.get(name, pa.string())) for name in COLUMNS])
    pq.write_table(pa.Table.from_pylist([row.as_dict() for row in rows], schema=schema), out)


@dataclass
class DatasetReport:
    """What went where, and what could not (no kept input)."""

    folders: dict[str, int] = field(default_factory=dict)  # relative folder -> files
    base: int = 0  # files of --base linked into train/good
    without_input: list[str] = field(default_factory=list)  # reviewed, but no kept input


def holdout_share(source: str, seq: int) -> float:
    """A fixed number in [0, 1) per decision: the same split on every export."""
    digest = hashlib.sha256(f"{source}\0{seq}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def export_dataset(
    db: HistoryDB,
    out: Path,
    query: Query | None = None,
    holdout: float = 0.2,
    base: Path | None = None,
) -> DatasetReport:
    """Write the MVTec-like set of the reviewed samples ``query`` selects (see module doc)."""
    if not 0 <= holdout < 1:
        raise ConfigError(f"--holdout must be in [0, 1) (got {holdout})")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not an empty folder: give a new folder")
    base_files = _base_files(base)
    report = DatasetReport()
    manifest: list[dict[str, Any]] = []
    for row in select(db, replace(query or Query(), reviewed=True)):
        if row.input_path is None or not Path(row.input_path).is_file():
            report.without_input.append(f"{row.source} #{row.seq}")
            continue
        folder = _folder(row, holdout)
        target = out / folder / f"{row.source}_{row.seq:09d}{Path(row.input_path).suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(row.input_path, target)
        report.folders[folder] = report.folders.get(folder, 0) + 1
        manifest.append({"file": target.relative_to(out).as_posix(), **_origin(row)})
    if base_files:
        good = out / "train" / "good"
        good.mkdir(parents=True, exist_ok=True)
        for path in base_files:
            (good / f"base_{path.name}").symlink_to(path.resolve())
        report.base = len(base_files)
    if not manifest and not base_files:
        raise DataError(
            f"history {db.folder}: no reviewed sample with a kept input matches "
            f"({len(report.without_input)} reviewed without one): keep inputs with "
            "pipeline.evidence.inputs and review decisions with 'flowedge history review'"
        )
    text = json.dumps({"history": str(db.folder), "samples": manifest}, indent=1)
    (out / MANIFEST).write_text(text + "\n", encoding="utf-8")
    return report


def _folder(row: HistoryRow, holdout: float) -> str:
    if row.verdict in DEFECT:
        return "test/anomaly"
    assert row.verdict in NORMAL
    return "test/good" if holdout_share(row.source, row.seq) < holdout else "train/good"


def _origin(row: HistoryRow) -> dict[str, Any]:
    keys = ("source", "seq", "part_id", "captured_utc", "decision", "score", "verdict")
    return {key: getattr(row, key) for key in keys} | {"reviewed_by": row.reviewed_by}


def _base_files(base: Path | None) -> list[Path]:
    """The training files of an MVTec category root given as ``--base`` (its train/good)."""
    if base is None:
        return []
    good = base / "train" / "good"
    if not good.is_dir():
        raise ConfigError(f"--base {base}: no train/good folder there; give an MVTec category root")
    return sorted(p for p in good.iterdir() if p.is_file())
