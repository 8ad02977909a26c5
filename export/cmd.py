"""``flowedge export onnx|trt|openvino``: one command, a subparser per target.

``onnx`` and ``openvino`` need the training stack (torch; ``openvino`` also OpenVINO,
``--int8`` on it NNCF); ``trt`` needs TensorRT and runs on the GPU station the engine
is for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flowedge.core.backend_table import exported_by
from flowedge.core.card import ModelCard
from flowedge.core.errors import ConfigError
from flowedge.core.metadata import MIN_OPSET, check_opset
from flowedge.core.outpaths import check_output_file
from flowedge.export.calibration_ref import check_bound_to, load_calibration
from flowedge.export.int8_gate import Int8Bounds, Int8Request

# what each target writes: the first model-file suffix of the backend that runs it
GRAPH_SUFFIX = exported_by("onnx").suffixes[0]
ENGINE_SUFFIX = exported_by("trt").suffixes[0]
IR_SUFFIX = exported_by("openvino").suffixes[0]


def _checked_export_arguments(parser: argparse.ArgumentParser, suffix: str) -> None:
    """What ``export onnx`` and ``export openvino`` share: both write a checked graph."""
    parser.add_argument("checkpoint", type=Path, help="directory written by 'flowedge train'")
    parser.add_argument("--out", type=Path, default=Path(f"model{suffix}"), help="model to write")
    parser.add_argument("--opset", type=int, default=MIN_OPSET, help=f"ONNX opset (>= {MIN_OPSET})")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16",
        action="store_true",
        help="fp16 up to the latents, fp32 reductions (for GPUs); refused for detectors that "
        "sum log-determinants inside the flow",
    )
    precision.add_argument(
        "--int8",
        action="store_true",
        help="post-training INT8 (reductions fp32), written only if it passes the INT8 gate "
        "on --validation (exit 4 otherwise)",
    )
    parser.add_argument(
        "--calibration", type=Path, help="calibration.json: embed its threshold, check at it"
    )
    parser.add_argument(
        "--samples",
        type=Path,
        help="folder of samples for the parity check (default: 6 of the training samples, or "
        "synthetic ones when the card's training folder is not here, and 6 synthetic anomalies)",
    )
    parser.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="relative score tolerance of the parity check (default 1e-3 fp32, 1e-2 fp16)",
    )
    gate = parser.add_argument_group("INT8 (with --int8)")
    gate.add_argument(
        "--validation",
        type=Path,
        help="labelled split (good/ beside defect folders) the INT8 gate scores",
    )
    gate.add_argument(
        "--int8-samples",
        type=Path,
        help="normal samples the quantiser calibrates on (default: the card's training data)",
    )
    gate.add_argument(
        "--int8-count", type=int, default=32, help="how many of them (picked across the folder)"
    )
    gate.add_argument(
        "--max-auroc-drop", type=float, default=0.005, help="largest AUROC loss accepted"
    )
    gate.add_argument(
        "--max-flip-rate",
        type=float,
        default=0.01,
        help="largest share of validation samples whose decision may change at the threshold",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", required=True, metavar="TARGET")
    onnx_p = targets.add_parser(
        "onnx",
        help="checkpoint -> ONNX graph with embedded card; fails (exit 5) unless it matches PyTorch",
    )
    _checked_export_arguments(onnx_p, GRAPH_SUFFIX)
    ov_p = targets.add_parser(
        "openvino",
        help="checkpoint -> OpenVINO IR (.xml/.bin) with embedded card; fails (exit 5) unless "
        "both the graph and the IR match PyTorch",
    )
    _checked_export_arguments(ov_p, IR_SUFFIX)
    trt_p = targets.add_parser(
        "trt", help="ONNX graph -> TensorRT engine for this GPU (+ metadata JSON)"
    )
    trt_p.add_argument("model", type=Path, help="graph written by 'flowedge export onnx'")
    trt_p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"engine to write (default: MODEL{ENGINE_SUFFIX})",
    )
    precision = trt_p.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="fp16 with fp32 reductions (default)",
    )
    precision.add_argument(
        "--fp32",
        dest="precision",
        action="store_const",
        const="fp32",
        help="plain fp32 (slowest; the reference)",
    )
    precision.add_argument(
        "--int8",
        dest="precision",
        action="store_const",
        const="int8",
        help="INT8 (needs --int8-images), reductions stay fp32",
    )
    trt_p.add_argument(
        "--int8-images", type=Path, help="folder of normal images for INT8 calibration"
    )
    trt_p.add_argument(
        "--min-batch", type=int, default=1, help="smallest batch the engine accepts (>= 1)"
    )
    trt_p.add_argument(
        "--opt-batch", type=int, default=4, help="batch TensorRT tunes for (min..max)"
    )
    trt_p.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="largest batch the engine accepts (>= the station's batch size)",
    )
    trt_p.add_argument(
        "--timing-cache", type=Path, help="persistent timing cache (read, then updated)"
    )
    trt_p.set_defaults(precision="fp16")


def _checkpoint_card(checkpoint: Path) -> ModelCard:
    from flowedge.flows.checkpoint import CARD_FILE, checkpoint_dir

    return ModelCard.load(checkpoint_dir(checkpoint) / CARD_FILE)


def _refuse_unsafe_fp16(checkpoint: Path) -> None:
    """Before any work: the fp16 rule (export/fp16.py), which the conversion applies again."""
    from flowedge.export.fp16 import require_fp16_safe

    require_fp16_safe(_checkpoint_card(checkpoint), str(checkpoint))


def _refuse_foreign_calibration(path: Path, checkpoint: Path) -> None:
    """Before any work: the calibration to embed must belong to the checkpoint's weights."""
    check_bound_to(load_calibration(path), _checkpoint_card(checkpoint))


