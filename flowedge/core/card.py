"""The model card: the contract between training and the station.

A card is saved beside every checkpoint, ONNX graph and TensorRT engine. It is
plain JSON with no dependency beyond the standard library, so the station can
read it without torch. It tells the runtime what the model's input is and how a
raw sample becomes it (so training and station can never drift apart), what the
score means (and so which parts must stay fp32 in an fp16 engine), and which
weights it belongs to.

The input spec is an :class:`InputSpec` told apart by ``kind`` (the modality):
:class:`ImageInput`, :class:`AudioInput`, :class:`SeriesInput`, or the spec a
modality registered with :func:`register_input_kind` (which
:func:`flowedge.modalities.register_modality` calls). Everything downstream
reads only ``tensor_shape`` and ``map_shape`` and hands the spec to the modality
of that name (:mod:`flowedge.modalities`).
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flowedge.core.errors import ModelMismatchError
from flowedge.core.jsonfile import read_json

# Bump the major part when a card written by this code can no longer be read by
# an older runtime (or vice versa). Cards with another major version are refused.
CARD_FORMAT = "3.0"  # 3.0: modality-discriminated ``input`` replaces the image-only ``preprocess``
UPGRADABLE_FORMAT = "2"  # the major version 'flowedge upgrade-card' converts from

INTERPOLATIONS = ("area", "linear", "cubic", "nearest")
INTENSITIES = ("raw", "standardize")


class CardError(ModelMismatchError):
    """A card is missing, malformed, from another format version or tampered with."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class InputSpec(ABC):
    """What every input spec has: its modality, the two shapes the backends and detectors
    read, a digest. A subclass sets ``kind`` to its modality's name, like
    ``kind: str = field(default="image", init=False)``."""

    kind: str = field(default="", init=False)

    @property
    @abstractmethod
    def tensor_shape(self) -> tuple[int, ...]:
        """One preprocessed sample, without the batch dimension."""

    @property
    @abstractmethod
    def map_shape(self) -> tuple[int, ...]:
        """The anomaly map of one sample."""

    def digest(self) -> str:
        """A stable hash of the spec: equal specs, equal digests. Unset optional steps (None)
        are left out, so adding one keeps the digests of cards written before it."""
        values = {k: v for k, v in asdict(self).items() if v is not None}
        blob = json.dumps(values, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True)
class ImageInput(InputSpec):
    """A camera frame becomes a (C, H, W) float32 tensor (:mod:`flowedge.modalities.image`)."""

    kind: str = field(default="image", init=False)
    height: int = 256
    width: int = 256
    channels: int = 3  # the network's input channels; grayscale is replicated
    interpolation: str = "area"  # OpenCV resize mode: area | linear | cubic | nearest
    # "raw", or "standardize": each image's intensities are mapped to a fixed mean and
    # standard deviation before the channel normalisation (see modalities.image)
    intensity: str = "raw"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean))
        object.__setattr__(self, "std", _floats(self.std))
        # a card from a newer flowedge may name a step this one cannot do: refuse, never skip it
        for key, allowed in (("interpolation", INTERPOLATIONS), ("intensity", INTENSITIES)):
            _require(
                getattr(self, key) in allowed,
                f"input.{key} {getattr(self, key)!r} is not one of {', '.join(allowed)}",
            )
        _require(
            self.height > 0 and self.width > 0 and self.channels in (1, 3),
            f"input: height {self.height} and width {self.width} must be positive, "
            f"channels {self.channels} must be 1 or 3",
        )
        _require(
            min(len(self.mean), len(self.std)) >= self.channels and min(self.std) > 0,
            f"input: mean and std need one value per channel ({self.channels}), std > 0",
        )

    @property
    def tensor_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (self.height, self.width)


WINDOWS = ("hann",)  # periodic Hann of win_length, centred in n_fft (torch.stft's convention)
CUTS = ("window_s", "motions")  # input.cut: fixed windows or energy-segmented motions
MEL_SCALES = ("htk",)  # torchaudio's default; filters not area-normalised (norm=None)


