"""Copies of the input files of decided samples (``pipeline.evidence``), with a retention limit.

A file source's file may be deleted or overwritten by the vision system once the
station has answered it; to keep the input as evidence (for review, recalibration,
retraining) the publish stage copies it before the decision is stored, so no sink
(and no PLC) sees a decision whose input is not safe yet. Only inputs that were scored
(OK, ANOMALY) and that are files are copied. Per sensor at most
``pipeline.evidence.keep`` copies and ``keep_mb`` megabytes stay (:mod:`.kept_files`);
the history sink links the ones it keeps into its own store. A copy that fails is an
event; the decision still goes out, without the ``evidence`` field.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from flowedge.core.decision import JUDGED, Decision
from flowedge.edge.config import EvidenceConfig
from flowedge.edge.loop.filenames import safe_file_stem, safe_suffix
from flowedge.edge.loop.kept_files import KeptFiles, stamped_name
from flowedge.edge.loop.sample import Sample

log = logging.getLogger(__name__)

EventSink = Callable[..., None]  # (sensor, kind, message, **details)


class InputKeeper:
    """Used by the publish stage only (one thread): no locking."""

    def __init__(self, cfg: EvidenceConfig, events: EventSink) -> None:
        self.cfg, self.events = cfg, events
        self._kept: dict[str, KeptFiles] = {}

    def wants(self, sample: Sample, decision: Decision) -> bool:
        mode = self.cfg.inputs
        return (
            sample.input_file is not None
            and decision in JUDGED  # not ERROR, not BASELINING
            and (mode == "all" or (mode == "anomalies" and decision == "ANOMALY"))
        )

    def keep(self, sample: Sample) -> str | None:
        """Copy the sample's input file and apply the retention limit; its path, None on failure."""
        assert sample.input_file is not None  # wants() said so
        source = Path(sample.input_file)
        folder = Path(self.cfg.dir) / sample.source
        name = stamped_name(
            sample.captured_utc, safe_file_stem(sample.part_id), safe_suffix(source.name)
        )
        out = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if sample.source not in self._kept:  # first copy since start: count what is there
                self._kept[sample.source] = KeptFiles(folder)
            shutil.copyfile(source, out)  # a full disk raises (OSError)
            self._kept[sample.source].add(out)
        except OSError as exc:
            with contextlib.suppress(OSError):
                out.unlink(missing_ok=True)  # never a half copy
            self.events(
                sample.source,
                "evidence_failed",
                f"input {source} of {sample.source}/{sample.part_id} not copied to {out} "
                f"({exc}); check that pipeline.evidence.dir is writable and has free space",
                part_id=sample.part_id,
            )
            return None
        self._kept[sample.source].prune(self.cfg.keep, self.cfg.keep_mb * 1e6)
        return str(out)
