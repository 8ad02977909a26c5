"""The model each sample is scored with: its route, one configured model's live state, and
the router of a station with one model.

A router picks, for each sample, the :class:`Route` it is scored and decided with: the
opened backend, the input spec of that moment (the card's, or the sensor's re-baselined
one) and the model's state (policy, baselines, counters). The preprocess stage asks for
it once per sample, so every later stage uses the model that sample was routed to, even
while another recipe's model loads or the policy is reloaded. A station with one model
routes everything to it (:class:`SingleModel`); one with recipes uses
:class:`flowedge.edge.loop.recipes.Recipes`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from flowedge.backends.base import Backend
from flowedge.core.card import InputSpec, ModelCard
from flowedge.edge.loop.baseline import Baselines, EventSink, check_rebaseline
from flowedge.edge.loop.policy import Policy
from flowedge.edge.models_config import ModelConfig

if TYPE_CHECKING:
    from flowedge.edge.loop.sample import Sample


def _kept() -> None:
    """The release of a backend that stays open for the station's life."""


@dataclass(frozen=True)
class Route:
    """What one sample is scored and decided with."""

    recipe: str | None  # None: the station's one model
    backend: Backend
    spec: InputSpec  # the card's, or the sensor's re-baselined statistics
    state: ModelState
    source: str
    release: Callable[[], None] = _kept  # the sample no longer needs the backend (idempotent)

    @property
    def card(self) -> ModelCard:
        return self.backend.card

    def policy(self) -> Policy:
        """The model's policy now (at decision time: a reload applies from the next one)."""
        return self.state.policy

    def take(self, raw: Any) -> str | None:
        """This usable sample's place in its sensor's baseline, None when it is judged."""
        return self.state.baselines.take(self.source, raw)


class ModelState:
    """One configured model (the station's, or a recipe's): its policy, its baselines per
    sensor and its decision counts, kept while its backend may be closed and reopened."""

    def __init__(
        self,
        label: str,
        recipe: str | None,
        cfg: ModelConfig,
        card: ModelCard,
        policy: Policy,
        emit: EventSink,
    ) -> None:
        check_rebaseline(
            cfg.rebaseline, card, "model" if recipe is None else f"recipes.models.{recipe}"
        )
        self.label, self.recipe, self.cfg, self.card, self.policy = label, recipe, cfg, card, policy
        self.baselines = Baselines(cfg.rebaseline, card.input, label, emit)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def route(
        self, sample: Sample, raw: Any, backend: Backend, release: Callable[[], None] = _kept
    ) -> Route:
        """The route of a sample this model serves (a setpoint step may start a baseline)."""
        self.baselines.observe(sample.source, raw, sample.t_captured)
        return self.current(sample.source, backend, release)

    def current(self, source: str, backend: Backend, release: Callable[[], None] = _kept) -> Route:
        return Route(self.recipe, backend, self.baselines.spec(source), self, source, release)

    def count(self, decision: str) -> None:
        with self._lock:
            self._counts[decision] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Router(Protocol):
    """How the loop asks for each sample's model; the loop knows no more about recipes."""

    def stamp(self, sample: Sample) -> None:
        """At capture: what must be read when the sample is taken (the recipe in force)."""

    def route(self, sample: Sample, raw: Any) -> Route:
        """At preprocessing: the sample's route (may wait for a model to load); BadInputError
        when the sample has no usable model (its ERROR, with the reason)."""

    def peek(self, sample: Sample) -> Route | None:
        """The route of a sample refused before routing, when one is at hand without waiting."""

    def status(self) -> dict[str, Any]:
        """Fields for the retained status message."""

    def close(self) -> None: ...


class SingleModel:
    """Every sample to the station's one model (``model``)."""

    def __init__(self, cfg: ModelConfig, backend: Backend, policy: Policy, emit: EventSink) -> None:
        self.backend = backend
        self.state = ModelState("model", None, cfg, backend.card, policy, emit)
        self._serving: set[str] = set()

    @property
    def policy(self) -> Policy:
        return self.state.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.state.policy = policy

    def stamp(self, sample: Sample) -> None:
        return None

    def route(self, sample: Sample, raw: Any) -> Route:
        if sample.source not in self._serving:
            self._serving.add(sample.source)
            self.state.baselines.activated(sample.source, "station start", True, sample.t_captured)
        return self.state.route(sample, raw, self.backend)

    def peek(self, sample: Sample) -> Route:
        return self.state.current(sample.source, self.backend)

    def status(self) -> dict[str, Any]:
        return {"model_id": self.backend.card.model_id, "threshold": self.policy.threshold}

    def close(self) -> None:
        """The station closes its backend itself."""
