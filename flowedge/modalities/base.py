"""What every modality (image, audio, series, or one registered later) provides, so nothing
else knows which it is.

Training, evaluation, calibration, export checks and the station all go through
these methods with the spec from the model card; a new modality is one module
implementing them plus one :func:`flowedge.modalities.register_modality` line.

A modality is generic over its raw sample (a decoded image, a clip, a signal table),
its card input spec and its reading limits, so each one declares its own types
instead of narrowing the base's signatures.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import numpy as np

from flowedge.core.card import INPUT_KINDS, InputSpec, ModelCard
from flowedge.core.errors import ConfigError
from flowedge.modalities.baseline import BaselineRules

Raw = TypeVar("Raw")  # a decoded sample, before preprocessing
Spec = TypeVar("Spec", bound=InputSpec)  # the card's input spec of this modality
Limits = TypeVar("Limits")  # what one input may cost, or how to read it

# a batch of preprocessed samples [N, *tensor_shape] -> their scores [N] (the station's backend)
ScoreBatch = Callable[[np.ndarray], np.ndarray]


class Modality(ABC, Generic[Raw, Spec, Limits]):
    """One kind of sample: how to find, read, check, preprocess, fake and draw it."""

    name: str = ""
    extensions: frozenset[str] = frozenset()  # lower-case file suffixes, with the dot

    def list_files(self, folder: Path, recursive: bool = True) -> list[Path]:
        """This modality's files in ``folder`` (sorted, so every run sees the same order)."""
        pattern = "**/*" if recursive else "*"
        return sorted(
            p
            for p in Path(folder).glob(pattern)
            if p.is_file() and p.suffix.lower() in self.extensions
        )

    # ``limits``: what one input may cost (e.g. bytes and pixels for images), or how to read
    # it (series: the log format); None means the modality's defaults. Checked before
    # decoding, so a hostile file is that sample's BadInputError, never the process's MemoryError.

    def limits(self, max_bytes: int, max_pixels: int) -> Limits | None:
        """The limits the station's per-file settings (``pipeline.limits``) give; None: the
        modality's defaults (a modality whose inputs are not files of that kind)."""
        return None

    @abstractmethod
    def read(self, path: str | Path, limits: Limits | None = None) -> Raw:
        """Decode a file to the raw sample; BadInputError naming the file when it cannot."""

    @abstractmethod
    def decode(self, data: bytes, name: str, limits: Limits | None = None) -> Raw:
        """Decode encoded bytes (a file's content, a network payload) to the raw sample."""

    @abstractmethod
    def validate(self, raw: Any, name: str) -> None:
        """BadInputError naming ``name`` when ``raw`` cannot be preprocessed."""

    @abstractmethod
    def preprocess(
        self, raw: Any, spec: Spec, name: str, limits: Limits | None = None
    ) -> np.ndarray:
        """A payload (raw sample, encoded bytes or a path) -> float32 of ``spec.tensor_shape``."""

    def as_raw(self, payload: Any, name: str, limits: Limits | None = None) -> Raw:
        """Accept whatever a source yields: a path, encoded bytes or an already decoded sample."""
        if isinstance(payload, (bytes, bytearray)):
            return self.decode(bytes(payload), name, limits)
        if isinstance(payload, (str, Path)):
            return self.read(payload, limits)
        return payload  # preprocess validates it

    def load(self, path: str | Path, spec: Spec, limits: Limits | None = None) -> np.ndarray:
        """Read and preprocess one file."""
        return self.preprocess(self.read(path, limits), spec, str(path))

    def load_all(
        self, path: str | Path, spec: Spec, limits: Limits | None = None
    ) -> list[np.ndarray]:
        """Every sample of one file: one, unless the spec cuts files (audio ``input.cut``)."""
        return [self.load(path, spec, limits)]

    def read_all(self, path: str | Path, spec: Spec, limits: Limits | None = None) -> list[Raw]:
        """Every raw sample of one file, cut as :meth:`load_all` cuts it: what a run's
        statistics are re-estimated from when a model is trained or calibrated per run."""
        return [self.read(path, limits)]

    def cuts(self, spec: InputSpec, limits: Any = None) -> bool:
        """Whether :meth:`load_all` cuts a file into parts (cycles, windows) with this spec and
        these limits; then each sample is named ``<file>#<part>``."""
        return False

    def display_part(
        self, path: str | Path, spec: Spec, limits: Limits | None = None, part: int = 0
    ) -> np.ndarray:
        """The picture of sample ``part`` of :meth:`load_all`; by default the whole file's
        :meth:`display` (series shows the cycle itself)."""
        return self.display(path, spec, limits)

    def reading(self, card: ModelCard) -> Limits | None:
        """The ``limits`` that read test files as the card's model was trained (series: its
        log format and segmenter); None: the modality's defaults."""
        return None

    def training_spec(self, files: Sequence[Path], settings: Mapping[str, Any]) -> Spec:
        """The input spec of a model trained on ``files`` (normal samples of this modality):
        ``settings`` (a detector config's ``input``, without ``kind``) plus whatever the files
        decide. By default the settings alone; a modality whose spec depends on the data (its
        length, its statistics) overrides this. ValueError/TypeError for unusable settings."""
        return cast(Spec, INPUT_KINDS[self.name](**settings))

    @abstractmethod
    def display(self, path: str | Path, spec: Spec, limits: Limits | None = None) -> np.ndarray:
        """An RGB uint8 picture of the file aligned with its anomaly map (reports' overlays)."""

    @abstractmethod
    def synthesize(
        self, root: str | Path, n_train: int, n_test_good: int, n_test_defect: int, seed: int = 0
    ) -> Path:
        """Write a small labelled dataset in MVTec layout (demo, tests); returns ``root``."""

    @abstractmethod
    def synthetic_batch(
        self, spec: Spec, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        """Preprocessed [N, *tensor_shape] samples, normal first, for export parity checks."""

    @abstractmethod
    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: Spec,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        """A BGR uint8 picture of the sample with its anomaly map, score, decision and a colour
        bar: what an operator looks at to see why a part was rejected."""

    # The station's decision content: what a decision says beyond score and verdict.

    def explain(
        self,
        tensor: np.ndarray,
        amap: np.ndarray,
        score: float,
        spec: Spec,
        score_batch: ScoreBatch,
        max_batch: int,
    ) -> Any:
        """What drove the score of a sample decided ANOMALY, beyond its map (the station calls
        it on the inference thread, only for those samples; ``score_batch`` scores batches of
        at most ``max_batch`` tensors with the station's model). None: nothing to add."""
        return None

    # When normal changes: routing samples by what they carry, re-baselining after a changeover.

    def sample_value(self, raw: Raw, name: str) -> float | None:
        """The value named ``name`` that a sample carries beside the model's inputs (series: a
        log column constant over the cycle, such as a program id or a setpoint), for recipe
        routing and setpoint changeovers. BadInputError naming the sample when it is missing
        or changes within the sample; None: this modality's samples carry no such values."""
        return None

    @property
    def rebaselines(self) -> bool:
        """Whether :meth:`rebaseline` is supported (overridden by the modality)."""
        return type(self).rebaseline is not Modality.rebaseline

    def rebaseline(self, raws: Sequence[Raw], spec: Spec, rules: BaselineRules) -> Spec:
        """``spec`` with its input standardisation re-estimated from ``raws`` (the normal
        samples after a changeover; the model's weights stay). BaselineRefused when the
        new statistics lie outside ``rules`` around the training statistics in ``spec``.
        By default not supported (a ConfigError saying so)."""
        raise ConfigError(
            f"the {self.name} modality cannot re-baseline its input statistics; remove "
            "'rebaseline' from this model's configuration"
        )

    def decision_fields(
        self, context: dict[str, Any] | None, amap: np.ndarray | None, explanation: Any, spec: Spec
    ) -> dict[str, Any]:
        """The fields a decision message adds to score and verdict: the source's ``context``
        (e.g. an audio motion's ``event``), completed from the map and :meth:`explain`'s
        result, which are dropped after this. Asked of the modality of the sample's source,
        also for a sample refused before scoring (``amap`` None; ``spec`` is the model's)."""
        return dict(context or {})
