"""The one YAML reader for configuration files (station config, training sections).

PyYAML's safe loader still accepts two things that hurt a station: a repeated key
(the last one silently wins, so an edit "does nothing") and aliases, whose
expansion (the "billion laughs" file) exhausts memory when the values are
validated. Both are refused here with the file and line; so are a file too large
to be a configuration and one nested deeper than any configuration is (whose
recursive composition would end in a RecursionError).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode

from flowedge.core.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # a station config is a few kB; anything near 1 MiB is not one
MAX_DEPTH = 64  # a configuration nests a handful of levels; composing is recursive in PyYAML


class _StrictLoader(yaml.SafeLoader):
    """Safe loader without aliases, without duplicate mapping keys, at most MAX_DEPTH deep."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None,
                None,
                f"alias *{event.anchor} is not allowed in a configuration file "
                "(write the values out instead of anchors and aliases)",
                event.start_mark,
            )
        if self.depth >= MAX_DEPTH:
            raise ComposerError(
                None,
                None,
                f"nested deeper than {MAX_DEPTH} levels, which no configuration needs "
                "(is it the right file?)",
                self.peek_event().start_mark,
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<': merged by the base class
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                line = first_line.get(key)
            except TypeError:  # unhashable key: the base class reports it
                break
            if line is not None:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {line}); keep only one",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str, missing: str = "check the path") -> Any:
    """Parsed content of the YAML file ``path`` (``what`` names it in every message).

    Raises :class:`ConfigError` (exit 2) for a missing, unreadable, oversized or
    malformed file, a repeated key or an alias; the message gives the line.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {path} not found; {missing}")
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(
                f"{what} {path}: {size} bytes is too large for a configuration file "
                f"(limit {MAX_YAML_BYTES}); is it the right file?"
            )
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise ConfigError(f"{what} {path}{where}: not valid YAML: {exc.problem}{context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML: {exc}") from None
