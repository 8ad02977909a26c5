"""What the OPC UA server shows per source, kept in a file so a restart neither forgets nor
double-counts: the latest result, a bounded history and the counters.

The spool re-sends what the sink had not acknowledged when the station died; the state
file records the last record id it already holds (written, fsynced, before the sink
acknowledges), so a re-sent record is recognised by its id and passed over, and the
counters and the latest result stay right across a SIGKILL.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowedge.edge.passwords import replace_file

log = logging.getLogger(__name__)

COUNTED = {"OK": "ok", "ANOMALY": "anomaly", "ERROR": "error"}


def result_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The result fields of a decision document (what the Result nodes show)."""
    model = doc.get("model") or {}
    evidence = doc.get("evidence") or {}
    return {
        "part_id": doc.get("part_id") or "",
        "decision": doc.get("decision") or "",
        "score": doc.get("score"),
        "threshold": doc.get("threshold"),
        "normalised_score": doc.get("normalised_score"),
        "model_id": model.get("id") or "",
        "decided_utc": doc.get("decided_utc") or "",
        "heatmap": doc.get("heatmap") or "",
        "evidence": evidence.get("input") or "",
        "seq": int(doc.get("seq") or 0),
        "error": doc.get("error") or "",
    }


@dataclass
class SourceResults:
    """One source: counters since the state file was created, latest result, history."""

    counters: dict[str, int] = field(
        default_factory=lambda: {"ok": 0, "anomaly": 0, "error": 0, "samples": 0}
    )
    latest: dict[str, Any] | None = None
    history: deque[str] = field(default_factory=deque)  # newest first, each result as JSON

    def add(self, result: dict[str, Any], history_size: int) -> None:
        self.counters["samples"] += 1
        counter = COUNTED.get(result["decision"])
        if counter:
            self.counters[counter] += 1
        self.latest = result
        self.history.appendleft(json.dumps(result, separators=(",", ":")))
        while len(self.history) > history_size:
            self.history.pop()


class ResultsState:
    """All sources' results and the id of the last record applied; saved atomically."""

    def __init__(self, path: Path, history_size: int) -> None:
        self.path, self.history_size = path, history_size
        self.last_id = 0
        self.sources: dict[str, SourceResults] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            last_id = int(data.get("last_id", 0))
            sources = {
                name: SourceResults(
                    {key: int(saved["counters"][key]) for key in SourceResults().counters},
                    saved.get("latest"),
                    deque(saved.get("history", [])[: self.history_size]),
                )
                for name, saved in data.get("sources", {}).items()
            }
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error(
                "OPC UA: %s is unreadable or damaged (%r); the counters start again at 0 "
                "(the spool still has what was not delivered)",
                self.path,
                exc,
            )
            return
        self.last_id, self.sources = last_id, sources

    def source(self, name: str) -> SourceResults:
        return self.sources.setdefault(name, SourceResults())

    def apply(self, record_id: int, source: str, doc: dict[str, Any]) -> dict[str, Any] | None:
        """The result of a decision record not applied before; None for one already applied."""
        if record_id <= self.last_id:
            return None
        self.last_id = record_id
        result = result_of(doc)
        self.source(source).add(result, self.history_size)
        return result

    def passed(self, record_id: int) -> None:
        """A record with no result (an event) is behind us too."""
        self.last_id = max(self.last_id, record_id)

    def save(self) -> None:
        data = {
            "last_id": self.last_id,
            "sources": {
                name: {"counters": s.counters, "latest": s.latest, "history": list(s.history)}
                for name, s in self.sources.items()
            },
        }
        replace_file(self.path, json.dumps(data, separators=(",", ":")).encode())
