"""The inference backends as one table: every list of backends in flowedge is read from it.

``--backend`` choices, ``model.backend`` validation, which backend "auto" picks for a
model file, the model-file hints in error messages and ``--help``, and the install
hint for a missing package all derive from :data:`BACKENDS`. The table is plain
data in the core (no imports), because the core's install hint
(:mod:`flowedge.core.extras`) reads it too; the loading lives in
:mod:`flowedge.backends`. A new backend is its module plus one row here (and its
requirements in setup.py's extra, which ``tests/test_backends.py`` checks).
"""

from __future__ import annotations

from dataclasses import dataclass

AUTO = "auto"  # model.backend / --backend: the backend the model file's kind needs
TRAINING_COMMAND = "flowedge train"  # writes a checkpoint directory


@dataclass(frozen=True)
class BackendSpec:
    """One inference runtime, with everything flowedge says or checks about it."""

    name: str  # model.backend / --backend value and the Backend class's ``name``
    label: str  # what people call the runtime: "ONNX Runtime"
    module: str  # module of the Backend class, imported only when the backend is opened
    class_name: str
    model_file: str  # what its model is, with its article: "an ONNX graph"
    suffixes: tuple[str, ...]  # lower-case model-file suffixes ("auto" reads them); () = directory
    export_target: str | None  # 'flowedge export TARGET' writes its model; None: a checkpoint
    extra: str  # pip install 'flowedge[EXTRA]' installs its packages
    packages: tuple[str, ...]  # import names of those packages (named when one is missing)
    requirements: tuple[str, ...]  # their pip names, which setup.py's extra must list
    tunable: bool = False  # takes model.streams and model.performance_hint (else refuses them)

    @property
    def is_directory(self) -> bool:
        """Its model is a directory (a checkpoint), not a file."""
        return not self.suffixes

    @property
    def runs_without_torch(self) -> bool:
        """A station without the training stack can run it."""
        return "torch" not in self.packages

    @property
    def made_by(self) -> str:
        """The command that writes its model."""
        return f"flowedge export {self.export_target}" if self.export_target else TRAINING_COMMAND

    def describe_model(self) -> str:
        """Its model file for a person: "an ONNX graph (.onnx, from 'flowedge export onnx')"."""
        where = f"from '{self.made_by}'"
        if self.is_directory:
            return f"{self.model_file} ({where})"
        return f"{self.model_file} ({'/'.join(self.suffixes)}, {where})"


# name -> row; the order is the order of --backend choices and of every list shown
BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec(
            name="torch",
            label="PyTorch",
            module="flowedge.backends.torch_backend",
            class_name="TorchBackend",
            model_file="a checkpoint directory",
            suffixes=(),
            export_target=None,
            extra="train",
            packages=("torch",),
            requirements=("torch",),
        ),
        BackendSpec(
            name="onnxruntime",
            label="ONNX Runtime",
            module="flowedge.backends.onnxrt",
            class_name="OnnxRuntimeBackend",
            model_file="an ONNX graph",
            suffixes=(".onnx",),
            export_target="onnx",
            extra="station",
            packages=("onnxruntime",),
            requirements=("onnxruntime",),
        ),
        BackendSpec(
            name="tensorrt",
            label="TensorRT",
            module="flowedge.backends.tensorrt",
            class_name="TensorRTBackend",
            model_file="a TensorRT engine",
            suffixes=(".engine", ".plan"),
            export_target="trt",
            extra="tensorrt",
            packages=("tensorrt", "cuda"),
            requirements=("tensorrt", "cuda-python"),
        ),
        BackendSpec(
            name="openvino",
            label="OpenVINO",
            module="flowedge.backends.openvino_backend",
            class_name="OpenVinoBackend",
            model_file="an OpenVINO IR",
            suffixes=(".xml",),  # .onnx too, when model.backend names openvino
            export_target="openvino",
            extra="openvino",
            packages=("openvino",),
            requirements=("openvino",),
            tunable=True,
        ),
    )
}


def backend_choices() -> tuple[str, ...]:
    """What ``model.backend`` and ``--backend`` accept: "auto" and every backend's name."""
    return (AUTO, *BACKENDS)


def check_backend_choice(value: str) -> str:
    """``value`` if it is a backend choice, else the ValueError a pydantic Literal would give."""
    choices = backend_choices()
    if value not in choices:
        raise ValueError(f"Input should be {_one_of([repr(c) for c in choices])}")
    return value


def backend_of_suffix(suffix: str) -> str | None:
    """The backend whose model files end in ``suffix`` (any case); None when none does."""
    return next((s.name for s in BACKENDS.values() if suffix.lower() in s.suffixes), None)


def directory_backend() -> str:
    """The backend whose model is a directory (the checkpoint ``flowedge train`` writes)."""
    return next(s.name for s in BACKENDS.values() if s.is_directory)


def exported_by(target: str) -> BackendSpec:
    """The backend whose model ``flowedge export TARGET`` writes."""
    return next(s for s in BACKENDS.values() if s.export_target == target)


def model_file_suffixes() -> tuple[str, ...]:
    """Every suffix of a model file (exported models; checkpoints are directories)."""
    return tuple(suffix for spec in BACKENDS.values() for suffix in spec.suffixes)


def export_commands() -> list[str]:
    """The commands that write the exported model files, quoted: 'flowedge export onnx', ..."""
    return [f"'{s.made_by}'" for s in BACKENDS.values() if s.export_target]


def _one_of(items: list[str]) -> str:
    """A list as a person writes it: "a, b or c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def model_files_hint() -> str:
    """Every kind of model and what writes it, for messages and ``--help``."""
    return _one_of([spec.describe_model() for spec in BACKENDS.values()])


def auto_rule() -> str:
    """How "auto" picks: "directory: torch, .onnx: onnxruntime, .engine/.plan: tensorrt"."""
    return ", ".join(f"{'/'.join(s.suffixes) or 'directory'}: {s.name}" for s in BACKENDS.values())
