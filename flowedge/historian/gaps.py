"""Which decisions are missing, and when to ask a station for them.

Each sensor numbers its decisions 1, 2, 3, ... and never reuses a number, so whatever is
missing below the highest stored number is a gap: decisions the broker acknowledged to
the station and lost (mosquitto saves its queue only every ``autosave_interval``). A gap
is asked for once it is ``gap_wait_s`` old (after a reconnect, messages may arrive out
of order and fill it by themselves), in ranges of at most ``max_documents``, the lowest
first, again after ``retry_s`` (doubling up to ``max_retry_s``) while it stays open; after
``attempts`` requests a range is given up and logged as lost (retention may have deleted
it from the station's history). A sensor that has sent nothing for ``idle_probe_s`` is
asked for what follows its last decision, which is how a lost *last* decision is found:
no later number shows that gap.

Only numbers are tracked here; the store says where a sensor stands when the historian
starts (:meth:`flowedge.historian.store.Store.known`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from flowedge.historian.config import ResendRequests
from flowedge.historian.rows import Key

log = logging.getLogger(__name__)


@dataclass
class Gap:
    first: int
    last: int
    since: float  # when it was noticed
    asked_to: int = 0  # the highest number asked for so far (0: never asked)
    attempts: int = 0
    next_ask: float = 0.0


@dataclass(frozen=True)
class Ask:
    stream: Key
    first: int
    last: int
    probe: bool  # after the last decision (nothing known to be missing)


@dataclass
class Stream:
    highest: int
    last_arrival: float
    gaps: list[Gap] = field(default_factory=list)  # ascending, disjoint
    probe_wait: float = 0.0
    next_probe: float = 0.0


class GapTracker:
    def __init__(self, cfg: ResendRequests) -> None:
        self.cfg = cfg
        self.streams: dict[Key, Stream] = {}
        self.lost = 0  # decisions given up on

    def start(self, stream: Key, highest: int, gaps: list[tuple[int, int]], now: float) -> None:
        """Where a sensor stands in the table when the historian first hears of it."""
        state = Stream(highest, now, [Gap(first, last, now) for first, last in gaps])
        self._idle_from(state, now)
        self.streams[stream] = state

    def open_gaps(self) -> int:
        return sum(len(state.gaps) for state in self.streams.values())

    def missing(self) -> int:
        return sum(g.last - g.first + 1 for s in self.streams.values() for g in s.gaps)

    def seen(self, stream: Key, seq: int, now: float) -> None:
        """Decision ``seq`` of ``stream`` is in the table."""
        state = self.streams[stream]
        if seq > state.highest:
            if seq > state.highest + 1:
                state.gaps.append(Gap(state.highest + 1, seq - 1, now))
            state.highest = seq
            state.last_arrival = now
            self._idle_from(state, now)
            return
        for index, gap in enumerate(state.gaps):
            if gap.first <= seq <= gap.last:
                state.gaps[index : index + 1] = self._split(gap, seq)
                return

    def _split(self, gap: Gap, seq: int) -> list[Gap]:
        """What stays open of ``gap`` once ``seq`` arrived. A part that was never asked for
        is asked for as soon as it is due, not after the retry wait."""
        parts = []
        if gap.first < seq:
            asked_to = min(gap.asked_to, seq - 1)
            parts.append(Gap(gap.first, seq - 1, gap.since, asked_to, gap.attempts, gap.next_ask))
        if seq < gap.last:
            asked = gap.asked_to > seq
            parts.append(
                Gap(
                    seq + 1,
                    gap.last,
                    gap.since,
                    gap.asked_to if asked else 0,
                    gap.attempts if asked else 0,
                    gap.next_ask if asked else 0.0,
                )
            )
        return parts

    def _idle_from(self, state: Stream, now: float) -> None:
        state.probe_wait = self.cfg.idle_probe_s
        state.next_probe = now + self.cfg.idle_probe_s

    def _retry(self, attempts: int) -> float:
        return min(self.cfg.retry_s * 2 ** (attempts - 1), self.cfg.max_retry_s)

    def due(self, now: float) -> Iterator[Ask]:
        """The requests to send now: per sensor its lowest due gap, or a probe when idle."""
        cfg = self.cfg
        for stream, state in self.streams.items():
            gap = next(
                (g for g in state.gaps if now - g.since >= cfg.gap_wait_s and now >= g.next_ask),
                None,
            )
            if gap is not None and gap.attempts >= cfg.attempts:
                self._give_up(stream, state, gap, now)
                continue
            if gap is not None:
                last = min(gap.last, gap.first + cfg.max_documents - 1)
                gap.asked_to, gap.attempts = last, gap.attempts + 1
                gap.next_ask = now + self._retry(gap.attempts)
                yield Ask(stream, gap.first, last, probe=False)
            elif now >= state.next_probe:
                state.next_probe = now + state.probe_wait
                state.probe_wait = min(state.probe_wait * 2, cfg.max_retry_s)
                yield Ask(stream, state.highest + 1, state.highest + cfg.max_documents, probe=True)

    def _give_up(self, stream: Key, state: Stream, gap: Gap, now: float) -> None:
        """The asked range stays missing: log it as lost, go on with the rest of the gap."""
        last = gap.asked_to
        self.lost += last - gap.first + 1
        log.error(
            "historian: %s #%d..#%d given up after %d requests: the station's history does not "
            "have them (retention), or the station does not answer (commands.resend); they "
            "are missing from the table",
            "/".join(stream),
            gap.first,
            last,
            gap.attempts,
        )
        index = state.gaps.index(gap)
        rest = [Gap(last + 1, gap.last, now)] if last < gap.last else []
        state.gaps[index : index + 1] = rest
