"""Validated configuration: the base model and the one way a validation error is reported.

Every section of config.yaml (station, training, calibration, drift, per-detector)
builds on :class:`Strict`, so unknown keys are errors everywhere and every message
names the key path.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in config.yaml must not be ignored silently.

    NaN and infinity are refused for every float: ``threshold: .nan`` would turn every
    decision into an error, ``reconnect_max_s: .inf`` would wait forever.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _shorten(text: str, limit: int = 80) -> str:
    """A 70 kB hostile value must not become a 70 kB log line."""
    return text if len(text) <= limit else f"{text[: limit - 15]}... ({len(text)} chars)"


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``key.path[0].name: message (got value)``."""
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    for error in exc.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config.yaml)"
        value = error.get("input")
        quiet = error["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
        got = "" if quiet else f" (got {_shorten(repr(value))})"  # a whole section is noise
        lines.append(f"  {path or '<top level>'}: {message}{got}")
    return "\n".join(lines)
