"""The model card: the contract between training and the station.

A card is saved beside every checkpoint, ONNX graph and TensorRT engine. It is
plain JSON with no dependency beyond the standard library, so the station can
read it without torch. It tells the runtime how to preprocess (so training and
station can never drift apart), what the score means (and so which parts must
stay fp32 in an fp16 engine), and which weights it belongs to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowedge.core.errors import ModelMismatchError
from flowedge.core.jsonfile import read_json

# Bump the major part when a card written by this code can no longer be read by
# an older runtime (or vice versa). Cards with another major version are refused.
CARD_FORMAT = "2.0"  # 2.0: PreprocessSpec.intensity (a 1.x runtime would ignore it)


INTERPOLATIONS = ("area", "linear", "cubic", "nearest")
INTENSITIES = ("raw", "standardize")


class CardError(ModelMismatchError):
    """A card is missing, malformed, from another format version or tampered with."""


@dataclass(frozen=True)
class PreprocessSpec:
    """How a raw sample becomes the model's input tensor (NCHW float32).

    One implementation (:mod:`flows.preprocess`) reads this spec in training,
    evaluation and on the station.
    """

    modality: str = "image"  # image | audio | timeseries (later issues)
    height: int = 256
    width: int = 256
    channels: int = 3  # the network's input channels; grayscale is replicated
    interpolation: str = "area"  # OpenCV resize mode: area | linear | cubic | nearest
    # "raw", or "standardize": each image's intensities are mapped to a fixed mean and
    # standard deviation before the channel normalisation (see flows.preprocess)
    intensity: str = "raw"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    extra: dict[str, Any] = field(default_factory=dict)  # modality-specific parameters

    def __post_init__(self) -> None:
        # a card from a newer flowedge may name a step this one cannot do: refuse, never skip it
        for key, allowed in (("interpolation", INTERPOLATIONS), ("intensity", INTENSITIES)):
            if getattr(self, key) not in allowed:
                raise ValueError(
                    f"preprocess.{key} {getattr(self, key)!r} is not one of {', '.join(allowed)}"
                )

    def digest(self) -> str:
        """A stable hash of the spec: equal specs, equal digests."""
        blob = json.dumps(asdict(self), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        data = dict(data)
        for key in ("mean", "std"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)


@dataclass(frozen=True)
class ScoreSpec:
    """What the image score is, so calibration and fp16 export treat it right.

    ``kind`` names the reduction (e.g. ``mean_z2``: mean of z**2/2 over all
    latent values; ``mahalanobis``). ``uses_logdet`` says whether the score
    includes log-determinant terms (then they must be computed in fp32 too).
    """

    kind: str
    uses_logdet: bool = False
    map_source: str = ""  # which latent gives the anomaly map, e.g. "scale0"
    higher_is_anomalous: bool = True


@dataclass
class ModelCard:
    detector: str  # registry name, e.g. "csflow", "gaussian"
    detector_params: dict[str, Any]
    backbone: dict[str, Any]  # name, out_indices, weights source and sha256
    preprocess: PreprocessSpec
    score: ScoreSpec
    training: dict[str, Any] = field(default_factory=dict)  # data summary, epochs, seed, loss
    weights_sha256: str = ""  # of the safetensors file the card belongs to
    calibration_sha256: str = ""  # set when a calibration file is bound to this model
    flowedge_version: str = ""
    card_format: str = CARD_FORMAT
    preprocess_digest: str = ""  # digest of ``preprocess`` when the card was written
    created_utc: str = ""

    @property
    def model_id(self) -> str:
        """Short id for messages and file names: detector plus weights hash."""
        return f"{self.detector}-{self.weights_sha256[:12]}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocess_digest"] = self.preprocess.digest()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=list)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "card") -> ModelCard:
        """Build a card and check it: format version and preprocessing digest."""
        fmt = str(data.get("card_format", ""))
        if fmt.split(".")[0] != CARD_FORMAT.split(".")[0]:
            raise CardError(
                f"{source}: model card format {fmt or '?'} is not readable by this flowedge "
                f"(card format {CARD_FORMAT}); re-export or retrain the model with this version"
            )
        try:
            data = dict(data)
            data["preprocess"] = PreprocessSpec.from_dict(data["preprocess"])
            data["score"] = ScoreSpec(**data["score"])
            card = cls(**data)
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(
                f"{source}: malformed model card ({exc}); the file is damaged or was written "
                "by a newer flowedge: retrain or upgrade"
            ) from exc
        if card.preprocess_digest and card.preprocess_digest != card.preprocess.digest():
            raise CardError(
                f"{source}: the preprocessing spec was changed after training "
                f"(digest {card.preprocess.digest()} != recorded {card.preprocess_digest}); "
                "a model only works with the preprocessing it was trained with: retrain instead"
            )
        return card

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        data = read_json(
            path,
            "model card",
            CardError,
            missing="give the checkpoint directory written by 'flowedge train'",
            invalid="the checkpoint is damaged: copy it again or retrain",
        )
        return cls.from_dict(data, source=str(path))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
