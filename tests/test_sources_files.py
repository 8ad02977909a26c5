"""File sources through the intake journal, as the capture thread runs them: nothing skipped,
nothing repeated, across restarts, moved-in files, overwrites and slow writers."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import station_config, validator, write_images  # noqa: E402

from flowedge.edge.loop.capture import journaled  # noqa: E402
from flowedge.edge.loop.events import SEVERITY  # noqa: E402
from flowedge.edge.loop.messages import event_doc  # noqa: E402
from flowedge.edge.sources import Frame  # noqa: E402
from flowedge.edge.sources.base import EventSink  # noqa: E402
from flowedge.edge.sources.changes import file_system_type, unnotified  # noqa: E402
from flowedge.edge.sources.files import FilePatterns  # noqa: E402
from flowedge.edge.sources.folder import FolderSource  # noqa: E402
from flowedge.edge.sources.watch import WatchSource  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402

OLD_NS = 978_307_200 * 10**9  # 2001-01-01: what `cp -p` or `rsync -t` of an old file keeps


class Capture:
    """A source's capture thread: journals every frame, answers (closes) each journal row."""

    def __init__(self, spool: Spool, source: WatchSource | FolderSource) -> None:
        self.spool, self.source = spool, source
        self.frames: list[Frame] = []
        self.changed = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        for frame, intake_id in journaled(self.spool, self.source, self.stop):
            self.spool.put_numbered(self.source.name, lambda seq: b"", intake_id)
            with self.changed:
                self.frames.append(frame)
                self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Frame]:
        with self.changed:
            self.changed.wait_for(lambda: len(self.frames) >= count, timeout)
            return list(self.frames)

    def names(self) -> list[str]:
        return [f.part_id for f in self.frames]

    def close(self) -> list[str]:
        self.stop.set()
        self.thread.join()
        return self.names()


@pytest.fixture(params=["auto", "poll"])
def notify(request: pytest.FixtureRequest) -> str:
    """Each watch test with change notification (inotify where there is one) and polling."""
    return request.param


def watch(
    tmp_path: Path, events: EventSink | None = None, **options: object
) -> tuple[WatchSource, Path]:
    folder = tmp_path / "drop"
    folder.mkdir(exist_ok=True)
    cfg = station_config(
        tmp_path, sources=[{"name": "line", "kind": "watch", "path": str(folder), **options}]
    )
    return WatchSource(cfg.sources[0], events or (lambda *a, **k: None)), folder


def started(spool: Spool, source: WatchSource) -> Capture:
    """Start capturing once the source has looked at the folder (first-start snapshot taken)."""
    source.memory = spool
    capture = Capture(spool, source)
    deadline = time.monotonic() + 5
    while WatchSource.STARTED not in spool.recall(source.name) and time.monotonic() < deadline:
        time.sleep(0.01)
    return capture


def watching(
    tmp_path: Path, events: EventSink | None = None, **options: object
) -> tuple[Capture, Path, Spool]:
    """A watch source started on a new spool: its capture, its folder, the spool."""
    source, folder = watch(tmp_path, events, **options)
    spool = Spool(tmp_path / "spool.sqlite", 100)
    return started(spool, source), folder, spool


def move_in(tmp_path: Path, folder: Path, index: int, old: bool = True) -> Path:
    """A finished file moved into the folder, keeping an old mtime like mv / cp -p / rsync."""
    [made] = write_images(tmp_path / "outside", 1, start=index)
    if old:
        os.utime(made, ns=(OLD_NS, OLD_NS))
    return made.rename(folder / made.name)


def test_moved_in_old_files_and_files_dropped_while_stopped_are_taken_once(
    tmp_path: Path, notify: str
) -> None:
    source, folder = watch(tmp_path, notify=notify)
    write_images(folder, 1)  # there before the very first start: not ours
    spool = Spool(tmp_path / "spool.sqlite", 100)
    capture = started(spool, source)
    move_in(tmp_path, folder, 1)
    capture.wait_for(1)
    assert capture.close() == ["img_0001.png"]

    move_in(tmp_path, folder, 2)  # while the station is down, older than anything taken
    move_in(tmp_path, folder, 3, old=False)
    again = started(spool, watch(tmp_path, notify=notify)[0])
    again.wait_for(2)
    time.sleep(0.3)  # a few more polls: nothing is taken twice
    assert sorted(again.close()) == ["img_0002.png", "img_0003.png"]
    spool.close()


