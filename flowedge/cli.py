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

from flowedge.core.errors import EXIT_INTERNAL, EXIT_USAGE, FlowedgeError

# name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "flowedge.flows.cmd_train",
        "train a detector on normal images (writes a checkpoint + model card)",
    ),
    "eval": (
        "flowedge.flows.cmd_eval",
        "evaluate a checkpoint on a labelled test set (AUROC, F1, plots)",
    ),
    "demo": (
        "flowedge.edge.cmd_demo",
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
    "upgrade-card": ("flowedge.cmd_upgrade_card", "rewrite a 2.x checkpoint card as format 3.0"),
}

EPILOG = """commands:
{commands}

exit codes: 0 ok, 1 internal error, 2 bad usage or config, 3 bad data,
            4 model mismatch, 5 a check failed (parity, calibration, target)
see 'flowedge COMMAND --help' for each command"""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowedge",
        description="Normalizing-flow anomaly detection, from training to the PLC.",
        epilog=EPILOG.format(
            commands="\n".join(f"  {n:<10} {t}" for n, (_, t) in COMMANDS.items())
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    module_name, help_text = COMMANDS[top_args.command]
    logging.basicConfig(
        level=logging.DEBUG if top_args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"flowedge {top_args.command}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[split + 1 :])
    try:
        return int(module.run(args) or 0)
    except FlowedgeError as exc:
        print(f"flowedge {top_args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_USAGE
    except Exception:  # a bug: keep the traceback for the report
        logging.getLogger("flowedge").exception("internal error in 'flowedge %s'", top_args.command)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