def _int8_request(args: argparse.Namespace) -> Int8Request | None:
    """The ``--int8`` options, checked before any work."""
    if not args.int8:
        return None
    if args.validation is None:
        raise ConfigError(
            "--int8 needs --validation DIR: a labelled split (good/ beside defect folders) "
            "the INT8 model is gated on"
        )
    if args.int8_count < 1 or not 0 <= args.max_auroc_drop < 1 or not 0 <= args.max_flip_rate < 1:
        raise ConfigError(
            "--int8-count must be >= 1, --max-auroc-drop and --max-flip-rate in [0, 1)"
        )
    return Int8Request(
        args.validation,
        args.int8_samples,
        args.int8_count,
        Int8Bounds(args.max_auroc_drop, args.max_flip_rate),
    )


def run(args: argparse.Namespace) -> int:
    if args.target in ("onnx", "openvino"):
        check_opset(args.opset)
        check_output_file(args.out)
        int8 = _int8_request(args)
        if args.fp16:
            _refuse_unsafe_fp16(args.checkpoint)
        if args.calibration is not None:
            _refuse_foreign_calibration(args.calibration, args.checkpoint)
        from flowedge.export.checked import ExportRequest, run_export

        run_export(
            ExportRequest(
                args.checkpoint,
                args.out,
                args.opset,
                args.fp16,
                args.calibration,
                args.samples,
                args.rtol,
                args.target,
                int8,
            )
        )
        return 0
    from flowedge.core.engine_meta import BatchProfile
    from flowedge.export.tensorrt_build import BuildRequest, build_engine

    out = args.out or args.model.with_suffix(ENGINE_SUFFIX)
    check_output_file(out)
    build_engine(
        BuildRequest(
            onnx_path=args.model,
            out=out,
            precision=args.precision,
            profile=BatchProfile(args.min_batch, args.opt_batch, args.max_batch),
            timing_cache=args.timing_cache,
            int8_images=args.int8_images,
        )
    )
    return 0
