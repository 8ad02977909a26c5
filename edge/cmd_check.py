"""``flowedge check --config X.yaml``: everything the station needs, tried once, before enabling it.

An integrator runs it before ``systemctl enable --now flowedge@<station>``: it
validates the file, opens the model and its threshold, runs each source kind's own
check (a first sample where one can be had without the line running), each enabled
sink kind's own check (the MQTT broker with the station's credentials and TLS, under
a ``-check`` client id so a running station is not disconnected) and checks the
spool can be written. One ``OK``/``FAIL`` line per check with what
to do; exit 0 only when all pass, else the most basic failure's code (2 config or a
path that does not exist, 3 unreadable data, 4 model mismatch, 5 a check failed).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from flowedge.core.errors import EXIT_OK, ConfigError, FlowedgeError
from flowedge.core.outpaths import check_output_dir, check_output_file
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.config import FlowedgeConfig, load_config
from flowedge.edge.loop.baseline import check_rebaseline
from flowedge.edge.loop.policy import load_policy
from flowedge.edge.loop.recipes import open_model
from flowedge.edge.models_config import ModelConfig
from flowedge.edge.sinks import SINK_KINDS
from flowedge.edge.sources import SOURCE_KINDS, SourceBaseConfig

DEFAULT_TIMEOUT_S = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="station config.yaml")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for a camera frame or the broker's CONNACK ({DEFAULT_TIMEOUT_S:g})",
    )


def check_model(cfg: FlowedgeConfig) -> list[CheckResult]:
    """The model opens with its backend, and a threshold (calibration or fixed) goes with it;
    with recipes, each recipe's."""
    if cfg.recipes is None:
        return _check_one(cfg, cfg.model, "model", "model", "threshold")
    results = []
    for recipe, model in cfg.recipes.models.items():
        key = f"recipes.models.{recipe}"
        results += _check_one(cfg, model, key, f"recipe {recipe}", f"recipe {recipe} threshold")
    return results


def _check_one(
    cfg: FlowedgeConfig, model: ModelConfig, key: str, name: str, threshold_name: str
) -> list[CheckResult]:
    try:
        backend = open_model(model)
    except FlowedgeError as exc:
        return [failed(name, str(exc), exc.exit_code)]
    try:
        card = backend.card
        results = [
            passed(name, f"{model.path}: {card.model_id} on {model.backend} ({model.device})")
        ]
        try:
            policy = load_policy(cfg, card, None, model, key)
            check_rebaseline(model.rebaseline, card, key)
        except FlowedgeError as exc:
            return [*results, failed(threshold_name, str(exc), exc.exit_code)]
        origin = f"calibration {model.calibration}" if policy.calibration else f"{key}.threshold"
        return [*results, passed(threshold_name, f"{policy.threshold:g} from {origin}")]
    finally:
        backend.close()


def check_source(source: SourceBaseConfig, timeout_s: float) -> CheckResult:
    """The source kind's own check (a first sample where one comes without the line running)."""
    return SOURCE_KINDS[source.kind].check(source, timeout_s)


def check_sinks(cfg: FlowedgeConfig, timeout_s: float) -> list[CheckResult]:
    """Each enabled sink's own check; with none enabled, say where the records stay."""
    sinks = cfg.active_sinks()
    if not sinks:
        return [
            passed("sinks", "no sink enabled (mqtt.enabled is false): records stay in the spool")
        ]
    return [SINK_KINDS[sink.kind].check(sink, cfg.site, cfg.station, timeout_s) for sink in sinks]


def check_writable(name: str, check: Callable[[], None], detail: str) -> CheckResult:
    try:
        check()
    except FlowedgeError as exc:
        return failed(name, str(exc), exc.exit_code)
    return passed(name, detail)


def run_checks(cfg: FlowedgeConfig, timeout_s: float) -> list[CheckResult]:
    results = check_model(cfg)
    results += [check_source(source, timeout_s) for source in cfg.sources]
    results += check_sinks(cfg, timeout_s)
    spool = cfg.spool.path
    results.append(
        check_writable(
            "spool", lambda: check_output_file(spool, "spool.path"), f"{spool} can be written"
        )
    )
    folders = (
        ("heatmaps", cfg.pipeline.heatmaps, cfg.pipeline.heatmap_dir, "pipeline.heatmap_dir"),
        (
            "evidence",
            cfg.pipeline.evidence.inputs,
            cfg.pipeline.evidence.dir,
            "pipeline.evidence.dir",
        ),
    )
    for name, mode, folder, key in folders:
        if mode != "none":
            results.append(
                check_writable(
                    name,
                    lambda folder=folder, key=key: check_output_dir(folder, key),
                    f"{folder} can be written",
                )
            )
    return results


def run(args: argparse.Namespace) -> int:
    if not 0 < args.timeout <= 3600:
        raise ConfigError(f"--timeout must be in (0, 3600] seconds (got {args.timeout})")
    try:
        cfg = load_config(args.config)
    except FlowedgeError as exc:
        print(failed("config", str(exc), exc.exit_code).line())
        return exc.exit_code
    print(passed("config", f"{args.config}: {len(cfg.sources)} source(s)").line())
    results = run_checks(cfg, args.timeout)
    for result in results:
        print(result.line(), flush=True)
    failures = [r.exit_code for r in results if not r.ok]
    if failures:
        print(f"{len(failures)} check(s) failed: fix them before enabling the service")
    return min(failures, default=EXIT_OK)
