"""What a station runs: one model (``model``) or one model per recipe (``recipes``), each
optionally re-baselined after a changeover (``rebaseline``).

A recipe (a product, a robot program, a pump setpoint) is read from where the line says
it: an MQTT topic the PLC publishes on the station's broker, the ``set_recipe`` command a
sink passes on (an OPC UA node, through its sink), a log column, a field of the sample's
context (an audio motion's label) or the file name. Each selector kind is one config model
told apart by ``by``; the runtime is :mod:`flowedge.edge.loop.recipes`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from flowedge.backends.base import Tuning
from flowedge.core.backend_table import check_backend_choice
from flowedge.core.broker import MqttString
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import DAY_S, MAX_QUEUE, MAX_THREADS, Strict
from flowedge.modalities.baseline import MIN_SAMPLES, BaselineRules

# what a PLC may call a recipe: printable text (also a metric label and a message field)
RecipeName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class SetpointConfig(Strict):
    """A step of a value the samples carry (series: a log column constant over each cycle)."""

    value: str = Field(min_length=1, description="the samples' value (series: a log column)")
    step: float = Field(gt=0, description="a change larger than this is a changeover")


class RebaselineConfig(Strict):
    """After a changeover, the first samples re-estimate the model's input standardisation
    (series: per-signal mean and std; audio: the dB level); the weights stay. Their
    decisions are BASELINING. A baseline outside ``max_shift``/``max_scale`` of the training
    statistics is refused (an event): the model's own standardisation stays in force."""

    samples: int | None = Field(
        None, ge=MIN_SAMPLES, le=MAX_QUEUE, description="the first N samples"
    )
    seconds: float | None = Field(
        None, gt=0, le=DAY_S, description="the samples of the first T seconds"
    )
    on_start: bool = Field(True, description="the station's start is a changeover too")
    setpoint: SetpointConfig | None = None  # a step of it is a changeover (beside a recipe switch)
    max_shift: float = Field(3.0, gt=0, description="level moved at most this many training std")
    max_scale: float = Field(10.0, gt=1, description="spread at most this factor off training's")
    spread: bool = Field(
        True,
        description="series: re-estimate the spread (std) too; false: the level only, the "
        "training spread stays (slow signals such as temperatures, whose spread a short window "
        "hides); audio always re-estimates the level only",
    )

    @model_validator(mode="after")
    def _one_window(self) -> RebaselineConfig:
        if (self.samples is None) == (self.seconds is None):
            raise ValueError("give the baseline window as either samples or seconds")
        return self

    def rules(self) -> BaselineRules:
        return BaselineRules(self.max_shift, self.max_scale, self.spread)


class ModelConfig(Strict):
    # A checkpoint directory (weights.safetensors + card.json), an .onnx file or a TensorRT .engine
    path: BoundedPath = Path("runs/demo/model")
    backend: Annotated[str, AfterValidator(check_backend_choice)] = "auto"  # auto: by path
    device: str = (
        "cpu"  # torch: cpu | cuda[:N]; onnxruntime: cpu | cuda; openvino: cpu|gpu|npu|auto
    )
    # calibration.json bound to the model; overrides threshold
    calibration: BoundedPath | None = None
    threshold: float | None = None  # used when no calibration file is given (finite)
    intra_op_threads: int = Field(0, ge=0, le=MAX_THREADS, description="0: the backend's default")
    # OpenVINO only (other backends refuse them): NUM_STREAMS and PERFORMANCE_HINT
    streams: int = Field(0, ge=0, le=MAX_THREADS, description="0: the backend's default")
    performance_hint: Literal["latency", "throughput"] | None = None  # None: the backend's default
    rebaseline: RebaselineConfig | None = None  # None: the card's statistics, always

    @property
    def opened_as(self) -> tuple[str, str, str, int, Tuning]:
        """What identifies an opened backend: recipes naming the same share it."""
        return (str(self.path), self.backend, self.device, self.intra_op_threads, self.tuning)

    @property
    def tuning(self) -> Tuning:
        """The runtime knobs beyond threads, as the backends take them."""
        return Tuning(self.streams, self.performance_hint or "")


class AnnouncedRecipe(Strict):
    """The recipe in force is the last one announced; each sample gets the one in force
    when it was captured."""

    initial: RecipeName | None = Field(
        None, description="in force until the first announcement; None: those samples are ERROR"
    )


class MqttRecipe(AnnouncedRecipe):
    """The PLC publishes the recipe's name (text, or JSON {"recipe": name}) on a topic of
    the station's broker, best retained, before the first part of it."""

    by: Literal["mqtt"] = "mqtt"
    topic: Annotated[MqttString, Field(min_length=1)]
    qos: Literal[0, 1] = 1


class CommandRecipe(AnnouncedRecipe):
    """A sink announces it through the ``set_recipe`` command (``commands.allowed`` must name
    it): an OPC UA node watched by its sink, a historian."""

    by: Literal["command"] = "command"


class ColumnRecipe(Strict):
    """A value the sample carries (series: a log column constant over the cycle, such as
    the robot's program number); numbers name recipes without ".0" (program 3 is "3")."""

    by: Literal["column"] = "column"
    column: str = Field(min_length=1)


class ContextRecipe(Strict):
    """A field of what the source says about the sample, by dotted path (an audio motion's
    label: ``event.label``)."""

    by: Literal["context"] = "context"
    field: str = Field("event.label", min_length=1)


def _recipe_group(pattern: str) -> str:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc})") from None
    if "recipe" not in compiled.groupindex:
        raise ValueError("needs a named group (?P<recipe>...) that captures the recipe")
    return pattern


class FileNameRecipe(Strict):
    """The part id (a file source's file name) matched by a regular expression whose group
    ``recipe`` is the recipe, e.g. ``^(?P<recipe>[A-Z0-9]+)_``."""

    by: Literal["filename"] = "filename"
    pattern: Annotated[str, AfterValidator(_recipe_group)]


RecipeSelector = Annotated[
    Union[MqttRecipe, CommandRecipe, ColumnRecipe, ContextRecipe, FileNameRecipe],  # noqa: UP007
    Field(discriminator="by"),
]


class RecipesConfig(Strict):
    """One model per recipe: each with its own threshold, calibration, drift, counters and
    (optionally) re-baselining; models load in the background when a recipe first comes."""

    select: RecipeSelector
    models: dict[RecipeName, ModelConfig] = Field(min_length=1)
    max_loaded: int = Field(
        4, ge=1, le=MAX_THREADS, description="opened models kept; the least recent closes"
    )

    @model_validator(mode="after")
    def _initial_known(self) -> RecipesConfig:
        initial = getattr(self.select, "initial", None)
        if initial is not None and initial not in self.models:
            raise ValueError(
                f"select.initial {initial!r} is not one of the recipes ({', '.join(self.models)})"
            )
        return self
