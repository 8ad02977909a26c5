"""Data sets with one folder per run, each standardised with its own statistics: ``--per-run``.

A station that re-baselines (``rebaseline:``) standardises each run with the statistics of
its first samples after a changeover. A model trained on every run pooled has learnt the
runs' differences as part of normal; trained per run (``flowedge train DATA --per-run``,
one folder per run or operating point), it learns the shape of normal that stays once
each run's level (and, for series, spread) is removed, which is what it will be shown.
The card keeps the pooled statistics (the bounds a station's baseline is checked against)
and names the runs, so the station refuses to run it without re-baselining.

``flowedge calibrate --per-run`` scores each held-out run as the station will: its first
samples form the baseline, the rest are scored with the run's statistics.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowedge.core.card import InputSpec, ModelCard
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.modalities import get_modality
from flowedge.modalities.baseline import MIN_SAMPLES, BaselineRefused, BaselineRules

log = logging.getLogger(__name__)

# a run's own statistics in training: no bounds (training defines them); the station's
# default spread rule, which a per-run model requires of its station's rebaseline
TRAINING_RULES = BaselineRules(max_shift=math.inf, max_scale=math.inf, spread=True)


def baseline_count(text: str) -> int:
    """``--per-run N`` of calibrate and eval: how many first samples of a run are its
    baseline (a usage error below what a baseline needs)."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < MIN_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"a baseline needs at least {MIN_SAMPLES} samples (got {count}); give the "
            "station's rebaseline.samples"
        )
    return count


def require_rebaselining(kind: str, flag: str = "--per-run") -> None:
    """ConfigError when the ``kind`` modality has no per-run statistics to re-estimate."""
    if not get_modality(kind).rebaselines:
        raise ConfigError(
            f"{flag}: {kind} models cannot re-baseline their input statistics, so there is "
            "nothing to standardise per run; leave out the flag"
        )


def require_per_run(card: ModelCard, per_run: int | None, what: str) -> None:
    """ConfigError when a model trained per run is about to be scored without ``--per-run``."""
    if card.trained_per_run and per_run is None:
        raise ConfigError(
            f"{what} was trained per run (flowedge train --per-run): its scores mean something "
            "only with each run's own statistics; give --per-run N (the station's "
            "rebaseline.samples) and one folder per run"
        )


def own_spec(raws: Sequence[Any], spec: InputSpec, what: str) -> InputSpec:
    """``spec`` with the statistics of ``raws`` (one run's samples); a sample the model
    cannot take is skipped with a warning (training skips it too); DataError naming
    ``what`` when the rest give none (too few)."""
    modality = get_modality(spec.kind)
    usable = []
    for i, raw in enumerate(raws):
        try:
            modality.preprocess(raw, spec, f"{what}, sample {i}")
        except BadInputError as exc:
            log.warning("skipping %s", exc)
            continue
        usable.append(raw)
    try:
        return modality.rebaseline(usable, spec, TRAINING_RULES)
    except (BaselineRefused, BadInputError) as exc:
        raise DataError(f"{what}: its statistics cannot be estimated: {exc}") from None


def run_spec(paths: Sequence[Path], spec: InputSpec, limits: Any, what: str) -> InputSpec:
    """:func:`own_spec` of every sample in ``paths`` (cut as the model cuts its files);
    unreadable files are skipped with a warning, as training skips them."""
    modality = get_modality(spec.kind)
    raws: list[Any] = []
    for path in paths:
        try:
            raws += modality.read_all(path, spec, limits)
        except BadInputError as exc:
            log.warning("skipping %s", exc)
    return own_spec(raws, spec, what)


def split_baseline(
    paths: Sequence[Path], baseline: int, spec: InputSpec, limits: Any, what: str
) -> tuple[InputSpec, list[Path]]:
    """A held-out run's normal files as the station meets them: (the :func:`run_spec` of
    the first ``baseline`` in name order, the rest, to be scored with it). ConfigError
    naming ``what`` when nothing would be left to score."""
    ordered = sorted(paths)
    if len(ordered) <= baseline:
        raise ConfigError(
            f"{what}: {len(ordered)} normal file(s), and the first {baseline} are its "
            f"baseline (--per-run {baseline}); give it more normal files"
        )
    return run_spec(ordered[:baseline], spec, limits, what), ordered[baseline:]
