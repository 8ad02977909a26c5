"""``flowedge history``: list, export (CSV, parquet), review, export-dataset; read directly from
the database, without the station."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import days_ago, decision, encoded, filled_history  # noqa: E402
from runtime_fakes import write_images  # noqa: E402

import flowedge.history as history  # noqa: E402
from flowedge.calibration.history.records import KeptEvidence, add_decision  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.cli import main  # noqa: E402


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """cam1: seq 1-4 (OK 10 d ago, ANOMALY 5 d, OK 2 d, ERROR 1 d); cam2: seq 1 (ANOMALY,
    part_0001.png like cam1's first)."""
    docs = [
        decision(1, 2.0, captured_utc=days_ago(10)),
        decision(2, 5.0, captured_utc=days_ago(5)),
        decision(3, 2.5, captured_utc=days_ago(2)),
        decision(4, 0.0, captured_utc=days_ago(1))
        | {"decision": "ERROR", "score": None, "error": "part_0004.png: truncated"},
        decision(1, 6.0, source="cam2", captured_utc=days_ago(3)),
    ]
    filled_history(tmp_path / "history", docs).close()
    return tmp_path / "history"


def listed(out: str) -> list[tuple[str, int]]:
    """(source, seq) of each printed decision line."""
    lines = out.splitlines()[1:-1]  # between the heading and the count
    return [(line.split()[1], int(line.split()[2])) for line in lines]


def test_list_and_export_filter_by_time_part_decision_and_source(
    mixed: Path, tmp_path: Path, capsys
) -> None:
    base = ["history", "list", "--history", str(mixed)]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert listed(out) == [("cam1", 1), ("cam1", 2), ("cam2", 1), ("cam1", 3), ("cam1", 4)]
    assert "5 decision(s)" in out
    assert main([*base, "--decision", "ANOMALY", "--source", "cam1"]) == 0
    assert listed(capsys.readouterr().out) == [("cam1", 2)]
    assert main([*base, "--limit", "2"]) == 0  # the newest two
    assert listed(capsys.readouterr().out) == [("cam1", 3), ("cam1", 4)]

    table = tmp_path / "out.csv"
    since = days_ago(6)[:10]
    assert main(["history", "export", str(table), "--history", str(mixed), "--since", since]) == 0
    rows = list(csv.DictReader(table.open()))
    assert [(r["source"], r["seq"]) for r in rows] == [
        ("cam1", "2"),
        ("cam2", "1"),
        ("cam1", "3"),
        ("cam1", "4"),
    ]
    assert rows[-1]["decision"] == "ERROR" and rows[-1]["error"] == "part_0004.png: truncated"
    assert (
        main(
            [
                "history",
                "export",
                str(table),
                "--history",
                str(mixed),
                "--part-id",
                "part_0001.png",
                "--source",
                "cam2",
            ]
        )
        == 0
    )
    assert [r["score"] for r in csv.DictReader(table.open())] == ["6.0"]


def test_parquet_export_and_its_install_hint(
    mixed: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    assert main(["history", "export", str(out), "--history", str(mixed)]) == 0
    table = pq.read_table(out)
    assert table.num_rows == 5 and table.schema.field("seq").type == "int64"
    assert table.column("score").to_pylist()[:2] == [2.0, 5.0]
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as on a station without the robot extra
    again = tmp_path / "again.parquet"
    assert main(["history", "export", str(again), "--history", str(mixed)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'flowedge[robot]'" in err and "Traceback" not in err
    assert not again.exists() and not list(tmp_path.glob(".again*"))


def test_reviews_are_rows_of_their_own_and_the_latest_counts(mixed: Path, capsys) -> None:
    base = ["history", "review", "--history", str(mixed), "--by", "anna"]
    assert main([*base, "--part-id", "part_0002.png", "--verdict", "false_alarm"]) == 0
    assert "cam1 #2 (part part_0002.png, decided ANOMALY): false_alarm by anna" in (
        capsys.readouterr().out
    )
    assert (
        main(
            [
                *base,
                "--source",
                "cam1",
                "--seq",
                "2",
                "--verdict",
                "confirmed_anomaly",
                "--note",
                "crack at the edge",
            ]
        )
        == 0
    )
    assert [r.verdict for r in history.reviews_of(mixed, "cam1", 2)] == [
        "false_alarm",
        "confirmed_anomaly",
    ]
    [row] = history.query(mixed, reviewed=True)
    assert (row.seq, row.verdict, row.reviewed_by, row.review_note) == (
        2,
        "confirmed_anomaly",
        "anna",
        "crack at the edge",
    )
    assert history.query(mixed, verdict="false_alarm") == []


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--part-id", "part_0001.png", "--verdict", "confirmed_normal"], "2 decisions match"),
        (
            ["--part-id", "part_0002.png", "--verdict", "missed_defect"],
            "use confirmed_anomaly or false_alarm",
        ),
        (["--part-id", "part_0004.png", "--verdict", "missed_defect"], "answered ERROR"),
        (
            ["--part-id", "nope.png", "--verdict", "false_alarm"],
            "no decision with --part-id nope.png",
        ),
        (["--seq", "2", "--verdict", "false_alarm"], "give --source with --seq"),
        (
            ["--part-id", "part_0002.png", "--verdict", "false_alarm", "--by", " "],
            "say who reviewed",
        ),
    ],
)
def test_a_review_that_does_not_fit_is_refused_with_what_to_do(
    mixed: Path, capsys, flags: list[str], expected: str
) -> None:
    args = ["history", "review", "--history", str(mixed), "--by", "anna", *flags]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert history.query(mixed, reviewed=True) == []


def test_unusable_paths_and_times_exit_2(tmp_path: Path, mixed: Path, capsys) -> None:
    assert main(["history", "list", "--history", str(tmp_path / "nothing")]) == 2
    assert "no history.sqlite there" in capsys.readouterr().err
    assert main(["history", "list", "--history", str(mixed), "--since", "yesterday"]) == 2
    assert "since 'yesterday' is not a date or time" in capsys.readouterr().err
    (tmp_path / "junk.sqlite").write_bytes(b"not a database" * 100)
    assert main(["history", "list", "--history", str(tmp_path / "junk.sqlite")]) == 3
    assert "not a readable history database" in capsys.readouterr().err


def test_the_command_never_loads_the_station(mixed: Path) -> None:
    code = (
        "import sys; from flowedge.cli import main; "
        f"main(['history', 'list', '--history', {str(mixed)!r}]); "
        "print([m for m in sys.modules if m.startswith('flowedge.edge')])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "[]"


# --- export-dataset -> flowedge train -----------------------------------------------------


def reviewed_with_inputs(tmp_path: Path, normal: int, defects: int) -> Path:
    """A history of ``normal`` false alarms and ``defects`` confirmed anomalies, each with its
    input kept (64 px grey PNGs), plus one reviewed sample whose input aged out."""
    folder = tmp_path / "history"
    images = write_images(tmp_path / "inputs", normal + defects, size=64)
    with HistoryDB(folder, create=True) as db:
        with db.transaction():
            for seq, image in enumerate(images, start=1):
                relative = f"evidence/cam1/{seq:09d}-input.png"
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                (folder / relative).write_bytes(image.read_bytes())
                doc = decision(seq, 5.0)
                add_decision(db, doc, encoded(doc), KeptEvidence(relative, None, 1))
            gone = decision(len(images) + 1, 5.0)
            add_decision(db, gone, encoded(gone), KeptEvidence())
        for seq in range(1, len(images) + 2):
            verdict = "confirmed_anomaly" if normal < seq <= normal + defects else "false_alarm"
            history.review(db, verdict, "anna", source="cam1", seq=seq)
    return folder


def test_export_dataset_writes_a_layout_that_flowedge_train_reads(
    tmp_path: Path, synthetic_dataset: Path, capsys
) -> None:
    from conftest import tiny_detector_config

    folder = reviewed_with_inputs(tmp_path, normal=10, defects=3)
    out = tmp_path / "dataset"
    args = ["history", "export-dataset", str(out), "--history", str(folder), "--holdout", "0.3"]
    assert main([*args, "--base", str(synthetic_dataset)]) == 0
    printed = capsys.readouterr().out
    assert "left out: 1 reviewed sample(s) without a kept input" in printed
    train = {p.name for p in (out / "train" / "good").iterdir()}
    held = {p.name for p in (out / "test" / "good").iterdir()}
    assert len(list((out / "test" / "anomaly").iterdir())) == 3
    assert (
        not train & held
        and len(train - {n for n in train if n.startswith("base_")}) + len(held) == 10
    )
    assert sum(n.startswith("base_") for n in train) == 16
    manifest = json.loads((out / "history.json").read_text())
    assert {s["verdict"] for s in manifest["samples"]} == {"false_alarm", "confirmed_anomaly"}
    assert main([*args]) == 2  # the folder is not empty any more
    assert "not an empty folder" in capsys.readouterr().err

    config = tmp_path / "train.yaml"
    detector = tiny_detector_config().model_dump(mode="json")
    config.write_text(json.dumps({"detector": detector, "training": {"epochs": 1}}))
    model = tmp_path / "model"
    assert (
        main(["train", str(out), "--out", str(model), "--config", str(config), "--no-progress"])
        == 0
    )
    card = json.loads((model / "card.json").read_text())
    assert card["training"]["data"]["n_images"] == len(train)
