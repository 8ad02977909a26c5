"""One spectrogram picture per generated fault type (and a normal motion) for the docs.

Same unit (seed), same motion, each fault at high severity: what differs is the fault.
Written as small PNGs (low bands at the bottom, 0-22 kHz on the mel scale)::

    python bench/audio_pictures.py --out docs/img
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from flowedge.flows.config import MelFrontEnd
from flowedge.modalities.audio import Clip, spectrogram_view, to_tensor
from flowedge.modalities.audio_synthetic import FAULTS, SEVERITIES, gear_motor_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    spec = MelFrontEnd().spec()
    args.out.mkdir(parents=True, exist_ok=True)
    for fault in (None, *FAULTS):
        rng = np.random.default_rng(7)
        clip = gear_motor_clip(
            spec.sample_rate, spec.duration_s, rng, fault=fault, severity=SEVERITIES["high"]
        )
        view = spectrogram_view(to_tensor(Clip(clip[:, None], spec.sample_rate), spec))
        picture = cv2.applyColorMap(cv2.cvtColor(view, cv2.COLOR_BGR2GRAY), cv2.COLORMAP_INFERNO)
        picture = cv2.resize(picture, (288, 144), interpolation=cv2.INTER_AREA)
        name = fault or "normal"
        cv2.putText(picture, name, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255))
        cv2.imwrite(str(args.out / f"audio_{name}.png"), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])


if __name__ == "__main__":
    main()
