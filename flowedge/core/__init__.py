"""The contract every part of flowedge shares: model card, errors, artifact metadata, decide().

Imports nothing else from flowedge (a test checks it), so training, calibration,
export and the station can all depend on it without pulling each other in.
"""
