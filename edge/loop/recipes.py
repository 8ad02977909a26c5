"""Recipes: one model per recipe, each sample routed to its recipe's model.

The selector (``recipes.select.by``) says which recipe a sample belongs to. An announced
recipe (``mqtt``: the PLC's topic; ``command``: the ``set_recipe`` command a sink passes
on, e.g. from an OPC UA node) is read when the sample is captured, so a sample taken
before the announcement stays with the recipe before it however long it queues; the
others (``column``, ``context``, ``filename``) are read from the sample itself.

Models load on a background thread (:class:`ModelCache`): an announcement starts loading
at once; a sample whose model is still loading waits for it in the preprocess stage
(capture goes on into the source's queue, nothing is lost), and no sample is ever scored
by another recipe's model. How long the first sample of a new recipe waited is the
switch time (the ``recipe_switched`` event, ``flowedge_recipe_switch_seconds``). A sample
whose recipe has no model (unknown, none announced, a model that cannot be opened) is
that sample's ``ERROR`` with the reason. Each recipe keeps its own policy (threshold,
calibration, drift), baselines and counts; recipes naming the same model file share one
opened backend; at most ``max_loaded`` stay open (the least recently used one closes
once no sample in flight needs it).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flowedge.backends import open_backend
from flowedge.backends.base import Backend
from flowedge.core.broker import MQTTConfig
from flowedge.core.errors import BadInputError, ConfigError, FlowedgeError
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.loop.baseline import EventSink
from flowedge.edge.loop.models import ModelState, Route
from flowedge.edge.loop.policy import load_policy
from flowedge.edge.loop.sample import Sample
from flowedge.edge.metrics import Metrics
from flowedge.edge.models_config import (
    AnnouncedRecipe,
    ColumnRecipe,
    ContextRecipe,
    FileNameRecipe,
    ModelConfig,
    MqttRecipe,
)
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)

Opener = Callable[[ModelConfig], Backend]


def open_model(cfg: ModelConfig) -> Backend:
    return open_backend(cfg.path, cfg.backend, cfg.device, cfg.intra_op_threads, cfg.tuning)


# --- selectors: which recipe a sample belongs to ---------------------------------------


class Announced:
    """The recipe in force is the last one announced (``by: command``)."""

    at_capture = True

    def __init__(self, cfg: AnnouncedRecipe, where: str) -> None:
        self.where = where  # how the recipe is announced, for messages
        self._current = cfg.initial
        self._lock = threading.Lock()
        self.on_announce: Callable[[str], None] = lambda recipe: None

    def announce(self, recipe: str, origin: str) -> None:
        with self._lock:
            previous, self._current = self._current, recipe
        if previous != recipe:
            log.info("recipe %s announced by %s (was %s)", recipe, origin, previous)
            self.on_announce(recipe)

    def current(self) -> str | None:
        with self._lock:
            return self._current

    def recipe(self, sample: Sample, raw: Any) -> str:
        if sample.recipe is None:
            raise BadInputError(
                f"{sample.source}/{sample.part_id}: no recipe was announced when it was "
                f"captured ({self.where}); announce the recipe before the first part, or set "
                "recipes.select.initial"
            )
        return sample.recipe

    def close(self) -> None:
        return None


def parse_announcement(payload: bytes) -> str:
    """A recipe's name from a message: text, or JSON ``{"recipe": name}``."""
    text = payload.decode("utf-8", "strict").strip()
    if text.startswith("{"):
        value = json.loads(text).get("recipe")
        if not isinstance(value, str):
            raise ValueError('JSON announcements need {"recipe": "<name>"}')
        text = value.strip()
    if not text or len(text) > 64 or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("a recipe name is 1 to 64 printable characters")
    return text