def test_a_file_overwritten_under_the_same_name_is_answered_again(
    tmp_path: Path, notify: str
) -> None:
    capture, folder, spool = watching(tmp_path, notify=notify)
    target = move_in(tmp_path, folder, 1)
    capture.wait_for(1)
    target.write_bytes(write_images(tmp_path / "other", 1, start=5)[0].read_bytes())  # in place
    capture.wait_for(2)
    move_in(tmp_path, folder, 1)  # replaced by rename: same name, same content, new inode
    capture.wait_for(3)
    assert capture.close() == ["img_0001.png"] * 3
    spool.close()


def test_slow_writer_gets_one_error_per_version_then_its_finished_file(
    tmp_path: Path, notify: str
) -> None:
    capture, folder, spool = watching(tmp_path, settle_timeout_s=0.5, notify=notify)
    data = write_images(tmp_path / "outside", 1)[0].read_bytes()
    with open(folder / "slow.png", "wb") as handle:
        handle.write(data[:40])  # stalls: no PNG end marker for longer than the limit
        handle.flush()
        [timed_out] = capture.wait_for(1)
        assert timed_out.payload is None and "settle_timeout_s=0.5" in timed_out.error
        handle.write(data[40:])
    [_, finished] = capture.wait_for(2)
    assert finished.error is None and finished.payload == folder / "slow.png"
    time.sleep(0.3)
    assert capture.close() == ["slow.png", "slow.png"]
    assert [r.part_id for r in spool.pending_intake("line")] == []
    spool.close()


def test_folder_replay_resumes_after_a_crash_and_starts_over_once_complete(
    tmp_path: Path,
) -> None:
    images = [p.name for p in write_images(tmp_path / "images", 5)]
    cfg = station_config(tmp_path)
    spool = Spool(tmp_path / "spool.sqlite", 100)
    source = FolderSource(cfg.sources[0], lambda *a, **k: None, spool)
    frames = journaled(spool, source, threading.Event())
    for _ in range(2):  # two captured, none answered, then the process dies
        next(frames)
    spool.close()

    spool = Spool(tmp_path / "spool.sqlite", 100)
    after_crash = Capture(spool, FolderSource(cfg.sources[0], lambda *a, **k: None, spool))
    after_crash.thread.join()
    assert after_crash.names() == images  # the two journaled ones, then the rest: no repeats
    fresh = Capture(spool, FolderSource(cfg.sources[0], lambda *a, **k: None, spool))
    fresh.thread.join()
    assert fresh.names() == images  # the previous replay finished: a new one
    spool.close()


# --- issue 20: upper-case suffixes are samples too; a file matching no pattern is reported ------


