"""Logging setup for the station: plain lines for people, JSON lines for log shippers."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from flowedge.edge.config import LoggingConfig


class JsonFormatter(logging.Formatter):
    """One JSON object per line: utc, level, logger, thread, message (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "utc": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure(cfg: LoggingConfig, verbose: bool = False) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else cfg.level)
    formatter = (
        JsonFormatter()
        if cfg.json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
    )
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter)
    logging.getLogger("paho").setLevel(logging.WARNING)
