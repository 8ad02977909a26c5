"""TensorRT engine vs ONNX Runtime on the same graph: parity and latency (GPU station).

python bench/trt_check.py model.onnx model.engine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowedge.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from flowedge.backends.tensorrt import TensorRTBackend  # noqa: E402
from flowedge.export.parity import compare, run_in_batches, synthetic_samples  # noqa: E402


def median_ms(fn, x: np.ndarray, repeats: int) -> float:
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("onnx", type=Path)
    parser.add_argument("engine", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    ort = OnnxRuntimeBackend.open(args.onnx, "cpu", 0)
    trt = TensorRTBackend.open(args.engine, "cuda", 0)
    batch = synthetic_samples(ort.card.input, 8, 8)
    ref = run_in_batches(ort.infer, batch, (4,))
    got = run_in_batches(trt.infer, batch, (1, 3))
    report = compare(ref, got, trt.meta.precision)
    print(
        f"TensorRT {trt.meta.tensorrt_version} {trt.meta.precision} on {trt.meta.gpu_name}: {report.summary()}"
    )
    b1 = median_ms(trt.infer, batch[:1], args.repeats)
    b8 = median_ms(trt.infer, batch[: min(8, trt.max_batch)], max(20, args.repeats // 4))
    ort_b1 = median_ms(ort.infer, batch[:1], 20)
    print(
        f"latency batch 1: TensorRT {b1:.2f} ms, ONNX Runtime CPU {ort_b1:.2f} ms ({ort_b1 / b1:.1f}x); "
        f"batch {min(8, trt.max_batch)}: {b8:.2f} ms ({min(8, trt.max_batch) / b8 * 1000:.0f} img/s)"
    )
    trt.close()
    return 0 if report.passed else 5


if __name__ == "__main__":
    sys.exit(main())
