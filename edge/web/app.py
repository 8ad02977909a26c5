"""What the page's API does: the review queue, history search, reviews, the threshold
re-fit preview and applying it. Reads and writes go through the history's own API
(:mod:`flowedge.history`); a threshold is applied through the station's ``set_threshold``
command (allow-listed in ``commands.allowed``, logged and published as an event)."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowedge.calibration.history.query import HistoryRow, Query, select, utc_bound
from flowedge.calibration.history.review import review
from flowedge.calibration.history.store import opened
from flowedge.core.errors import FlowedgeError
from flowedge.edge.commands import StationCommands
from flowedge.edge.web.refit import Preview, preview
from flowedge.edge.web.users import User

log = logging.getLogger(__name__)

QUEUE_ANOMALIES = 50
SEARCH_LIMIT = 200
SAME = 1e-9  # relative: the applied threshold must be the previewed one


class Refused(Exception):
    """A request the page must answer with an error: (HTTP status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class WebApp:
    history: Path | None
    # the calibration file of the running model, or with recipes of the named recipe's model
    calibration: Callable[[str | None], Path | None]
    status: Callable[[], dict[str, Any]]  # the station's live state (threshold, sources)
    commands: StationCommands
    emit: Callable[..., None]
    evidence_url: Callable[[str | None], str | None]
    ok_sample: int = 10  # unreviewed OKs mixed into the queue (missed defects hide there)

    def _history(self) -> Path:
        if self.history is None:
            raise Refused(409, "no history sink is configured: add sinks: [{kind: history}]")
        return self.history

    def _row(self, row: HistoryRow) -> dict[str, Any]:
        item = row.as_dict()
        item["overlay"] = self.evidence_url(item.pop("heatmap_path"))
        item["input"] = self.evidence_url(item.pop("input_path"))
        return item

    def _select(self, query: Query) -> list[HistoryRow]:
        with opened(self._history()) as db:
            return select(db, query)

    def queue(self) -> list[dict[str, Any]]:
        """Unreviewed anomalies (newest first) and a random sample of unreviewed OKs."""
        anomalies = self._select(Query(decision="ANOMALY", reviewed=False, limit=QUEUE_ANOMALIES))
        oks = (
            self._select(Query(decision="OK", reviewed=False, limit=20 * self.ok_sample))
            if self.ok_sample
            else []
        )
        sample = random.sample(oks, min(self.ok_sample, len(oks)))
        sample.sort(key=lambda r: r.captured_utc, reverse=True)
        return [self._row(r) for r in anomalies[::-1] + sample]

    def search(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        """Decisions by part id, time (ISO 8601, UTC unless an offset is given), source and
        decision; newest first."""
        given = {k: v.strip() or None for k, v in filters.items()}
        try:
            since, until = given.get("since"), given.get("until")
            rows = self._select(
                Query(
                    since=None if since is None else utc_bound(since, "since"),
                    until=None if until is None else utc_bound(until, "until"),
                    part_id=given.get("part_id"),
                    source=given.get("source"),
                    decision=given.get("decision"),
                    limit=SEARCH_LIMIT,
                )
            )
        except FlowedgeError as exc:
            raise Refused(400, str(exc)) from None
        return [self._row(r) for r in rows[::-1]]

    def mark(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        try:
            done = review(
                self._history(),
                str(body.get("verdict")),
                by=user.name,
                note=str(body.get("note") or ""),
                source=str(body.get("source")),
                seq=int(body.get("seq")),  # type: ignore[arg-type]
            )
        except (FlowedgeError, TypeError, ValueError) as exc:
            raise Refused(400, str(exc)) from None
        log.info("web: %s reviewed %s #%d as %s", user.name, done.source, done.seq, done.verdict)
        return {"source": done.source, "seq": done.seq, "verdict": done.verdict}

    def refit(self, recipe: str | None = None) -> dict[str, Any]:
        """The re-fit preview; with recipes, of ``recipe``'s model (one in use: its threshold
        is the one in force), and ``recipes`` lists those in use."""
        status = self.status()
        recipes = status.get("recipes")
        if recipes is None:
            return preview(self.history, self.calibration(None), status.get("threshold")).as_dict()
        shown = {"recipes": sorted(recipes), "recipe": recipe}
        if recipe not in recipes:
            in_use = ", ".join(sorted(recipes)) or "none yet"
            why = f"choose the recipe whose threshold to re-fit (in use: {in_use})"
            return {**Preview(None, None, (), why).as_dict(), **shown}
        running, key = recipes[recipe]["threshold"], f"recipes.models.{recipe}.calibration"
        return {**preview(self.history, self.calibration(recipe), running, key).as_dict(), **shown}

    def apply(self, user: User, body: dict[str, Any]) -> dict[str, Any]:
        """Apply the previewed threshold: engineers and admins only; each try an event."""
        value = body.get("threshold")
        origin = f"web user {user.name} ({user.role})"
        if not user.may_apply:
            message = f"{origin} may not apply thresholds (engineer or admin may)"
            log.error("set_threshold from %s refused: %s", origin, message)
            self.emit(None, "command_refused", message, command="set_threshold", origin=origin)
            raise Refused(403, message)
        recipe = body.get("recipe")
        if recipe is not None and not isinstance(recipe, str):
            raise Refused(400, f"recipe must be a recipe's name, got {recipe!r}")
        proposed = self.refit(recipe)["after"]
        if (
            not isinstance(value, int | float)
            or proposed is None
            or not math.isclose(float(value), proposed, rel_tol=SAME)
        ):
            raise Refused(409, f"the re-fit now gives {proposed}, not {value}: review it again")
        args: dict[str, Any] = {"value": float(value)}
        if recipe is not None:
            args["recipe"] = recipe
        result = self.commands.run("set_threshold", args, origin)
        if not result.accepted:
            raise Refused(409, result.message)
        return {"message": result.message, "threshold": float(value), "recipe": recipe}
