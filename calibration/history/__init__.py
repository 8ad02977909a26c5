"""The station's history: every decision and event in an embedded SQLite database, with
the kept evidence beside it and the reviewers' verdicts.

The station's ``history`` sink (``flowedge.edge.sinks.history``) writes it; ``flowedge
history`` queries, exports and reviews it; ``flowedge calibrate --history`` re-fits the
threshold from the reviewed samples. They all go through these modules, which import
no station code, so the workstation reads a copied history folder without the station.
The schema, retention and review loop: docs/history.md.
"""
