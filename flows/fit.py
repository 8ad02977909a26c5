"""The training loop, apart from the detectors: it feeds batches and owns the optimiser.

A detector only says what to optimise (:class:`GradientDetector.loss`) or fits
itself in closed form (:class:`ClosedFormDetector.fit`); where the batches come
from (cached features, images re-read and augmented each epoch) is
:mod:`flows.train`'s business.
"""

from __future__ import annotations

from typing import Any

import torch

from flowedge.flows.config import TrainingConfig
from flowedge.flows.detectors.base import (
    BatchSource,
    ClosedFormDetector,
    Detector,
    GradientDetector,
    ProgressFn,
)


def fit_by_gradient(
    detector: GradientDetector,
    batches: BatchSource,
    train_cfg: TrainingConfig,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Minimise ``detector.loss`` with Adam and gradient-norm clipping for ``train_cfg.epochs``,
    the learning rate decayed at ``train_cfg.lr_milestones``.

    Adam with default betas as in the official CS-Flow and MTS-Flow code, whose runs gave
    the published numbers (CS-Flow's thesis betas (0.5, 0.9) are untested there; see
    docs/results.md); ``adam_eps`` differs between the two codes.
    """
    groups = detector.parameter_groups(train_cfg.lr)
    params = [p for group in groups for p in group["params"]]
    optimiser = torch.optim.Adam(
        groups, lr=train_cfg.lr, eps=train_cfg.adam_eps, weight_decay=train_cfg.weight_decay
    )
    schedule = torch.optim.lr_scheduler.MultiStepLR(
        optimiser, milestones=train_cfg.lr_milestones, gamma=train_cfg.lr_decay
    )
    detector.train()
    steps, loss_value = 0, float("nan")
    for epoch in range(train_cfg.epochs):
        for feats, labels in batches():
            loss = detector.loss(feats, labels)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
            optimiser.step()
            steps += 1
            loss_value = float(loss.detach())
            if progress:
                progress({"loss": loss_value, "epoch": epoch, "step": steps})
        schedule.step()
    detector.eval()
    with torch.no_grad():
        derived = detector.after_fit(batches)
    return {"final_loss": loss_value, "epochs": train_cfg.epochs, "steps": steps} | derived


def fit_detector(
    detector: Detector,
    batches: BatchSource,
    train_cfg: TrainingConfig,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Fit any detector on the batches; returns its training summary (final_loss, epochs, ...)."""
    if isinstance(detector, ClosedFormDetector):
        summary = detector.fit(batches, progress)
        detector.eval()
        return summary
    if isinstance(detector, GradientDetector):
        return fit_by_gradient(detector, batches, train_cfg, progress)
    raise TypeError(f"{type(detector).__name__} has neither a loss nor a closed-form fit")
