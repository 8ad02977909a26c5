"""``flowedge history list|export|review|export-dataset``: the station's history, read directly.

Reads (and, for ``review``, writes) the history sink's SQLite database without the
station, so it runs on the station beside a running service or on a workstation with a
copy of the history folder. docs/history.md: the schema, the verdicts, the review loop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import flowedge.history as history
from flowedge.calibration.history.query import HistoryRow
from flowedge.calibration.history.store import VERDICTS
from flowedge.core.decision import DECISIONS
from flowedge.core.outpaths import check_output_dir, check_output_file

DEFAULT_HISTORY = Path("runs/history")
LIST_LIMIT = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print the matching decisions, oldest first")
    _filters(listing)
    listing.add_argument("--limit", type=int, default=LIST_LIMIT, help="only the newest this many")
    table = actions.add_parser("export", help="write the matching decisions to CSV or parquet")
    table.add_argument("out", type=Path, metavar="OUT", help="a .csv or .parquet file")
    _filters(table)
    verdict = actions.add_parser(
        "review", help="record a reviewer's verdict on one decision (the latest review counts)"
    )
    _history(verdict)
    verdict.add_argument("--part-id", help="the part's id (add --source if several sensors saw it)")
    verdict.add_argument("--source", help="the sensor (sources[].name)")
    verdict.add_argument("--seq", type=int, help="the decision's number (with --source)")
    verdict.add_argument(
        "--verdict",
        required=True,
        choices=VERDICTS,
        help="on an ANOMALY: confirmed_anomaly or false_alarm; on an OK: missed_defect or "
        "confirmed_normal",
    )
    verdict.add_argument("--by", required=True, metavar="NAME", help="who reviewed")
    verdict.add_argument("--note", default="", help="what was seen (default: none)")
    dataset = actions.add_parser(
        "export-dataset",
        help="write the reviewed samples with kept inputs as an MVTec-like set for "
        "'flowedge train' (train/good, test/good, test/anomaly)",
    )
    dataset.add_argument("out", type=Path, metavar="OUT", help="a new (or empty) folder")
    dataset.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of the reviewed-normal samples kept out of train/good for test/good",
    )
    dataset.add_argument(
        "--base",
        type=Path,
        metavar="ROOT",
        help="an MVTec category root whose train/good is linked into OUT's train/good too",
    )
    _filters(dataset, decisions=False)


def _history(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--history",
        type=Path,
        default=DEFAULT_HISTORY,
        metavar="PATH",
        help="the history sink's folder (sinks[].path) or its history.sqlite",
    )


def _filters(parser: argparse.ArgumentParser, decisions: bool = True) -> None:
    _history(parser)
    parser.add_argument("--since", help="captured at or after (ISO 8601; UTC without offset)")
    parser.add_argument("--until", help="captured before (ISO 8601; UTC without offset)")
    parser.add_argument("--source", help="one sensor (sources[].name)")
    if decisions:
        parser.add_argument("--part-id", help="one part id")
        parser.add_argument("--decision", choices=DECISIONS, help="only this decision")
        parser.add_argument("--verdict", choices=VERDICTS, help="the latest review's verdict")
        parser.add_argument(
            "--reviewed",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="only reviewed (--reviewed) or only unreviewed (--no-reviewed) decisions",
        )


def _filter_values(args: argparse.Namespace) -> dict[str, object]:
    names = ("since", "until", "source", "part_id", "decision", "verdict", "reviewed")
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def run(args: argparse.Namespace) -> int:
    return {
        "list": _list,
        "export": _export,
        "review": _review,
        "export-dataset": _export_dataset,
    }[args.action](args)


def _list(args: argparse.Namespace) -> int:
    rows = history.query(args.history, limit=args.limit, **_filter_values(args))
    print(
        f"{'captured (UTC)':<24} {'source':<12} {'seq':>7} {'decision':<8} {'score':>10}  "
        f"{'verdict':<17} part id"
    )
    for row in rows:
        print(_line(row))
    print(
        f"{len(rows)} decision(s)" + (f" (--limit {args.limit})" if len(rows) == args.limit else "")
    )
    return 0


def _line(row: HistoryRow) -> str:
    score = "" if row.score is None else f"{row.score:.5g}"
    return (
        f"{row.captured_utc:<24} {row.source:<12} {row.seq:>7} {row.decision:<8} {score:>10}  "
        f"{row.verdict or '':<17} {row.part_id}"
    )


def _export(args: argparse.Namespace) -> int:
    check_output_file(args.out)
    count = history.export_table(args.history, args.out, **_filter_values(args))
    print(f"{count} decision(s) written to {args.out}")
    return 0


def _review(args: argparse.Namespace) -> int:
    done = history.review(
        args.history,
        args.verdict,
        args.by,
        args.note,
        source=args.source,
        seq=args.seq,
        part_id=args.part_id,
    )
    print(
        f"{done.source} #{done.seq} (part {done.part_id}, decided {done.decision}): "
        f"{done.verdict} by {done.reviewer} at {done.utc}"
    )
    return 0


def _export_dataset(args: argparse.Namespace) -> int:
    check_output_dir(args.out)
    report = history.export_dataset(
        args.history, args.out, args.holdout, args.base, **_filter_values(args)
    )
    for folder, count in sorted(report.folders.items()):
        print(f"{folder:<14} {count} reviewed sample(s)")
    if report.base:
        print(f"train/good     {report.base} file(s) linked from --base {args.base}")
    if report.without_input:
        print(
            f"left out: {len(report.without_input)} reviewed sample(s) without a kept input "
            f"(e.g. {report.without_input[0]}): pipeline.evidence.inputs keeps them"
        )
    print(f"dataset written to {args.out}: flowedge train {args.out} --out MODEL")
    return 0
