"""Pixel AUROC at test-set scale: flows.metrics.auroc against scikit-learn's roc_auc_score.

    .venv/bin/python bench/pixel_auroc.py [--pixels 29000000]

29 M pixels is the MTD development test split (197 images) at 384 x 384.
Prints both times, the ratio and the difference of the two values.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from flowedge.core.metrics import auroc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=29_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth = rng.random(args.pixels) < 0.02
    values = rng.random(args.pixels).astype(np.float32) + 0.1 * truth
    start = time.perf_counter()
    ours = auroc(truth, values)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    reference = roc_auc_score(truth, values)
    reference_s = time.perf_counter() - start
    print(
        f"pixels {args.pixels:,}: flows.metrics.auroc {ours_s:.2f} s, sklearn {reference_s:.2f} s, "
        f"ratio {reference_s / ours_s:.2f}x, |difference| {abs(ours - reference):.2e}"
    )


if __name__ == "__main__":
    main()
