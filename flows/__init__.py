"""flowedge training side: backbones, detectors, datasets, training and evaluation (torch)."""
