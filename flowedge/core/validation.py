"""Validated configuration: the base model and the one way a validation error is reported.

Every section of config.yaml (station, training, calibration, drift, per-detector)
builds on :class:`Strict`, so unknown keys are errors everywhere and every message
names the key path.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in config.yaml must not be ignored silently."""

    model_config = ConfigDict(extra="forbid")


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
        got = "" if quiet else f" (got {value!r})"  # a whole section would be noise
        lines.append(f"  {path or '<top level>'}: {message}{got}")
    return "\n".join(lines)