class Events:
    """The events a source reports: (kind, message, details) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def __call__(self, source: str, kind: str, message: str, **details: object) -> None:
        self.seen.append((kind, message, details))

    def of(self, kind: str) -> list[tuple[str, str, dict]]:
        return [event for event in self.seen if event[0] == kind]


def test_folder_replay_matches_suffixes_without_regard_to_case_and_reports_the_rest(
    tmp_path: Path,
) -> None:
    [a, b, c] = write_images(tmp_path / "images", 3)
    a.rename(a.with_name("PART.PNG"))
    b.rename(b.with_name("part_b.Png"))
    (tmp_path / "images" / "notes.txt").write_text("shift notes")
    events = Events()
    for pattern in (None, "*.png"):  # the modality's suffixes, and a user's pattern
        source = {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images")}
        cfg = station_config(tmp_path, sources=[{**source, "pattern": pattern}])
        frames = list(FolderSource(cfg.sources[0], events).frames(threading.Event()))
        assert [f.part_id for f in frames] == ["PART.PNG", c.name, "part_b.Png"]
    [(_, message, details)] = events.of("file_unmatched")[:1]
    assert len(events.of("file_unmatched")) == 2  # once per source run (a new source each time)
    assert "notes.txt" in message and "pattern" in message and details["file"] == "notes.txt"
    doc = event_doc(cfg, "cam1", "file_unmatched", message, SEVERITY["file_unmatched"], **details)
    validator("event").validate(doc)


def test_watch_takes_upper_case_suffixes_and_reports_an_unmatched_file_once(
    tmp_path: Path, notify: str
) -> None:
    events = Events()
    capture, folder, spool = watching(tmp_path, events, pattern="*.png", notify=notify)
    [made] = write_images(tmp_path / "outside", 1, start=1)
    made.rename(folder / "PART_0001.PNG")  # a finished file moved in
    (folder / "report.csv").write_text("not an image")
    capture.wait_for(1)
    time.sleep(0.5)  # several polls: the unmatched file is reported once, not per poll
    assert capture.close() == ["PART_0001.PNG"]
    unmatched = events.of("file_unmatched")
    assert [details["file"] for _, _, details in unmatched] == ["report.csv"]
    spool.close()


@pytest.mark.parametrize(
    "pattern, name, matches",
    [
        ("*.png", "PART.PNG", True),
        ("*.[pj]ng", "x.JNG", True),
        ("[!a]*.png", "A1.png", False),
        ("[!a]*.png", "b1.PNG", True),
        ("[x.png", "[X.PNG", True),  # an unclosed bracket is a literal one
        ("*.png", "x.pngx", False),
    ],
)
def test_patterns_match_without_regard_to_case(pattern: str, name: str, matches: bool) -> None:
    assert FilePatterns([pattern]).matches(name) is matches


# --- issue 20: an idle watched folder costs nothing; polling only where changes go unreported ---


def test_an_idle_watched_folder_is_not_listed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("inotify_simple", reason="change notification needs inotify_simple")
    listings = []
    listing = FilePatterns.listing
    monkeypatch.setattr(
        FilePatterns, "listing", lambda self, folder: listings.append(1) or listing(self, folder)
    )
    source, folder = watch(tmp_path)
    write_images(folder, 50)
    spool = Spool(tmp_path / "spool.sqlite", 100)
    capture = started(spool, source)
    time.sleep(0.3)
    idle = len(listings)
    time.sleep(0.5)  # five polls' worth of nothing happening
    assert len(listings) == idle
    move_in(tmp_path, folder, 60)  # and it still sees what arrives
    capture.wait_for(1)
    assert capture.close() == ["img_0060.png"]
    spool.close()


def test_a_watched_folder_removed_and_made_again_is_watched_again(
    tmp_path: Path, notify: str
) -> None:
    capture, folder, spool = watching(tmp_path, notify=notify)
    move_in(tmp_path, folder, 1)
    capture.wait_for(1)
    folder.rename(tmp_path / "old_drop")  # the vision system's share replaced
    folder.mkdir()
    time.sleep(0.3)
    move_in(tmp_path, folder, 2)
    capture.wait_for(2)
    assert capture.close() == ["img_0001.png", "img_0002.png"]
    spool.close()


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/vision /srv/vision nfs4 rw,relatime 0 0
//nas/line\\0403 /mnt/line\\0403 cifs rw 0 0
/dev/sdb1 /srv/vision/local xfs rw 0 0
"""


@pytest.mark.parametrize(
    "folder, kind, polls",
    [
        ("/srv/vision/out", "nfs4", True),
        ("/srv/vision/local/out", "xfs", False),
        ("/mnt/line 3/drop", "cifs", True),
        ("/var/drop", "ext4", False),
    ],
)
def test_network_file_systems_are_polled(folder: str, kind: str, polls: bool) -> None:
    assert file_system_type(Path(folder), MOUNTS) == kind
    assert unnotified(kind) is polls
