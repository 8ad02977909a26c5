"""``flowedge historian``: many stations' decisions from the broker into PostgreSQL.

Runs until SIGTERM or SIGINT; what it has not committed then stays unacknowledged on the
broker for its next start. It never loads the station. Configuration, the guarantees of
each layer, the schema and example queries: docs/historian.md.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="historian.yaml")


def run(args: argparse.Namespace) -> int:
    from flowedge.historian.config import load_historian_config
    from flowedge.historian.service import Historian

    cfg = load_historian_config(args.config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    historian = Historian(cfg)
    historian.start()
    try:
        historian.run(stop)
    finally:
        historian.stop()
    return 0
