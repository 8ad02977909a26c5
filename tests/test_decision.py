"""The one decision rule every consumer uses: ``score > threshold`` is an anomaly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flowedge.core.decision import decide, is_anomalous


@pytest.mark.parametrize(
    ("score", "expected"),
    [(2.5, "OK"), (3.0, "OK"), (math.nextafter(3.0, 4.0), "ANOMALY"), (1e9, "ANOMALY")],
)
def test_anomaly_only_above_the_threshold(score: float, expected: str) -> None:
    assert decide(score, 3.0) == expected


@pytest.mark.parametrize("score", [None, math.nan, math.inf, -math.inf])
def test_a_missing_or_non_finite_score_is_an_error(score: float | None) -> None:
    assert decide(score, 3.0) == "ERROR"


def test_the_rule_applies_elementwise_to_score_arrays() -> None:
    scores = np.array([2.0, 3.0, 3.5])
    assert is_anomalous(scores, 3.0).tolist() == [False, False, True]
    assert [decide(float(s), 3.0) == "ANOMALY" for s in scores] == is_anomalous(
        scores, 3.0
    ).tolist()
