"""Validated configuration: the base model and the one way a validation error is reported.

Every section of config.yaml (station, training, calibration, drift, per-detector)
builds on :class:`Strict`, so unknown keys are errors everywhere and every message
names the key path.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in config.yaml must not be ignored silently.

    NaN and infinity are refused for every float: ``threshold: .nan`` would turn every
    decision into an error, ``reconnect_max_s: .inf`` would wait forever.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _shorten(text: str, limit: int = 80) -> str:
    """A 70 kB hostile value must not become a 70 kB log line."""
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def format_validation_error(
    exc: ValidationError, source: str, union_tags: Collection[str] = ()
) -> str:
    """One line per problem: ``key.path[0].name: message (got value)``.

    ``union_tags``: the ``kind`` values of discriminated unions, which pydantic puts in
    the path after a list index (``sources[0].folder.path``) and a reader does not need.
    """
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        path, after_index = "", False
        for part in error["loc"]:
            if after_index and part in union_tags:
                after_index = False
                continue
            after_index = isinstance(part, int)
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.yaml)"
        value = error.get("input")
        quiet = error["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
        got = "" if quiet else f" (got {_shorten(repr(value))})"  # a whole section is noise
        lines.append(f"  {path or '<top level>'}: {message}{got}")
    return "\n".join(lines)


# site, station, source and sink names are MQTT topic levels and file names:
# these characters are always safe
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)]


# Upper bounds of the numbers a config may give. Each is far above any sensible setting and
# far below where the value breaks something: a wait past ~292 years overflows Python's
# timers, a C int overflows ONNX Runtime, a preallocated buffer exhausts memory, and an
# ONNX Runtime pool of 2000 threads never finishes starting. A key over its bound is a
# configuration error naming the key (exit 2), not a traceback or a hang at run time.
DAY_S = 86_400.0  # the longest wait, period or timeout: a retry once a day is already none
MAX_THREADS = 256  # inference threads: more than any station's cores (a fixed bound, so one
# config file is valid on every machine; load_config warns above this machine's cores)
MAX_QUEUE = 10_000  # samples waiting in one queue (each may be a decoded image)
MAX_RECORDS = 10**9  # records a spool or a sink's backlog may hold (SQLite integers, disk)


def _at_least_daily(value: float) -> float:
    if value < 1 / DAY_S:
        raise ValueError(
            f"a rate below once a day (1/{DAY_S:.0f} Hz) is a typo; leave the key out "
            "for no fixed rate"
        )
    return value


# a rate in Hz whose period is at most a day (a smaller rate overflows the waits between samples)
RateHz = Annotated[float, Field(gt=0), AfterValidator(_at_least_daily)]


def ordered_backoff(low: float, high: float) -> None:
    """A retry backoff whose minimum is not above its maximum (ValueError otherwise)."""
    if low > high:
        raise ValueError(f"reconnect_min_s ({low:g}) must not exceed reconnect_max_s ({high:g})")


def tagged_union(models: Iterable[type[BaseModel]]) -> Any:
    """One config type for several models told apart by their ``kind`` literal: a key of
    another kind is an error naming the key, and adding a kind is adding a model."""
    return Annotated[Union[tuple(models)], Field(discriminator="kind")]  # noqa: UP007
