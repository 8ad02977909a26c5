"""The station's ``resend`` command: the fleet historian's signed request for a range of a
sensor's decisions, answered from the history sink's database.

A broker may acknowledge a decision and lose it before saving it (docs/pipeline.md, "What
nothing lost depends on"); the station has deleted it from its spool by then, but its
history keeps every published document. The historian notices the gap in the sensor's
``seq`` and asks for the range; the request is checked
(:class:`flowedge.calibration.history.resend.RequestChecker`: signature, historian, this
station, age, nonce) and the documents go back to the sink that received it, which
publishes them byte for byte on its ``.../decision/resent`` topic. Numbers missing from
the answer are decisions retention forgot or the history never had.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from flowedge.calibration.history.query import documents
from flowedge.calibration.history.resend import RequestChecker
from flowedge.calibration.history.store import HistoryDB
from flowedge.core.errors import DataError
from flowedge.edge.commands import Reply, ResendConfig


class ResendHandler:
    """Checks a request and reads its documents (the handler behind ``commands.run``)."""

    def __init__(self, cfg: ResendConfig, history: Path, site: str, station: str) -> None:
        self.history = history
        self.checker = RequestChecker(
            cfg.secret(), cfg.historian, site, station, cfg.max_age_s, cfg.max_documents
        )

    def __call__(self, args: dict[str, Any], origin: str) -> Reply:
        request = self.checker.check(args)  # ValueError: refused, with the reason
        try:
            with HistoryDB(self.history) as db:
                found = documents(db, request.sensor, request.first, request.last)
        except sqlite3.Error as exc:
            raise DataError(f"history {self.history} cannot be read ({exc})") from None
        wanted = request.last - request.first + 1
        missing = (
            f"; {wanted - len(found)} of them are not in the history {self.history} "
            "(forgotten by retention, or never stored)"
            if len(found) < wanted
            else ""
        )
        return Reply(
            f"re-sending {len(found)} decision(s) of {request.sensor} "
            f"#{request.first}..#{request.last} to historian {request.historian!r}{missing}",
            tuple(found),
        )
