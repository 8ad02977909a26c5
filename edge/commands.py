"""Commands that change what the station does, arriving through a sink (a Sparkplug NCMD, an
OPC UA method call, a historian's request): refused unless ``commands.allowed`` names them,
and every one, accepted or refused, logged and published as an event with who sent it.

A sink never changes the station itself: it calls :meth:`StationCommands.run` with the
command's name, its arguments and where it came from, and reports the answer back over
its own protocol.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from flowedge.core.errors import FlowedgeError
from flowedge.core.validation import Strict

log = logging.getLogger(__name__)

CommandName = Literal["set_threshold"]


class CommandsConfig(Strict):
    """Which behaviour-changing commands a sink may pass on (none by default)."""

    allowed: list[CommandName] = Field(
        default_factory=list,
        description="set_threshold: a new decision threshold until the next reload or restart",
    )


@dataclass(frozen=True)
class CommandResult:
    accepted: bool
    message: str


Handler = Callable[[dict[str, Any], str], str]  # (arguments, origin) -> what was done


class StationCommands:
    """The station's command handlers behind the config's allow-list."""

    def __init__(self, cfg: CommandsConfig, emit: Callable[..., None]) -> None:
        self.allowed, self.emit = set(cfg.allowed), emit
        self.handlers: dict[str, Handler] = {}

    def handle(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def run(self, name: str, args: dict[str, Any], origin: str) -> CommandResult:
        """Run ``name`` if it is known and allowed; the answer says what happened or why not."""
        if name not in self.handlers:
            result = CommandResult(False, f"unknown command {name!r}")
        elif name not in self.allowed:
            result = CommandResult(
                False, f"command {name!r} is not allowed here (add it to commands.allowed)"
            )
        else:
            try:
                result = CommandResult(True, self.handlers[name](args, origin))
            except (ValueError, TypeError, KeyError, FlowedgeError) as exc:
                result = CommandResult(False, f"command {name!r} refused: {exc}")
        kind = "command" if result.accepted else "command_refused"
        log.log(
            logging.WARNING if result.accepted else logging.ERROR,
            "%s from %s: %s",
            name,
            origin,
            result.message,
        )
        self.emit(None, kind, result.message, command=name, origin=origin, arguments=args)
        return result


def threshold_argument(args: dict[str, Any]) -> float:
    """The finite number in ``args["value"]`` (ValueError naming what is wrong)."""
    value = args.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"value must be a finite number (got {value!r})")
    return float(value)
