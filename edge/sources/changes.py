"""How a watch source learns that its folder changed: inotify where the kernel reports it,
else polling.

Polling lists and stats every file of the folder every 0.1 s: with 5,000 files waiting in
it that alone cost about 40 % of a core while nothing happened. With inotify the kernel
names the files that changed and an idle folder costs nothing (bench/watch_idle.py).
inotify does not see what another machine writes to a network file system, and it
watches one folder, not its subfolders; there (and where inotify_simple is not
installed, or the kernel refuses another watch) the source polls, as before.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

# file systems whose changes made elsewhere (another machine, the host of a VM) inotify does
# not report; FUSE file systems (``fuse.sshfs``, ``fuse.rclone``, ...) count as such too
UNNOTIFIED_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "virtiofs",
        "vboxsf",
        "fuse",
    }
)


def file_system_type(folder: Path, mounts: str) -> str | None:
    """The type of the file system ``folder`` lies on, from /proc/self/mounts text."""
    real, best, kind = os.path.realpath(folder), "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def unnotified(kind: str | None) -> bool:
    return kind is not None and (kind in UNNOTIFIED_FILE_SYSTEMS or kind.startswith("fuse."))


class FolderChanges(Protocol):
    how: str  # said in the log and by ``flowedge check``

    def wait(self, stop: threading.Event, timeout_s: float) -> set[str] | None:
        """The names in the folder that changed within ``timeout_s`` (empty: none); None:
        anything may have changed, list the whole folder."""

    def close(self) -> None: ...


class Polling:
    """Every wait may have changed anything: the caller lists the whole folder each time."""

    def __init__(self, why: str) -> None:
        self.how = f"polling ({why})"

    def wait(self, stop: threading.Event, timeout_s: float) -> set[str] | None:
        stop.wait(timeout_s)
        return None

    def close(self) -> None:
        pass


class Inotify:
    """The kernel names what changed in the folder; nothing is listed while nothing does.

    The watch follows the folder's inode: a folder removed, replaced or mounted over is
    watched again under its path, and the caller lists it whole (as after a lost event).
    """

    how = "inotify"

    def __init__(self, folder: Path, inotify_simple: Any) -> None:
        flags = inotify_simple.flags
        self.mask = (
            flags.CREATE
            | flags.CLOSE_WRITE
            | flags.MODIFY
            | flags.ATTRIB
            | flags.MOVED_TO
            | flags.MOVED_FROM
            | flags.DELETE
            | flags.DELETE_SELF
            | flags.MOVE_SELF
        )
        self.lost = flags.Q_OVERFLOW | flags.IGNORED | flags.DELETE_SELF | flags.MOVE_SELF
        self.folder = folder
        self.inotify = inotify_simple.INotify()  # OSError: the kernel refuses another one
        self.watched: tuple[int, int] | None = None  # (device, inode) of the folder watched
        self._watch()

    def _identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.folder)
        except OSError:
            return None
        return (stat.st_dev, stat.st_ino)

    def _watch(self) -> None:
        self.watched = self._identity()
        if self.watched is not None:
            try:
                self.inotify.add_watch(self.folder, self.mask)
            except OSError as exc:  # gone again, or the watch limit reached: retried
                log.warning("cannot watch %s (%s); trying again", self.folder, exc)
                self.watched = None

    def wait(self, stop: threading.Event, timeout_s: float) -> set[str] | None:
        if self._identity() != self.watched:  # removed, replaced or mounted over
            self._watch()
            stop.wait(timeout_s)
            return None
        names: set[str] = set()
        for event in self.inotify.read(timeout=int(timeout_s * 1000)):
            if event.mask & self.lost:  # events lost, or the watch is gone
                self.watched = None
                return None
            if event.name:
                names.add(event.name)
        return names

    def close(self) -> None:
        self.inotify.close()


def folder_changes(folder: Path, flat: bool, mode: str) -> FolderChanges:
    """inotify for ``folder`` where it works (``mode`` "auto"), else polling with the reason."""
    if mode == "poll":
        return Polling("notify: poll")
    if not flat:
        return Polling("a pattern reaches into subfolders")
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        mounts = ""
    kind = file_system_type(folder, mounts)
    if unnotified(kind):
        return Polling(f"{kind} does not report changes made by other machines")
    try:
        import inotify_simple
    except ImportError:
        return Polling("inotify_simple is not installed: pip install 'flowedge[station]'")
    try:
        return Inotify(folder, inotify_simple)
    except OSError as exc:
        return Polling(f"inotify refused: {exc}")
