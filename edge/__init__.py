"""flowedge station runtime: config, CLI, sources, backends, pipeline, MQTT, spool, health.

Importing :mod:`edge` never imports torch; only the PyTorch backend does.
"""
