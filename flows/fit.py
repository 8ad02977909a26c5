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


def planned_epochs(detector: Detector, train_cfg: TrainingConfig) -> int:
    """Epochs the loop will run over the batches: all phases' together (for progress bars)."""
    if isinstance(detector, GradientDetector):
        return sum(
            phase.epochs or train_cfg.epochs for phase in detector.training_phases(train_cfg.lr)
        )
    return train_cfg.epochs


def fit_by_gradient(
    detector: GradientDetector,
    batches: BatchSource,
    train_cfg: TrainingConfig,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Run the detector's training phases in order (one, ``loss``, unless it says otherwise).

    Each phase minimises its loss over its own parameters only, with a fresh Adam and
    gradient-norm clipping, the learning rate decayed at ``train_cfg.lr_milestones``
    (counted from the phase's first epoch). Adam with default betas as in the official
    CS-Flow, AST and MTS-Flow code, whose runs gave the published numbers (CS-Flow's
    thesis betas (0.5, 0.9) are untested there; see docs/results.md); ``adam_eps``
    differs between the codes. ``epoch`` in the progress reports counts across phases.
    """
    detector.train()
    steps, epoch, loss_value = 0, 0, float("nan")
    phase_losses: dict[str, float] = {}
    for phase in detector.training_phases(train_cfg.lr):
        optimiser = torch.optim.Adam(
            phase.groups,
            lr=train_cfg.lr,
            eps=train_cfg.adam_eps,
            weight_decay=train_cfg.weight_decay,
        )
        schedule = torch.optim.lr_scheduler.MultiStepLR(
            optimiser, milestones=train_cfg.lr_milestones, gamma=train_cfg.lr_decay
        )
        for _ in range(phase.epochs or train_cfg.epochs):
            for feats, labels in batches():
                loss = phase.loss(feats, labels)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(phase.parameters, train_cfg.grad_clip)
                optimiser.step()
                steps += 1
                loss_value = float(loss.detach())
                if progress:
                    progress({"loss": loss_value, "epoch": epoch, "step": steps})
            schedule.step()
            epoch += 1
        phase_losses[f"{phase.name}_final_loss"] = loss_value
    detector.eval()
    with torch.no_grad():
        derived = detector.after_fit(batches)
    summary = {"final_loss": loss_value, "epochs": epoch, "steps": steps} | derived
    return summary | (phase_losses if len(phase_losses) > 1 else {})


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