@dataclass(frozen=True)
class AudioInput(InputSpec):
    """A sound clip becomes a (1, n_mels, frames) log-mel spectrogram in dB, standardised.

    Every step of :mod:`flowedge.modalities.audio_mel` is named here, so the numpy front end of
    the station and torchaudio at training time compute the same thing (a parity test checks).
    """

    kind: str = field(default="audio", init=False)
    sample_rate: int = 16000  # the model rate: recordings at another rate are resampled
    channels: str | int = "mix"  # "mix": average all channels; N: use channel N only
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float = 8000.0
    top_db: float = 80.0  # dynamic range kept below the clip's peak, in dB
    duration_s: float = 10.0  # clips are cut or padded (with silence) to this length
    mean: float = 0.0  # the dB values are standardised with these (fixed per model)
    std: float = 1.0
    window: str = "hann"
    mel_scale: str = "htk"
    power: float = 2.0  # 2: power spectrogram (dB = 10 log10), 1: magnitude (dB = 20 log10)
    # how training, evaluation and calibration cut each file before this front end:
    # {"window_s", "hop_s"} fixed windows or {"motions": segmenter rules}; None: one clip a
    # file. The station ignores it: its sources deliver motions already cut.
    cut: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for key, allowed in (("window", WINDOWS), ("mel_scale", MEL_SCALES)):
            _require(
                getattr(self, key) in allowed,
                f"input.{key} {getattr(self, key)!r} is not one of {', '.join(allowed)}",
            )
        _require(self.power in (1.0, 2.0), f"input.power {self.power!r} must be 1 or 2")
        _require(
            self.cut is None or (isinstance(self.cut, dict) and len(self.cut.keys() & CUTS) == 1),
            f"input.cut {self.cut!r} must name one of {', '.join(CUTS)}",
        )
        _require(
            self.channels == "mix" or (isinstance(self.channels, int) and self.channels >= 0),
            f"input.channels {self.channels!r} must be 'mix' or a channel index >= 0",
        )
        _require(
            min(self.sample_rate, self.n_fft, self.hop_length, self.n_mels) > 0
            and 0 < self.win_length <= self.n_fft,
            "input: sample_rate, n_fft, hop_length and n_mels must be positive, "
            f"0 < win_length ({self.win_length}) <= n_fft ({self.n_fft})",
        )
        _require(
            0 <= self.f_min < self.f_max <= self.sample_rate / 2,
            f"input: need 0 <= f_min ({self.f_min}) < f_max ({self.f_max}) <= "
            f"sample_rate / 2 ({self.sample_rate / 2:g})",
        )
        _require(
            self.top_db > 0 and self.duration_s > 0 and self.std > 0,
            "input: top_db, duration_s and std must be positive",
        )

    @property
    def frames(self) -> int:
        """STFT frames of a centred transform over ``duration_s`` (librosa's convention)."""
        return 1 + math.floor(self.duration_s * self.sample_rate) // self.hop_length

    @property
    def tensor_shape(self) -> tuple[int, int, int]:
        return (1, self.n_mels, self.frames)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (self.n_mels, self.frames)


@dataclass(frozen=True)
class SeriesInput(InputSpec):
    """A window of robot or machine signals becomes a (signals, steps) tensor (later issue)."""

    kind: str = field(default="series", init=False)
    signals: tuple[str, ...] = ()  # column names, in tensor order
    units: tuple[str, ...] = ()  # one per signal, e.g. "A", "rad/s"
    rate_hz: float = 100.0  # resampling rate
    length: int = 256  # time steps per window
    mean: tuple[float, ...] = ()  # per signal, over the training set
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "signals", tuple(str(s) for s in self.signals))
        object.__setattr__(self, "units", tuple(str(u) for u in self.units))
        object.__setattr__(self, "mean", _floats(self.mean))
        object.__setattr__(self, "std", _floats(self.std))
        n = len(self.signals)
        _require(n > 0, "input.signals: name at least one signal")
        _require(
            len(set(self.signals)) == n, f"input.signals: names repeat in {list(self.signals)}"
        )
        _require(
            len(self.units) == len(self.mean) == len(self.std) == n,
            f"input: units, mean and std need one entry per signal ({n})",
        )
        _require(
            self.rate_hz > 0 and self.length > 0 and min(self.std) > 0,
            "input: rate_hz, length and every std must be positive",
        )

    @property
    def tensor_shape(self) -> tuple[int, int]:
        return (len(self.signals), self.length)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (len(self.signals), self.length)


# input kind -> its spec class: the card format's own three, then what modalities register
INPUT_KINDS: dict[str, type[InputSpec]] = {
    spec.kind: spec for spec in (ImageInput, AudioInput, SeriesInput)
}


def register_input_kind(kind: str, spec: type[InputSpec]) -> None:
    """Let cards name ``kind`` as their ``input.kind``, read as ``spec`` (a frozen dataclass
    whose ``kind`` field defaults to ``kind``). Registering the same pair again is a no-op."""
    if getattr(spec, "kind", None) != kind:
        raise ValueError(
            f"input kind {kind!r}: {spec.__name__}.kind is {getattr(spec, 'kind', None)!r}; "
            f"declare kind: str = field(default={kind!r}, init=False)"
        )
    if INPUT_KINDS.get(kind, spec) is not spec:
        raise ValueError(f"input kind {kind!r} is registered twice ({INPUT_KINDS[kind]}, {spec})")
    INPUT_KINDS[kind] = spec


