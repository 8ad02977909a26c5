"""Long recordings cut into the clips a model scores, the way the card's ``input.cut`` says.

Training, evaluation and calibration read folders of files; a continuous recording becomes
many samples there (fixed windows, or motions found by the energy segmenter), so all three
score the same clips. The station does not use it: its sources already deliver motions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from flowedge.core.errors import BadInputError
from flowedge.modalities.audio import Clip
from flowedge.modalities.audio_events import EventRules, segment_clip

log = logging.getLogger(__name__)


def cut_clip(clip: Clip, cut: dict[str, Any]) -> list[Clip]:
    """``{"window_s", "hop_s"}``: windows (a shorter tail is dropped, a recording shorter than
    one window is one clip); ``{"motions": rules, "labels"}``: the segmented motions, only
    those ``labels`` when given (a model per motion)."""
    if "motions" in cut:
        events = segment_clip(clip, EventRules.model_validate(cut["motions"]))
        labels = cut.get("labels")
        return [e.clip for e in events if labels is None or e.label in labels]
    length = max(1, round(cut["window_s"] * clip.rate))
    hop = max(1, round((cut.get("hop_s") or cut["window_s"]) * clip.rate))
    starts = range(0, max(len(clip.samples) - length, 0) + 1, hop)
    return [Clip(clip.samples[s : s + length], clip.rate) for s in starts]


def cut_tensors(
    clip: Clip, cut: dict[str, Any], name: str, preprocess: Callable[[Clip, str], np.ndarray]
) -> list[np.ndarray]:
    """The tensor of every cut; a bad cut (silent, clipped) is skipped with a warning, so one
    quiet window does not cost the whole recording. None usable: BadInputError."""
    tensors, pieces = [], cut_clip(clip, cut)
    for k, piece in enumerate(pieces):
        try:
            tensors.append(preprocess(piece, f"{name}#{k}"))
        except BadInputError as exc:
            log.warning("skipping %s", exc)
    if not tensors:
        raise BadInputError(
            f"audio {name}: none of its {len(pieces)} cut(s) is usable ({cut}); check the "
            "recording and the model's front_end.cut"
        )
    return tensors
