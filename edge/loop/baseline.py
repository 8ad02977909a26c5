"""Changeover re-baselining in the station: which samples form a baseline, and what it gives.

After a changeover of one sensor (the station's start, a recipe switch, a step of a
configured setpoint) the first samples of that sensor are decided ``BASELINING``: their
raw form is kept until the window is full (``samples``), or until the first sample
after ``seconds``, and then the modality re-estimates the input statistics from them
(:meth:`flowedge.modalities.base.Modality.rebaseline`). The sensor's later samples are
standardised with those; the model's weights, threshold and calibration stay. A
baseline the modality refuses (far outside what training saw: a broken state must not
become the new normal) is an error event, and the sensor goes on with the model's own
statistics until the next changeover. Used by the preprocess thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowedge.core.card import InputSpec, ModelCard
from flowedge.core.errors import BadInputError, ConfigError
from flowedge.edge.models_config import RebaselineConfig
from flowedge.modalities import get_modality
from flowedge.modalities.baseline import MIN_SAMPLES, BaselineRefused

log = logging.getLogger(__name__)

EventSink = Callable[..., None]  # (sensor, kind, message, **details)


def check_rebaseline(cfg: RebaselineConfig | None, card: ModelCard, key: str) -> None:
    """ConfigError naming ``key`` (the model's config section) when its ``rebaseline`` does
    not fit the model: set for a modality that cannot re-baseline, or missing (or without
    the start and the spread the model was trained with) for a model trained per run,
    whose inputs are right only once standardised with their own run's statistics."""
    kind = card.input.kind
    if cfg is not None and not get_modality(kind).rebaselines:
        raise ConfigError(
            f"{key}.rebaseline: {kind} models cannot re-baseline their input statistics; remove it"
        )
    runs = card.trained_per_run
    if runs and (cfg is None or not cfg.on_start or not cfg.spread):
        raise ConfigError(
            f"{key}: model {card.model_id} was trained per run ({len(runs)} runs, each "
            "standardised with its own statistics: flowedge train --per-run), so it judges "
            f"right only after a re-baseline; give {key} a rebaseline: section (samples or "
            "seconds) with on_start and spread left true"
        )


@dataclass
class _Window:
    """The samples of one sensor since its changeover."""

    reason: str
    started: float  # perf_counter of the changeover's first sample
    raws: list[Any] = field(default_factory=list)


class Baselines:
    """One model's input statistics per sensor: the card's, or those of the sensor's last
    accepted baseline; and the window collecting after a changeover."""

    def __init__(
        self, cfg: RebaselineConfig | None, trained: InputSpec, label: str, emit: EventSink
    ) -> None:
        self.cfg, self.trained, self.label, self.emit = cfg, trained, label, emit
        self.modality = get_modality(trained.kind)
        self._specs: dict[str, InputSpec] = {}
        self._windows: dict[str, _Window] = {}
        self._setpoints: dict[str, float] = {}

    def spec(self, source: str) -> InputSpec:
        return self._specs.get(source, self.trained)

    def activated(self, source: str, reason: str, at_start: bool, now: float) -> None:
        """The model now serves ``source`` (its first sample since start, or a recipe switch)."""
        self._setpoints.pop(source, None)
        if self.cfg is not None and (self.cfg.on_start or not at_start):
            self._changeover(source, reason, now)

    def observe(self, source: str, raw: Any, now: float) -> None:
        """Before routing a sample: a setpoint step starts a window, an elapsed one closes."""
        if self.cfg is None:
            return
        setpoint = self.cfg.setpoint
        if setpoint is not None:
            value = self.modality.sample_value(raw, setpoint.value)
            if value is None:
                raise BadInputError(
                    f"{self.label}: {self.trained.kind} samples carry no value "
                    f"{setpoint.value!r}; remove rebaseline.setpoint"
                )
            last = self._setpoints.get(source)
            self._setpoints[source] = value
            if last is not None and abs(value - last) > setpoint.step:
                self._changeover(source, f"{setpoint.value} {last:g} -> {value:g}", now)
        window, seconds = self._windows.get(source), self.cfg.seconds
        if window is None or seconds is None:
            return
        if now - window.started >= seconds and len(window.raws) >= MIN_SAMPLES:
            self._close(source)

    def take(self, source: str, raw: Any) -> str | None:
        """A usable sample of ``source``: its place in the baseline ("3/20"), None when it is
        judged (no window open)."""
        window = self._windows.get(source)
        if window is None or self.cfg is None:
            return None
        window.raws.append(raw)
        count = len(window.raws)
        if self.cfg.samples is not None:
            if count >= self.cfg.samples:
                self._close(source)
            return f"{count}/{self.cfg.samples}"
        return f"{count} in {self.cfg.seconds:g} s"

    def _changeover(self, source: str, reason: str, now: float) -> None:
        assert self.cfg is not None
        self._windows[source] = _Window(reason, now)
        size = (
            f"{self.cfg.samples} samples"
            if self.cfg.samples is not None
            else f"the samples of {self.cfg.seconds:g} s"
        )
        self.emit(
            source,
            "baseline_started",
            f"{self.label}: changeover on {source} ({reason}): {size} re-estimate the input "
            "statistics; their decisions are BASELINING",
            reason=reason,
            recipe=self.label,
        )

    def _close(self, source: str) -> None:
        """The window is complete: its statistics, or the model's own when refused."""
        assert self.cfg is not None
        window = self._windows.pop(source)
        try:
            spec = self.modality.rebaseline(window.raws, self.trained, self.cfg.rules())
        except Exception as exc:  # refused, or a modality's bug: never the loop's end
            if not isinstance(exc, BaselineRefused | BadInputError):
                log.exception("%s: re-baselining %s failed", self.label, source)
            self._specs.pop(source, None)
            self.emit(
                source,
                "baseline_refused",
                f"{self.label}: baseline of {source} after {window.reason} refused: {exc}",
                reason=window.reason,
                samples=len(window.raws),
                recipe=self.label,
            )
            return
        self._specs[source] = spec
        self.emit(
            source,
            "rebaselined",
            f"{self.label}: {source} standardised with the statistics of its {len(window.raws)} "
            f"samples after {window.reason}",
            reason=window.reason,
            samples=len(window.raws),
            recipe=self.label,
        )
