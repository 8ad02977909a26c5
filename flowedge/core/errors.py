"""Errors every command turns into a clear message and a meaningful exit code.

Exit codes of the ``flowedge`` command, one rule for all (README.md has the table):

====  ==========================================================
0     success
1     unexpected internal error (a bug: the traceback is logged)
2     the command line or a config file is wrong (argument or key path and expectation
      named), including a path that does not exist or cannot be one: a missing model,
      data folder, calibration or config file; an output that cannot be written
3     the data is unusable: sample files or folders that exist but cannot be read or
      used (names the files or folders)
4     a model file that exists is unusable or mismatched: damaged checkpoint, graph or
      engine, card version, preprocessing, calibration malformed or of other weights
5     a check failed (export parity, calibration sanity, evaluation target)
====  ==========================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_CHECK = 5


class FlowedgeError(Exception):
    """An expected failure with a message meant for the user and an exit code."""

    exit_code = EXIT_INTERNAL


class ConfigError(FlowedgeError):
    exit_code = EXIT_USAGE


class DataError(FlowedgeError):
    exit_code = EXIT_DATA


class ModelMismatchError(FlowedgeError):
    exit_code = EXIT_MODEL


class CheckFailedError(FlowedgeError):
    exit_code = EXIT_CHECK


class BadInputError(DataError):
    """A sample cannot be used (unreadable, truncated, wrong shape, NaN).

    The message names the input and says what to do; the runtime counts it and
    publishes it as an error event, training skips the sample.
    """
