"""The fleet historian: every station's decisions from the broker into PostgreSQL, each once.

``flowedge historian --config historian.yaml`` subscribes to ``<prefix>/+/+/+/decision``
(and ``.../decision/resent``) with a persistent MQTT 5 session, stores each decision
under (site, station, sensor, seq) and acknowledges a message to the broker only once its
row is committed, so a historian killed at any moment loses nothing and a redelivery
adds nothing. It watches each sensor's sequence for gaps (decisions the broker
acknowledged and lost) and asks the station to send them again from its history with a
signed request (:mod:`flowedge.calibration.history.resend`). It never loads the station
(``flowedge.edge``). Layers, guarantees, schema and queries: docs/historian.md.
"""
