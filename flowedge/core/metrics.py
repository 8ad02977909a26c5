"""ROC AUC as a rank statistic: numpy only, for evaluation (flows) and calibration alike.

It lives in core, the one package both may import, so calibration never needs the
training stack (sklearn, torch) to report how well a model separates its data.
"""

from __future__ import annotations

import numpy as np


def auroc(truth: np.ndarray, values: np.ndarray) -> float:
    """Exact ROC AUC (ties count half) from one sort: the Mann-Whitney statistic.

    Equal to scikit-learn's ``roc_auc_score`` but about twice as fast on the tens of
    millions of pixels of a test set, because it sorts once and counts runs of equal
    values instead of building the curve. ``truth`` must hold both classes.
    """
    order = np.argsort(values)
    ranked, positive = values[order], np.asarray(truth)[order].astype(bool)
    last_of_run = np.append(ranked[1:] != ranked[:-1], True)
    cum_pos = np.cumsum(positive, dtype=np.int64)[last_of_run]
    cum_neg = np.flatnonzero(last_of_run).astype(np.int64) + 1 - cum_pos
    pos = np.diff(cum_pos, prepend=0).astype(np.float64)
    neg = np.diff(cum_neg, prepend=0).astype(np.float64)
    below = (cum_neg - neg) @ pos  # pairs with the negative strictly lower
    ties = 0.5 * (pos @ neg)
    return float((below + ties) / (float(cum_pos[-1]) * float(cum_neg[-1])))


def separation_auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """P(anomalous score > normal score), ties counting half."""
    truth = np.concatenate([np.zeros(len(normal), bool), np.ones(len(anomalous), bool)])
    return auroc(truth, np.concatenate([normal, anomalous]))
