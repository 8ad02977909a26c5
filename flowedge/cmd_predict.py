"""``flowedge predict MODEL INPUTS... --out scores.csv``: score files and folders offline.

A thin shell over the Python API (:func:`flowedge.api.load`), so its scores and
decisions are the ones a notebook or the station gets. Files are read and cut as
evaluation reads them (:meth:`flowedge.api.Model.score_files`): a robot log with
the model's log format and segmenter, one row per cycle or window named
``<file>#<part>``. A bad file is a row with decision ERROR and the reason, never
the end of the run.
"""

from __future__ import annotations

import argparse
import csv
import logging
from collections import Counter
from pathlib import Path

from flowedge.api import ERROR, Model, Result, files_of, load
from flowedge.core.backend_table import AUTO, auto_rule, backend_choices, model_files_hint
from flowedge.core.errors import ConfigError, DataError
from flowedge.core.progress import Progress
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)

COLUMNS = ("file", "score", "decision", "normalised_score", "error")
CHUNK = 64  # files scored (and rows written) at a time: memory stays bounded


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help=f"the model: {model_files_hint()}")
    parser.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="sample files and folders (searched recursively for the model's file types)",
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV file to write")
    parser.add_argument(
        "--threshold",
        type=float,
        help="decision threshold (default: the model's calibration, else the one embedded at "
        "export; without any, the decision column stays empty)",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="calibration.json bound to the model (default: MODEL_DIR/calibration.json if present)",
    )
    parser.add_argument(
        "--backend",
        choices=backend_choices(),
        default=AUTO,
        help=f"{AUTO}: by the model file ({auto_rule()})",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--threads", type=int, default=0, help="inference threads (>= 0; 0: the runtime decides)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (periodic log lines only)"
    )


def run(args: argparse.Namespace) -> int:
    if not any(path.exists() for path in args.inputs):
        raise ConfigError(
            f"{', '.join(map(str, args.inputs))}: no such file or folder; give sample files or "
            "folders that contain them"
        )
    with load(
        args.model,
        threshold=args.threshold,
        calibration=args.calibration,
        backend=args.backend,
        device=args.device,
        threads=args.threads,
    ) as model:
        files = files_of(args.inputs, model.card)
        if not files:
            kind = model.card.input.kind
            raise DataError(
                f"no input files found in {', '.join(map(str, args.inputs))}; give {kind} files "
                f"({', '.join(sorted(get_modality(kind).extensions))}) or folders that contain them"
            )
        log.info("scoring %d file(s) with %s", len(files), model.card.model_id)
        counts = write_scores(model, files, args.out, show_progress=not args.no_progress)
    print(summary(counts, len(files), model.threshold, args.out))
    return 0


def write_scores(model: Model, files: list[Path], out: Path, show_progress: bool) -> Counter[str]:
    """Score ``files`` chunk by chunk into the CSV at ``out``, a row per sample (a file, or each
    part of a file the model cuts); returns the count per decision."""
    counts: Counter[str] = Counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("w", newline="", encoding="utf-8") as handle,
        Progress(len(files), "predict", "file", bar=show_progress) as progress,
    ):
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            for result in model.score_files(chunk):
                writer.writerow(_row(result))
                counts[result.decision or "scored"] += 1
            progress.update(len(chunk))
    return counts


def _row(result: Result) -> list[str]:
    def number(value: float | None) -> str:
        return "" if value is None else f"{value:.6g}"

    return [
        escaped(result.name),
        number(result.score),
        result.decision or "",
        number(result.normalised_score),
        escaped(result.error),
    ]


def escaped(text: str) -> str:
    """``text`` writable as UTF-8: bytes of a file name that are not UTF-8 (which Python holds
    as surrogates) become ``\\xNN``, so the row names the file and the CSV stays valid."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def summary(counts: Counter[str], n_files: int, threshold: float | None, out: Path) -> str:
    """One line a person reads: how many of each decision, at which threshold, where the CSV is."""
    parts = ", ".join(f"{counts[d]} {d}" for d in sorted(counts))
    at = "no threshold" if threshold is None else f"threshold {threshold:.6g}"
    errors = " (errors: see the error column)" if counts[ERROR] else ""
    rows = counts.total()
    scored = f"{n_files} file(s)" if rows == n_files else f"{rows} sample(s) of {n_files} file(s)"
    return f"{scored} scored ({at}): {parts}{errors}; written to {out}"
