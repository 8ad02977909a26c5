"""``flowedge calibrate --history``: reviewed false alarms join the normal set and the threshold
is re-fitted; recorded scores for the same model, kept inputs scored again for another."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import decision, encoded  # noqa: E402

import flowedge.history as history  # noqa: E402
from flowedge.calibration.history.records import KeptEvidence, add_decision  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.cli import main  # noqa: E402
from flowedge.core.card import ModelCard  # noqa: E402


def model_decision(card: ModelCard, seq: int, score: float, threshold: float) -> dict:
    doc = decision(seq, score, threshold)
    doc["model"] |= {"id": card.model_id, "weights_sha256": card.weights_sha256}
    return doc


def reviewed_history(
    path: Path,
    docs: list[dict],
    verdicts: list[str | None],
    inputs: list[Path | None] | None = None,
) -> Path:
    """A history of ``docs``, each reviewed with its verdict (None: not reviewed), with its
    input kept when ``inputs`` names one."""
    inputs = inputs or [None] * len(docs)
    with HistoryDB(path, create=True) as db:
        with db.transaction():
            for doc, image in zip(docs, inputs, strict=True):
                kept = KeptEvidence()
                if image is not None:
                    relative = f"evidence/cam1/{doc['seq']:09d}-input{image.suffix}"
                    (path / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(image, path / relative)
                    kept = KeptEvidence(relative, None, image.stat().st_size)
                add_decision(db, doc, encoded(doc), kept)
        for doc, verdict in zip(docs, verdicts, strict=True):
            if verdict is not None:
                history.review(db, verdict, "anna", source="cam1", seq=doc["seq"])
    return path


def test_false_alarms_refit_the_threshold_from_recorded_scores(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """200 normal parts all flagged by a threshold far too low, reviewed as false alarms, and
    10 confirmed defects: the re-fitted threshold is their 90 % quantile."""
    card = ModelCard.load(tiny_checkpoint / "card.json")
    rng = np.random.default_rng(0)
    normal = rng.gamma(2.0, 1.0, 200) + 1.0
    defects = np.linspace(5.0, 14.0, 10)
    docs = [
        model_decision(card, seq, float(s), 0.5)
        for seq, s in enumerate([*normal, *defects], start=1)
    ]
    verdicts = ["false_alarm"] * 200 + ["confirmed_anomaly"] * 10
    path = reviewed_history(tmp_path / "history", docs, verdicts)
    out = tmp_path / "calibration.json"
    args = ["calibrate", str(tiny_checkpoint), "--history", str(path), "--target-far", "0.1"]
    assert main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["normal"]["n"] == 200 and data["anomalous"]["n"] == 10
    assert data["threshold"] == pytest.approx(np.quantile(normal, 0.9), rel=0.05)
    assert data["normal"]["sources"]["history"]["recorded"] == 210
    assert "threshold   before 0.5 -> after" in printed
    assert "false alarms before 200/200 (100%) -> after 20/200 (10%)" in printed
    assert "recall before 10/10 (100%) -> after 10/10 (100%)" in printed


def test_another_models_reviewed_inputs_are_scored_again_unless_trained_on(
    tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path, capsys
) -> None:
    from test_calibration_cli import normal_images

    held = sorted(normal_images(tmp_path / "held" / "part", 24, seed=3).iterdir())
    trained = sorted((synthetic_dataset / "train" / "good").iterdir())[:2]
    images = [*held, *trained, None]  # the last one's input is gone
    docs = [decision(seq, 5.0, 0.5) for seq in range(1, len(images) + 1)]  # another model's
    verdicts = ["false_alarm"] * len(images)
    path = reviewed_history(tmp_path / "history", docs, verdicts, images)
    out = tmp_path / "calibration.json"
    args = ["calibrate", str(tiny_checkpoint), "--history", str(path), "--out", str(out)]
    assert main([*args, "--target-far", "0.05", "--no-progress"]) == 0
    sources = json.loads(out.read_text())["normal"]["sources"]["history"]
    assert (sources["rescored"], sources["trained_on"], sources["without_score"]) == (24, 2, 1)
    assert "threshold   before - -> after" in capsys.readouterr().out  # no decision of this model


def test_confirmed_oks_join_only_when_asked_and_update_merges(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    card = ModelCard.load(tiny_checkpoint / "card.json")
    scores = np.linspace(1.0, 3.0, 40)
    docs = [model_decision(card, seq, float(s), 2.0) for seq, s in enumerate(scores, start=1)]
    verdicts = ["false_alarm" if s > 2.0 else "confirmed_normal" for s in scores]
    path = reviewed_history(tmp_path / "history", docs, verdicts)
    out = tmp_path / "calibration.json"
    base = ["calibrate", str(tiny_checkpoint), "--history", str(path), "--out", str(out)]
    base += ["--target-far", "0.1"]
    assert main(base) == 0
    assert json.loads(out.read_text())["normal"]["n"] == 20  # the false alarms
    assert main([*base, "--history-confirmed-ok"]) == 0
    assert json.loads(out.read_text())["normal"]["n"] == 40
    merged = tmp_path / "merged.json"
    update = ["--update", str(out), "--out", str(merged)]  # the file's target: 0.1
    assert main(["calibrate", str(tiny_checkpoint), "--history", str(path), *update]) == 0
    assert json.loads(merged.read_text())["normal"]["n"] == 60
    assert "threshold   before" in capsys.readouterr().out


def test_calibrate_needs_some_normal_scores(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = ["--out", str(tmp_path / "c.json")]
    assert main(["calibrate", str(tiny_checkpoint), *out]) == 2
    assert "no normal samples: give --normal DIR" in capsys.readouterr().err
    assert main(["calibrate", str(tiny_checkpoint), "--history-confirmed-ok", *out]) == 2
    assert "only applies with --history" in capsys.readouterr().err
    assert main(["calibrate", str(tiny_checkpoint), "--history", str(tmp_path), *out]) == 2
    assert "no history.sqlite there" in capsys.readouterr().err
