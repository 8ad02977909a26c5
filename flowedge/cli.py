"""The ``flowedge`` command: subcommands load lazily, so ``flowedge run`` never imports torch.

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``. Expected failures (:class:`flows.errors.FlowedgeError`)
print one clear message and exit with their code; see :mod:`flows.errors`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from types import ModuleType

from flowedge.core.errors import EXIT_INTERNAL, FlowedgeError
from flowedge.core.extras import needs_extras
from flowedge.core.paths import bounded_path

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "flowedge.flows.cmd_train",
        "train a detector on normal samples: images, sounds or robot logs "
        "(writes a checkpoint + model card)",
    ),
    "eval": (
        "flowedge.flows.cmd_eval",
        "evaluate a checkpoint on a labelled test set (AUROC, F1, plots)",
    ),
    "demo": (
        "flowedge.cmd_demo",
        "offline demo: generate data, train, evaluate, stream, publish",
    ),
    "calibrate": ("flowedge.calibration.cmd", "choose a threshold from held-out normal data"),
    "export": (
        "flowedge.export.cmd",
        "export to ONNX (with parity check) or build a TensorRT engine",
    ),
    "run": (
        "flowedge.edge.cmd_run",
        "run the station loop: capture -> preprocess -> infer -> publish",
    ),
    "predict": (
        "flowedge.cmd_predict",
        "score sample files and folders (any modality the model takes) into a CSV",
    ),
    "check": ("flowedge.edge.cmd_check", "try model, sources, broker and spool before enabling"),
    "history": (
        "flowedge.cmd_history",
        "query, export and review the station's history (decisions, evidence, verdicts)",
    ),
    "historian": (
        "flowedge.cmd_historian",
        "store many stations' decisions from the broker in PostgreSQL, each once, asking "
        "stations again for what the broker lost",
    ),
    "web-user": (
        "flowedge.edge.web.cmd_user",
        "add a user of the station's web page (web sink), or change its role or password",
    ),
    "upgrade-card": ("flowedge.cmd_upgrade_card", "rewrite a 2.x checkpoint card as format 3.0"),
    "opcua-user": (
        "flowedge.edge.cmd_opcua_user",
        "add a user (read or write role) to the OPC UA sink's users file (hashed, 0600)",
    ),
}

WIDTH = max(map(len, COMMANDS))  # the command column of --help
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

EPILOG = """commands:
{commands}

exit codes: 0 ok, 1 internal error, 2 bad usage or config (also a path that
            does not exist), 3 unusable data, 4 unusable or mismatched model file,
            5 a check failed (parity, calibration, target), 130 interrupted (Ctrl-C)
see 'flowedge COMMAND --help' for each command"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep descriptions as written and show the default of each option that takes a value
    (unless it has none or its help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowedge",
        description="Normalizing-flow anomaly detection, from training to the PLC.",
        epilog=EPILOG.format(
            commands="\n".join(f"  {n:<{WIDTH}} {t}" for n, (_, t) in COMMANDS.items())
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"flowedge {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see below")
    return parser


def _version() -> str:
    from flowedge import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    split = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    top_args = top.parse_args(argv[: split + 1])
    logging.basicConfig(
        level=logging.DEBUG if top_args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run_command(top_args.command, argv[split + 1 :])
    except FlowedgeError as exc:
        print(f"flowedge {top_args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"flowedge {top_args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:  # a bug: keep the traceback for the report
        logging.getLogger("flowedge").exception("internal error in 'flowedge %s'", top_args.command)
        return EXIT_INTERNAL


def command_parser(name: str) -> tuple[argparse.ArgumentParser, ModuleType]:
    """The subcommand's parser (defaults shown in --help) and its module."""
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog=f"flowedge {name}", description=help_text, formatter_class=HelpFormatter
    )
    module.add_arguments(parser)
    _settle(parser)
    return parser, module


def _settle(parser: argparse.ArgumentParser) -> None:
    """What every command's parser gets, subcommands (export onnx|trt) included: defaults in
    --help, and path arguments that refuse a path no file system takes (exit 2, not a
    traceback from the first ``stat``)."""
    for action in parser._actions:
        if action.type is Path:
            action.type = bounded_path
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = HelpFormatter
                _settle(sub)


def _run_command(name: str, argv: list[str]) -> int:
    """Import, parse and run; a package of a missing extra says which extra to install."""
    with needs_extras(f"flowedge {name}"):
        parser, module = command_parser(name)
        args = parser.parse_args(argv)
        return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