class MqttAnnounced(Announced):
    """The recipe the PLC publishes on a topic of the station's broker (``by: mqtt``)."""

    def __init__(self, cfg: MqttRecipe, broker: MQTTConfig) -> None:
        super().__init__(cfg, f"topic {cfg.topic}")
        import paho.mqtt.client as mqtt

        from flowedge.core.broker import new_client

        self.topic, self.qos = cfg.topic, cfg.qos
        protocol = mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311
        self.client = new_client(broker, f"{broker.client_id or 'flowedge'}-recipe", protocol)
        self.client.on_connect = lambda client, *_: client.subscribe(self.topic, qos=self.qos)
        self.client.on_message = self._message
        self.client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)
        self.client.connect_async(broker.host, broker.port, broker.keepalive_s)
        self.client.loop_start()

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            recipe = parse_announcement(message.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("recipe topic %s: %s; message ignored", message.topic, exc)
            return
        self.announce(recipe, f"topic {message.topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def recipe_name(value: Any) -> str:
    """A sample's value as a recipe name: numbers without a trailing ".0" (program 3 is "3")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FromColumn:
    """A value the sample carries (``by: column``)."""

    at_capture = False

    def __init__(self, cfg: ColumnRecipe) -> None:
        self.column = cfg.column

    def recipe(self, sample: Sample, raw: Any) -> str:
        value = get_modality(sample.modality).sample_value(raw, self.column)
        if value is None:
            raise BadInputError(
                f"{sample.source}/{sample.part_id}: {sample.modality} samples carry no column "
                f"{self.column!r}; choose another recipes.select.by"
            )
        return recipe_name(value)

    def close(self) -> None:
        return None


class FromContext:
    """A field of what the source says about the sample (``by: context``)."""

    at_capture = False

    def __init__(self, cfg: ContextRecipe) -> None:
        self.path = cfg.field.split(".")

    def recipe(self, sample: Sample, raw: Any) -> str:
        value: Any = sample.context or {}
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None or isinstance(value, dict | list):
            raise BadInputError(
                f"{sample.source}/{sample.part_id}: the source gives no "
                f"{'.'.join(self.path)!r} to read the recipe from; check recipes.select.field"
            )
        return recipe_name(value)

    def close(self) -> None:
        return None


class FromFileName:
    """The part id matched by a pattern with a group ``recipe`` (``by: filename``)."""

    at_capture = False

    def __init__(self, cfg: FileNameRecipe) -> None:
        self.pattern = re.compile(cfg.pattern)

    def recipe(self, sample: Sample, raw: Any) -> str:
        match = self.pattern.search(sample.part_id)
        if match is None or not match.group("recipe"):
            raise BadInputError(
                f"{sample.source}/{sample.part_id}: the name does not match "
                f"recipes.select.pattern {self.pattern.pattern!r}, so its recipe is unknown"
            )
        return match.group("recipe")

    def close(self) -> None:
        return None


Selector = Announced | FromColumn | FromContext | FromFileName


def make_selector(select: Any, broker: MQTTConfig | None) -> Selector:
    """The selector ``recipes.select`` describes (``broker``: the station's, for ``mqtt``)."""
    if isinstance(select, MqttRecipe):
        if broker is None:
            raise ConfigError("recipes.select.by mqtt needs the station's mqtt section")
        return MqttAnnounced(select, broker)
    if isinstance(select, AnnouncedRecipe):
        return Announced(select, "the set_recipe command")
    if isinstance(select, ColumnRecipe):
        return FromColumn(select)
    if isinstance(select, ContextRecipe):
        return FromContext(select)
    return FromFileName(select)


# --- the models, opened in the background ------------------------------------------------


@dataclass
class _Opened:
    future: Future[Backend]
    users: int = 0  # samples in flight holding it: it is not closed under them
    load_s: float | None = None  # how long opening took, once done


class ModelCache:
    """Opened backends by what identifies them, opened on a background thread."""

    def __init__(self, opener: Opener, max_loaded: int, loaded: Callable[[int], None]) -> None:
        self.opener, self.max_loaded, self.loaded = opener, max_loaded, loaded
        self._entries: OrderedDict[tuple[str, str, str, int], _Opened] = OrderedDict()
        self._lock = threading.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")

    def _entry(self, cfg: ModelConfig) -> _Opened:
        """The entry of ``cfg``, its loading started if needed (hold the lock)."""
        key = cfg.opened_as
        entry = self._entries.get(key)
        if entry is None:
            entry = _Opened(self._loader.submit(self._open, cfg))
            self._entries[key] = entry
        self._entries.move_to_end(key)
        return entry

    def _open(self, cfg: ModelConfig) -> Backend:
        started = time.perf_counter()
        backend = self.opener(cfg)
        with self._lock:
            entry = self._entries.get(cfg.opened_as)
            if entry is not None:
                entry.load_s = time.perf_counter() - started
        return backend

    def prefetch(self, cfg: ModelConfig) -> None:
        """Start opening ``cfg`` now (an announcement: its samples will come)."""
        with self._lock:
            self._entry(cfg)

    def is_open(self, cfg: ModelConfig) -> bool:
        with self._lock:
            entry = self._entries.get(cfg.opened_as)
            return entry is not None and entry.future.done() and entry.future.exception() is None

    def acquire(self, cfg: ModelConfig) -> tuple[Backend, float | None, Callable[[], None]]:
        """(the opened backend, how long opening took, its release); waits while it opens.
        A model that cannot be opened raises its FlowedgeError (the next sample tries again)."""
        with self._lock:
            entry = self._entry(cfg)
            entry.users += 1
        try:
            backend = entry.future.result()
        except BaseException:
            with self._lock:
                entry.users -= 1
                if self._entries.get(cfg.opened_as) is entry:
                    del self._entries[cfg.opened_as]
            raise
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                with self._lock:
                    entry.users -= 1
                self._evict()

        self._evict()
        return backend, entry.load_s, release

    def _evict(self) -> None:
        """Close the least recently used idle backends over ``max_loaded``."""
        closing = []
        with self._lock:
            opened = [k for k, e in self._entries.items() if e.future.done()]
            extra = len(opened) - self.max_loaded
            for key in opened:
                entry = self._entries[key]
                if extra > 0 and entry.users == 0 and key != next(reversed(self._entries)):
                    closing.append(self._entries.pop(key))
                    extra -= 1
            count = sum(1 for e in self._entries.values() if e.future.done())
        for entry in closing:
            self._close(entry)
        self.loaded(count)

    @staticmethod
    def _close(entry: _Opened) -> None:
        try:
            if entry.future.exception() is None:
                entry.future.result().close()
        except Exception:  # closing a runtime must not take the loop down
            log.exception("closing a model failed")

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            entries, self._entries = list(self._entries.values()), OrderedDict()
        for entry in entries:
            if not entry.future.cancelled():
                self._close(entry)


# --- the router ---------------------------------------------------------------------------


class Recipes:
    """Each sample to its recipe's model (``recipes``)."""

    def __init__(
        self,
        cfg: FlowedgeConfig,
        emit: EventSink,
        metrics: Metrics,
        opener: Opener = open_model,
    ) -> None:
        assert cfg.recipes is not None
        self.cfg, self.recipes, self.emit, self.metrics = cfg, cfg.recipes, emit, metrics
        self.cache = ModelCache(opener, self.recipes.max_loaded, metrics.models_loaded.set)
        self.selector = make_selector(self.recipes.select, cfg.mqtt)
        if isinstance(self.selector, Announced):
            self.selector.on_announce = self._announced
            initial = self.selector.current()
            if initial is not None:
                self._announced(initial)
        self.states: dict[str, ModelState] = {}
        self._embedded: dict[str, dict[str, Any] | None] = {}  # calibrations in the model files
        self._serving: dict[str, str] = {}  # sensor -> the recipe of its last routed sample
        self._lock = threading.Lock()  # states and _serving grow on the preprocess thread

    def _announced(self, recipe: str) -> None:
        model = self.recipes.models.get(recipe)
        if model is not None:
            self.cache.prefetch(model)

    def announce(self, recipe: str, origin: str) -> str:
        """The ``set_recipe`` command (``by: command``): in force for samples captured from now."""
        if not isinstance(self.selector, Announced) or isinstance(self.selector, MqttAnnounced):
            raise ValueError("recipes.select.by is not 'command': recipes are not set by command")
        self.selector.announce(recipe, origin)
        if recipe not in self.recipes.models:
            return f"recipe {recipe} in force, but it has no model: its samples are ERROR"
        return f"recipe {recipe} in force for the samples captured from now"

    def stamp(self, sample: Sample) -> None:
        if isinstance(self.selector, Announced):
            sample.recipe = self.selector.current()

    def route(self, sample: Sample, raw: Any) -> Route:
        recipe = self.selector.recipe(sample, raw)
        sample.recipe = recipe
        model = self.recipes.models.get(recipe)
        if model is None:
            raise BadInputError(
                f"{sample.source}/{sample.part_id}: recipe {recipe!r} has no model (configured: "
                f"{', '.join(self.recipes.models)}); add it under recipes.models or check what "
                "names the recipe"
            )
        waited = time.perf_counter()
        try:
            backend, load_s, release = self.cache.acquire(model)
        except FlowedgeError as exc:
            raise BadInputError(f"recipe {recipe}: its model cannot be used ({exc})") from None
        waited = time.perf_counter() - waited
        try:
            state = self._state(recipe, model, backend)
            self._switch(sample, recipe, state, waited, load_s)
            return state.route(sample, raw, backend, release)
        except BaseException:
            release()
            raise

    def _state(self, recipe: str, model: ModelConfig, backend: Backend) -> ModelState:
        state = self.states.get(recipe)
        if state is None:
            key = f"recipes.models.{recipe}"
            try:
                policy = load_policy(self.cfg, backend.card, backend.calibration, model, key)
                state = ModelState(recipe, recipe, model, backend.card, policy, self.emit)
            except FlowedgeError as exc:
                raise BadInputError(f"recipe {recipe}: {exc}") from None
            with self._lock:
                self.states[recipe], self._embedded[recipe] = state, backend.calibration
        return state

    def _switch(
        self, sample: Sample, recipe: str, state: ModelState, waited: float, load_s: float | None
    ) -> None:
        previous = self._serving.get(sample.source)
        if previous == recipe:
            return
        with self._lock:
            self._serving[sample.source] = recipe
        self.metrics.recipe_switch_seconds.observe(waited)
        self.emit(
            sample.source,
            "recipe_switched",
            f"{sample.source}: recipe {previous or '(none)'} -> {recipe} (model "
            f"{state.card.model_id}; the first sample waited {waited * 1000:.0f} ms)",
            previous=previous,
            recipe=recipe,
            model_id=state.card.model_id,
            waited_s=round(waited, 6),
            load_s=None if load_s is None else round(load_s, 6),
        )
        reason = "station start" if previous is None else f"recipe switch from {previous}"
        state.baselines.activated(sample.source, reason, previous is None, sample.t_captured)

    def peek(self, sample: Sample) -> Route | None:
        """Only a loaded recipe's route: a refused sample never waits for a model."""
        recipe = sample.recipe
        model = self.recipes.models.get(recipe) if recipe is not None else None
        state = self.states.get(recipe) if recipe is not None else None
        if model is None or state is None or not self.cache.is_open(model):
            return None
        try:
            backend, _, release = self.cache.acquire(model)
        except FlowedgeError:
            return None
        return state.current(sample.source, backend, release)

    def reload(self, cfg: FlowedgeConfig) -> list[str]:
        """SIGHUP: every recipe's threshold and calibration from ``cfg`` (a loaded one's policy
        now, all or none; the others when they load). Returns what needs a restart."""
        if cfg.recipes is None:
            return ["recipes were removed: restart to run one model"]
        models, problems = dict(self.recipes.models), []
        for name, new in cfg.recipes.models.items():
            if name not in models:
                problems.append(f"recipe {name} is new: restart to add it")
                continue
            update = {"threshold": new.threshold, "calibration": new.calibration}
            models[name] = models[name].model_copy(update=update)
        problems += [
            f"recipe {name} was removed: restart" for name in set(models) - set(cfg.recipes.models)
        ]
        policies = {
            name: load_policy(
                cfg, state.card, self._embedded[name], models[name], f"recipes.models.{name}"
            )
            for name, state in self.states.items()
        }
        for name, policy in policies.items():
            self.states[name].policy = policy
        self.recipes = self.recipes.model_copy(update={"models": models})
        return problems

    def status(self) -> dict[str, Any]:
        with self._lock:
            states, serving = dict(self.states), dict(self._serving)
        return {
            "recipes": {
                name: {
                    "model_id": state.card.model_id,
                    "threshold": state.policy.threshold,
                    "counts": state.counts(),
                }
                for name, state in states.items()
            },
            "recipe_in_force": serving,
        }

    def close(self) -> None:
        self.selector.close()
        self.cache.close()
