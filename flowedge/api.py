"""The Python API: load a model and score samples with it, or train one.

    with flowedge.load("runs/part/model.onnx") as model:
        result = model.score("part_0001.png")
        print(result.decision, result.score)

It is built from the blocks the commands use (the backend the model file calls
for, the card's own preprocessing, the one decision rule ``score > threshold``),
so a notebook gets exactly the station's scores and decisions.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from flowedge.backends import open_backend
from flowedge.backends.base import Backend
from flowedge.core.card import ModelCard
from flowedge.core.decision import decide
from flowedge.core.errors import BadInputError, ConfigError, ModelMismatchError
from flowedge.core.extras import needs_extras
from flowedge.modalities import get_modality

if TYPE_CHECKING:
    from flowedge.calibration.calibfile import Calibration

log = logging.getLogger(__name__)

# what one sample may be: a file path, the file's encoded bytes or a decoded array
Sample = str | Path | bytes | bytearray | np.ndarray

ERROR = "ERROR"


@dataclass(frozen=True)
class Result:
    """The outcome for one sample.

    ``decision``: ANOMALY iff ``score > threshold``, else OK; ERROR when the sample
    could not be scored (``error`` says why); None when the model has no threshold
    (not calibrated and none given). ``normalised_score`` needs a calibration file
    (see :mod:`flowedge.calibration.calibfile`).
    """

    name: str
    score: float | None
    decision: str | None
    threshold: float | None
    normalised_score: float | None = None
    anomaly_map: np.ndarray | None = None  # the card's map shape, e.g. (H, W) for images
    error: str = ""


class Model:
    """A loaded model with its card and decision threshold; close it (or use ``with``)."""

    def __init__(
        self, backend: Backend, threshold: float | None, calibration: Calibration | None = None
    ) -> None:
        self.backend = backend
        self.threshold = threshold
        self.calibration = calibration

    @property
    def card(self) -> ModelCard:
        return self.backend.card

    def score(self, sample: Sample, name: str | None = None) -> Result:
        """Score one sample (path, encoded bytes or decoded array)."""
        return self.score_batch([sample], None if name is None else [name])[0]

    def score_batch(
        self, samples: Sequence[Sample], names: Sequence[str] | None = None
    ) -> list[Result]:
        """Score samples in batches; an unusable sample gives an ERROR result, never an exception."""
        names = list(names) if names is not None else [_name(s, i) for i, s in enumerate(samples)]
        if len(names) != len(samples):
            raise ConfigError(f"{len(samples)} samples but {len(names)} names; give one per sample")
        prepared = (self._prepared(s, n) for s, n in zip(samples, names, strict=True))
        return list(self._scored(prepared))

    def score_files(self, paths: Iterable[str | Path]) -> list[Result]:
        """Every sample of each file, read and cut as training, evaluation and calibration read
        them (a series model's log format and segmenter, an audio model's ``input.cut``): one
        result per cycle or window, named ``<file>#<part>`` when the model cuts files, else
        ``<file>``. A file that cannot be read is one ERROR result."""
        return list(self._scored(self._file_parts(paths)))

    def _prepared(self, sample: Sample, name: str) -> tuple[str, np.ndarray | str]:
        """(name, tensor), or (name, why it is unusable)."""
        try:
            return name, self._preprocess(sample, name)
        except BadInputError as exc:
            return name, str(exc)

    def _file_parts(self, paths: Iterable[str | Path]) -> Iterator[tuple[str, np.ndarray | str]]:
        spec = self.card.input
        modality = get_modality(spec.kind)
        reading = modality.reading(self.card)
        cuts = modality.cuts(spec, reading)
        for path in paths:
            name = str(path)
            try:
                tensors = modality.load_all(path, spec, reading)
            except BadInputError as exc:
                yield name, str(exc)
                continue
            for part, tensor in enumerate(tensors):
                yield (f"{name}#{part}" if cuts else name), tensor

    def _scored(self, prepared: Iterable[tuple[str, np.ndarray | str]]) -> Iterator[Result]:
        """Results in input order; tensors go to the backend a full batch at a time, so only
        one batch is held in memory."""
        pending: list[tuple[str, np.ndarray | str]] = []
        n_tensors = 0
        for name, item in prepared:
            pending.append((name, item))
            n_tensors += isinstance(item, np.ndarray)
            if n_tensors == self.backend.max_batch:
                yield from self._inferred(pending)
                pending, n_tensors = [], 0
        yield from self._inferred(pending)

    def _inferred(self, pending: list[tuple[str, np.ndarray | str]]) -> Iterator[Result]:
        tensors = [item for _, item in pending if isinstance(item, np.ndarray)]
        outputs = iter(zip(*self.backend.infer(np.stack(tensors)), strict=True) if tensors else ())
        for name, item in pending:
            if isinstance(item, str):
                yield Result(name, None, ERROR, self.threshold, error=item)
            else:
                score, amap = next(outputs)
                yield self._result(name, float(score), amap)

    def _preprocess(self, sample: Sample, name: str) -> np.ndarray:
        spec = self.card.input
        return get_modality(spec.kind).preprocess(sample, spec, name)

    def _result(self, name: str, score: float, amap: np.ndarray) -> Result:
        decision = decision_of(score, self.threshold)
        if decision == ERROR:
            return Result(
                name,
                score,
                ERROR,
                self.threshold,
                anomaly_map=amap,
                error=f"{name}: the model gave a non-finite score ({score}); check the sample",
            )
        normalised = None if self.calibration is None else self.calibration.normalise(score)
        return Result(name, score, decision, self.threshold, normalised, amap)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def decision_of(score: float, threshold: float | None) -> str | None:
    """:func:`flowedge.core.decision.decide`, or None (no decision) for a model without a
    threshold; a non-finite score is ``ERROR`` either way."""
    if threshold is None and math.isfinite(score):
        return None
    return decide(score, math.inf if threshold is None else threshold)


def load(
    model: str | Path,
    *,
    threshold: float | None = None,
    calibration: str | Path | None = None,
    backend: str = "auto",
    device: str = "cpu",
    threads: int = 0,
) -> Model:
    """Open a checkpoint directory, ``.onnx`` graph or TensorRT engine for scoring.

    The threshold is ``threshold`` when given, else the calibration file's
    (``calibration``, or a ``calibration.json`` beside the model bound to its
    weights), else the one embedded at export; without any, results carry scores
    and no decision.
    """
    path = Path(model)
    with needs_extras(f"the {backend} backend"):
        opened = open_backend(path, backend, device, threads)
    try:
        calib = _calibration(path, calibration, opened.card)
    except BaseException:
        opened.close()
        raise
    if threshold is None:
        threshold = calib.threshold if calib is not None else _embedded_threshold(opened)
    if threshold is None:
        log.warning(
            "%s has no threshold: results have scores but no decision; run 'flowedge calibrate' "
            "or pass threshold=",
            path,
        )
    return Model(opened, None if threshold is None else float(threshold), calib)


def train(
    data: str | Path,
    out: str | Path,
    detector: str = "csflow",
    *,
    config: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    per_run: bool = False,
    **overrides: Any,
) -> Path:
    """Train like ``flowedge train DATA --out OUT``; returns the checkpoint directory.

    ``overrides`` are the command's flags as keywords (``epochs=4``, ``image_size=256``,
    ``lr=1e-3``...); everything else comes from ``config`` (a config.yaml). ``per_run``:
    like ``--per-run``, ``data`` holds one folder per run, each standardised on its own.
    """
    from flowedge.flows.cmd_train import train_checkpoint, training_configs

    det_cfg, train_cfg = training_configs(
        None if config is None else Path(config), {"detector": detector, **overrides}
    )
    with needs_extras("flowedge.train"):
        train_checkpoint(det_cfg, train_cfg, Path(data), Path(out), device, progress, per_run)
    return Path(out)


def _name(sample: Sample, index: int) -> str:
    if isinstance(sample, str | Path):
        return str(sample)
    return f"<{type(sample).__name__} #{index}>"


def _calibration(path: Path, given: str | Path | None, card: ModelCard) -> Calibration | None:
    """The given calibration file (must fit the model), else one beside the model that fits."""
    from flowedge.calibration.calibfile import load_calibration

    if given is not None:
        return load_calibration(given, card)
    beside = (path if path.is_dir() else path.parent) / "calibration.json"
    if not beside.is_file():
        return None
    try:
        return load_calibration(beside, card)
    except ModelMismatchError as exc:
        log.warning("not using %s: %s", beside, exc)
        return None


def _embedded_threshold(backend: Backend) -> float | None:
    """The threshold an export embedded (ONNX metadata or engine metadata), if any."""
    return None if backend.calibration is None else float(backend.calibration["threshold"])


def files_of(inputs: Iterable[str | Path], card: ModelCard) -> list[Path]:
    """The sample files named by ``inputs``: files as given, folders searched recursively."""
    modality = get_modality(card.input.kind)
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += modality.list_files(item, recursive=True)
        elif item.is_file():
            files.append(item)
        else:
            log.warning("%s: no such file or folder, skipped", item)
    return files
