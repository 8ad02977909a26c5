"""flowedge training side: backbones, detectors, datasets, training and evaluation.

Only :mod:`flows.card`, :mod:`flows.preprocess`, :mod:`flows.errors` and
:mod:`flows.config` are light (no torch); the station imports nothing else from here.
"""

__version__ = "0.1.0"
