"""The intake journal: a captured sample stays on record until its decision is stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import (  # noqa: E402
    FakeBackend,
    drop_oldest_config,
    station_config,
    write_images,
)

from flowedge.edge.loop.pipeline import Pipeline  # noqa: E402
from flowedge.edge.loop.policy import Policy  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.sources.base import PAYLOAD_GONE, file_version, replayed  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402


def journal_file(spool: Spool, path: Path, **kwargs) -> int:  # noqa: ANN003
    return spool.record_intake(
        "cam1",
        path.name,
        "2026-01-01T00:00:00.000Z",
        locator=str(path),
        version=file_version(path.stat()),
        **kwargs,
    )


def test_round_trip_and_decision_closes_the_row_in_its_transaction(tmp_path: Path) -> None:
    image = write_images(tmp_path / "images", 1)[0]
    spool = Spool(tmp_path / "s.sqlite", 100)
    first = journal_file(spool, image, remember=("last", str(image)))
    second = journal_file(spool, image)
    [row, _] = spool.pending_intake("cam1")
    assert (row.id, row.part_id, row.locator, row.error) == (first, image.name, str(image), None)
    assert spool.recall("cam1") == {"last": str(image)}

    spool.put_numbered("cam1", lambda seq: str(seq).encode(), first)
    assert [r.id for r in spool.pending_intake("cam1")] == [second]

    def disk_full(seq: int) -> bytes:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        spool.put_numbered("cam1", disk_full, second)
    assert [r.id for r in spool.pending_intake("cam1")] == [second]  # rolled back together
    spool.drop_intake(second)
    assert spool.pending_intake("cam1") == [] and spool.count() == 1
    spool.close()


def test_rows_left_open_by_a_crash_are_replayed_from_their_file_or_answered_gone(
    tmp_path: Path,
) -> None:
    kept, deleted, rewritten = write_images(tmp_path / "images", 3)
    spool = Spool(tmp_path / "s.sqlite", 100)
    for image in (kept, deleted, rewritten):
        journal_file(spool, image)
    spool.record_intake("cam1", "17", "2026-01-01T00:00:00.000Z")  # an in-memory camera frame
    spool.close()  # the process dies: no decision was stored
    deleted.unlink()
    rewritten.write_bytes(kept.read_bytes() + b"more")

    again = Spool(tmp_path / "s.sqlite", 100)
    frames = [replayed(row) for row in again.pending_intake("cam1")]
    again.close()
    assert [f.part_id for f in frames] == [kept.name, deleted.name, rewritten.name, "17"]
    assert frames[0].payload == kept and frames[0].error is None
    for frame in frames[1:]:
        assert frame.payload is None and PAYLOAD_GONE in frame.error
        assert frame.captured_utc == "2026-01-01T00:00:00.000Z"  # the original capture time


def run(cfg, backend=None) -> tuple[Pipeline, list[dict]]:  # noqa: ANN001
    spool = Spool(cfg.spool.path, 1000)
    pipeline = Pipeline(cfg, backend or FakeBackend(), Policy(3.0), spool, Metrics())
    pipeline.start()
    assert pipeline.wait(30), "pipeline did not finish"
    docs = [json.loads(r.body) for r in spool.after(0, 1000) if r.kind == "decision"]
    assert spool.pending_intake("cam1") == []  # everything captured was answered or dropped
    spool.close()
    return pipeline, docs


def test_restart_answers_the_crashed_runs_samples_first_then_resumes_the_folder(
    tmp_path: Path,
) -> None:
    images = write_images(tmp_path / "images", 4)
    spool = Spool(tmp_path / "spool.sqlite", 100)
    for image in images[:2]:  # captured, then SIGKILL before any decision
        journal_file(spool, image, remember=("last", str(image)))
    spool.record_intake("cam1", "frame-9", "2026-01-01T00:00:00.000Z")
    spool.close()

    _, docs = run(station_config(tmp_path))
    assert [d["part_id"] for d in docs] == [*(p.name for p in images[:2]), "frame-9"] + [
        p.name for p in images[2:]
    ]
    assert [d["seq"] for d in docs] == [1, 2, 3, 4, 5]
    assert [d["decision"] == "ERROR" for d in docs] == [False, False, True, False, False]
    assert PAYLOAD_GONE in docs[2]["error"]


def test_drop_oldest_closes_the_journal_rows_of_dropped_samples(tmp_path: Path) -> None:
    cfg = drop_oldest_config(tmp_path)
    pipeline, docs = run(cfg, FakeBackend(delay_s=0.02))  # asserts the journal is empty
    assert pipeline.counts["dropped"] >= 1
    assert len(docs) + pipeline.counts["dropped"] == 30


def test_memory_prune_forgets_missing_files_then_caps_the_oldest(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", 100)
    for i in range(5):
        spool.record_intake("w", f"f{i}", "t", remember=(f"/d/f{i}", "v"))
    assert spool.prune_memory("w", keep={"/d/f0", "/d/f2", "/d/f3", "/d/f4"}, cap=2) == 3
    assert set(spool.recall("w")) == {"/d/f3", "/d/f4"}  # f1 gone, then the oldest over the cap
    spool.close()
