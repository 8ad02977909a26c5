"""Commands that change what the station does, arriving through a sink (a Sparkplug NCMD, an
OPC UA method call, a historian's signed ``resend`` request): refused unless
``commands.allowed`` names them, and every one, accepted or refused, logged and published
as an event with who sent it.

A sink never changes the station itself: it calls :meth:`StationCommands.run` with the
command's name, its arguments and where it came from, and reports the answer back over
its own protocol.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from pydantic import Field

from flowedge.calibration.history.resend import read_secret
from flowedge.core.errors import FlowedgeError
from flowedge.core.paths import BoundedPath
from flowedge.core.validation import DAY_S, Name, Strict

log = logging.getLogger(__name__)

CommandName = Literal["set_threshold", "set_recipe", "resend"]
COMMAND_NAMES = get_args(CommandName)


class ResendConfig(Strict):
    """Who may ask for published decisions again (the ``resend`` command): the fleet
    historian holding the shared secret (docs/historian.md)."""

    historian: Name = Field("historian", description="the historian's name its requests carry")
    secret_env: str = Field("FLOWEDGE_HISTORIAN_SECRET", min_length=1)
    secret_file: BoundedPath | None = Field(
        None, description="instead of secret_env: a file only the service user may read (0600)"
    )
    max_age_s: float = Field(300.0, gt=0, le=DAY_S, description="older requests are refused")
    max_documents: int = Field(1000, ge=1, le=100_000, description="decisions per request")

    def secret(self) -> bytes:
        return read_secret(self.secret_env, self.secret_file, "commands.resend")


class CommandsConfig(Strict):
    """Which behaviour-changing commands a sink may pass on (none by default)."""

    allowed: list[CommandName] = Field(
        default_factory=list,
        description="set_threshold: a new decision threshold until the next reload or restart "
        "({'value', 'recipe'}: with recipes, whose); set_recipe: the recipe in force from "
        "now ({'recipe'}; recipes.select.by: command, e.g. an OPC UA node's sink); resend: "
        "publish a range of a sensor's decisions again from the history, for the fleet "
        "historian (commands.resend)",
    )
    resend: ResendConfig = Field(default_factory=ResendConfig)

    def environment_problems(self) -> list[str]:
        """What this machine lacks for the allowed commands (the historian's secret)."""
        if "resend" not in self.allowed:
            return []
        try:
            self.resend.secret()
        except FlowedgeError as exc:
            return [str(exc)]
        return []


@dataclass(frozen=True)
class Reply:
    """What a handler did, and the documents a sink is to publish for it (``resend``)."""

    message: str
    documents: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class CommandResult:
    accepted: bool
    message: str
    documents: tuple[bytes, ...] = ()


Handler = Callable[[dict[str, Any], str], Reply]  # (arguments, origin) -> what was done


class StationCommands:
    """The station's command handlers behind the config's allow-list."""

    def __init__(self, cfg: CommandsConfig, emit: Callable[..., None]) -> None:
        self.allowed, self.emit = set(cfg.allowed), emit
        self.handlers: dict[str, Handler] = {}

    def handle(self, name: str, handler: Handler) -> None:
        self.handlers[name] = handler

    def run(self, name: str, args: dict[str, Any], origin: str) -> CommandResult:
        """Run ``name`` if it is known and allowed; the answer says what happened or why not."""
        if name not in COMMAND_NAMES:
            result = CommandResult(False, f"unknown command {name!r}")
        elif name not in self.allowed or name not in self.handlers:
            result = CommandResult(
                False, f"command {name!r} is not allowed here (add it to commands.allowed)"
            )
        else:
            try:
                reply = self.handlers[name](args, origin)
                result = CommandResult(True, reply.message, reply.documents)
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
