"""What every modality (image, audio, series) provides, so nothing else knows which it is.

Training, evaluation, calibration, export checks and the station all go through
these methods with the spec from the model card; a new modality is one module
implementing them plus one line in :data:`flowedge.modalities.MODALITIES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.core.card import InputSpec, ModelCard


class Modality(ABC):
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

    # ``limits``: what one input may cost (the modality's own limits type, e.g. bytes and
    # pixels for images); None means the modality's defaults. Checked before decoding, so a
    # hostile file is that sample's BadInputError, never the process's MemoryError.

    @abstractmethod
    def read(self, path: str | Path, limits: Any = None) -> Any:
        """Decode a file to the raw sample; BadInputError naming the file when it cannot."""

    @abstractmethod
    def decode(self, data: bytes, name: str, limits: Any = None) -> Any:
        """Decode encoded bytes (a file's content, a network payload) to the raw sample."""

    @abstractmethod
    def validate(self, raw: Any, name: str) -> None:
        """BadInputError naming ``name`` when ``raw`` cannot be preprocessed."""

    @abstractmethod
    def preprocess(self, raw: Any, spec: InputSpec, name: str, limits: Any = None) -> np.ndarray:
        """A payload (raw sample, encoded bytes or a path) -> float32 of ``spec.tensor_shape``."""

    def as_raw(self, payload: Any, name: str, limits: Any = None) -> Any:
        """Accept whatever a source yields: a path, encoded bytes or an already decoded sample."""
        if isinstance(payload, (bytes, bytearray)):
            return self.decode(bytes(payload), name, limits)
        if isinstance(payload, (str, Path)):
            return self.read(payload, limits)
        return payload  # preprocess validates it

    def load(self, path: str | Path, spec: InputSpec, limits: Any = None) -> np.ndarray:
        """Read and preprocess one file."""
        return self.preprocess(self.read(path, limits), spec, str(path))

    def load_all(self, path: str | Path, spec: InputSpec, limits: Any = None) -> list[np.ndarray]:
        """Every sample of one file: one, unless the spec cuts files (audio ``input.cut``)."""
        return [self.load(path, spec, limits)]

    def cuts(self, spec: InputSpec, limits: Any = None) -> bool:
        """Whether :meth:`load_all` cuts a file into parts (cycles, windows) with this spec and
        these limits; then each sample is named ``<file>#<part>``."""
        return False

    def display_part(
        self, path: str | Path, spec: InputSpec, limits: Any = None, part: int = 0
    ) -> np.ndarray:
        """The picture of sample ``part`` of :meth:`load_all`; by default the whole file's
        :meth:`display` (series shows the cycle itself)."""
        return self.display(path, spec, limits)

    def reading(self, card: ModelCard) -> Any:
        """The ``limits`` that read test files as the card's model was trained (series: its
        log format and segmenter); None: the modality's defaults."""
        return None

    @abstractmethod
    def display(self, path: str | Path, spec: InputSpec, limits: Any = None) -> np.ndarray:
        """An RGB uint8 picture of the file aligned with its anomaly map (reports' overlays)."""

    @abstractmethod
    def synthesize(
        self, root: str | Path, n_train: int, n_test_good: int, n_test_defect: int, seed: int = 0
    ) -> Path:
        """Write a small labelled dataset in MVTec layout (demo, tests); returns ``root``."""

    @abstractmethod
    def synthetic_batch(
        self, spec: InputSpec, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        """Preprocessed [N, *tensor_shape] samples, normal first, for export parity checks."""

    @abstractmethod
    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: InputSpec,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        """A BGR uint8 picture of the sample with its anomaly map, score, decision and a colour
        bar: what an operator looks at to see why a part was rejected."""