def input_spec_from_dict(data: Any) -> InputSpec:
    """The input spec named by ``data["kind"]``; ValueError/TypeError for anything else."""
    if not isinstance(data, dict):
        raise TypeError(f"input must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in INPUT_KINDS:
        raise ValueError(f"input.kind {kind!r} is not one of {', '.join(INPUT_KINDS)}")
    return INPUT_KINDS[kind](**{k: v for k, v in data.items() if k != "kind"})


@dataclass(frozen=True)
class ScoreSpec:
    """What the sample score is, so calibration and fp16 export treat it right.

    ``kind`` names the reduction (e.g. ``mean_z2``: mean of z**2/2 over all
    latent values; ``mahalanobis``). ``uses_logdet`` says whether the score
    includes log-determinant terms. Usually those are summed beside the latents,
    not after them, so an fp16 export cannot keep them fp32 and refuses the model;
    ``logdet_in_latents`` says the detector returns its per-element log-scales as
    latents instead, so their sums are reductions and fp16 export keeps them fp32.
    """

    kind: str
    uses_logdet: bool = False
    logdet_in_latents: bool = False
    higher_is_anomalous: bool = True


# key -> JSON type every card must have; the rest have defaults
_REQUIRED = {
    "detector": str,
    "detector_params": dict,
    "backbone": dict,
    "input": dict,
    "score": dict,
}
_TYPED = {
    "training": dict,
    "weights_sha256": str,
    "calibration_sha256": str,
    "flowedge_version": str,
    "card_format": str,
    "input_digest": str,
    "created_utc": str,
}


@dataclass
class ModelCard:
    detector: str  # registry name, e.g. "csflow", "gaussian"
    detector_params: dict[str, Any]
    backbone: dict[str, Any]  # name, out_indices, weights source and sha256
    input: InputSpec
    score: ScoreSpec
    training: dict[str, Any] = field(default_factory=dict)  # data summary, epochs, seed, loss
    weights_sha256: str = ""  # of the safetensors file the card belongs to
    calibration_sha256: str = ""  # set when a calibration file is bound to this model
    flowedge_version: str = ""
    card_format: str = CARD_FORMAT
    input_digest: str = ""  # digest of ``input`` when the card was written
    created_utc: str = ""

    @property
    def model_id(self) -> str:
        """Short id for messages and file names: detector plus weights hash."""
        return f"{self.detector}-{self.weights_sha256[:12]}"

    @property
    def trained_per_run(self) -> list[str]:
        """The runs whose samples were each standardised with their own statistics in
        training (``flowedge train --per-run``); [] for a model trained on pooled
        statistics. Such a model sees its inputs right only after a re-baseline."""
        data = self.training.get("data")
        runs = data.get("per_run", []) if isinstance(data, dict) else []
        return [str(run) for run in runs] if isinstance(runs, list) else []

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_digest"] = self.input.digest()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=list)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, source: str = "card") -> ModelCard:
        """Build a card and check it: format version, keys and types, input digest."""
        if not isinstance(data, dict):
            raise CardError(
                f"{source}: a model card is a JSON object, this is {type(data).__name__}; "
                "the file is damaged: copy the model again or retrain"
            )
        check_format(data, source)
        _check_keys(data, source)
        try:
            data = dict(data)
            data["input"] = input_spec_from_dict(data["input"])
            data["score"] = ScoreSpec(**data["score"])
            card = cls(**data)
        except (TypeError, ValueError) as exc:
            raise CardError(
                f"{source}: malformed model card ({exc}); the file is damaged or was written "
                "by a newer flowedge: retrain or upgrade"
            ) from exc
        if card.input_digest and card.input_digest != card.input.digest():
            raise CardError(
                f"{source}: the input spec was changed after training "
                f"(digest {card.input.digest()} != recorded {card.input_digest}); "
                "a model only works with the preprocessing it was trained with: retrain instead"
            )
        return card

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        return cls.from_dict(read_card_json(Path(path)), source=str(path))


def read_card_json(path: Path) -> Any:
    """The parsed content of a card.json, unchecked (for loading and for upgrading)."""
    return read_json(
        path,
        "model card",
        CardError,
        missing="give the checkpoint directory written by 'flowedge train'",
        invalid="the checkpoint is damaged: copy it again or retrain",
    )


def check_format(data: dict[str, Any], source: str) -> None:
    """Refuse another major card format, naming the converter when there is one."""
    fmt = str(data.get("card_format") or "?")
    major = fmt.split(".")[0]
    if major == CARD_FORMAT.split(".")[0]:
        return
    if major == UPGRADABLE_FORMAT:
        how = (
            "convert the checkpoint with 'flowedge upgrade-card CHECKPOINT_DIR', then export "
            "ONNX graphs and TensorRT engines again from it"
        )
    else:
        how = "re-export or retrain the model with this version"
    raise CardError(
        f"{source}: model card format {fmt} is not readable by this flowedge "
        f"(card format {CARD_FORMAT}); {how}"
    )


def _check_keys(data: dict[str, Any], source: str) -> None:
    """Missing, unknown or wrongly typed top-level keys, all named in one message."""
    known = {f.name for f in fields(ModelCard)}
    problems = [f"missing key '{k}'" for k in _REQUIRED if k not in data]
    problems += [f"unknown key '{k}'" for k in sorted(set(data) - known)]
    problems += [
        f"'{k}' must be a JSON {'object' if t is dict else 'string'}, got {data[k]!r:.40}"
        for k, t in {**_REQUIRED, **_TYPED}.items()
        if k in data and not isinstance(data[k], t)
    ]
    if problems:
        raise CardError(
            f"{source}: malformed model card ({'; '.join(problems)}); the file is damaged or "
            "was edited: copy the model again or retrain"
        )


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
