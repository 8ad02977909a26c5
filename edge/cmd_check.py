"""``flowedge check --config X.yaml``: everything the station needs, tried once, before enabling it.

An integrator runs it before ``systemctl enable --now flowedge@<station>``: it
validates the file, opens the model and its threshold, takes a first sample from
each source, connects to the broker with the station's credentials and TLS
(under a ``-check`` client id, so a running station is not disconnected) and
checks the spool can be written. One ``OK``/``FAIL`` line per check with what
to do; exit 0 only when all pass, else the most basic failure's code (2 config or a
path that does not exist, 3 unreadable data, 4 model mismatch, 5 a check failed).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from flowedge.backends import open_backend
from flowedge.core.errors import (
    EXIT_CHECK,
    EXIT_DATA,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    FlowedgeError,
)
from flowedge.core.outpaths import check_output_dir, check_output_file
from flowedge.edge.config import FlowedgeConfig, SourceConfig, load_config
from flowedge.edge.mqtt_client import new_client
from flowedge.edge.policy import load_policy
from flowedge.edge.publisher import AUTH_FAILURES, UNSUPPORTED_PROTOCOL
from flowedge.edge.sources import make_source

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    exit_code: int = EXIT_OK

    def line(self) -> str:
        return f"{'OK' if self.ok else 'FAIL':<4}  {self.name:<20} {self.detail}"


def passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, True, detail)


def failed(name: str, detail: str, exit_code: int = EXIT_CHECK) -> CheckResult:
    return CheckResult(name, False, detail, exit_code)


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
    """The model opens with its backend, and a threshold (calibration or fixed) goes with it."""
    try:
        backend = open_backend(
            cfg.model.path, cfg.model.backend, cfg.model.device, cfg.model.intra_op_threads
        )
    except FlowedgeError as exc:
        return [failed("model", str(exc), exc.exit_code)]
    try:
        card = backend.card
        results = [
            passed(
                "model",
                f"{cfg.model.path}: {card.model_id} on {cfg.model.backend} ({cfg.model.device})",
            )
        ]
        try:
            policy = load_policy(cfg, card)
        except FlowedgeError as exc:
            return [*results, failed("threshold", str(exc), exc.exit_code)]
        origin = f"calibration {cfg.model.calibration}" if policy.calibration else "model.threshold"
        return [*results, passed("threshold", f"{policy.threshold:g} from {origin}")]
    finally:
        backend.close()


def check_source(source: SourceConfig, timeout_s: float) -> CheckResult:
    """Folders must be readable; a folder replay and a camera must deliver a first sample."""
    name = f"source {source.name}"
    if source.kind in ("folder", "watch"):
        folder = Path(source.path)
        if not folder.is_dir():
            return failed(
                name,
                f"{source.kind} path {folder} is not a directory; create it or fix the path",
                EXIT_USAGE,
            )
        if not os.access(folder, os.R_OK | os.X_OK):
            return failed(
                name, f"{folder} is not readable by this user; fix its permissions", EXIT_DATA
            )
        if source.kind == "watch":
            return passed(name, f"watching {folder} for {source.pattern}")
    if source.kind == "tail":  # a cycle only comes when the robot runs: the log must be there
        log_file = Path(source.path)
        if not log_file.is_file() or not os.access(log_file, os.R_OK):
            code = EXIT_DATA if log_file.is_file() else EXIT_USAGE
            return failed(
                name, f"log {log_file} is missing or unreadable; check sources[].path", code
            )
        return passed(name, f"tailing {log_file}")
    if source.kind == "microphone":  # a motion only comes when the part moves: open the device
        return check_microphone(name, source)
    if source.kind == "ethercat":  # a cycle only comes when the robot runs: the NIC must be there
        return check_ethercat(name, source)
    first, problem = first_sample(source, timeout_s)
    if first is None:
        return failed(name, problem)
    return passed(name, f"{source.kind} delivered {first}")


def check_ethercat(name: str, source: SourceConfig) -> CheckResult:
    """pysoem is installed and the configured network interface exists on this machine."""
    from flowedge.edge.ethercat import require_pysoem

    try:
        require_pysoem()
    except ConfigError as exc:
        return failed(name, str(exc), EXIT_USAGE)
    interface = source.ethercat.interface
    if not (Path("/sys/class/net") / interface).exists():
        return failed(name, f"network interface {interface!r} not found; check ethercat.interface")
    return passed(name, f"EtherCAT on {interface} (pysoem installed)")


def check_microphone(name: str, source: SourceConfig) -> CheckResult:
    """PortAudio is there and the configured device opens at the configured rate."""
    from flowedge.edge.microphone import open_sounddevice

    try:
        stream = open_sounddevice(source.microphone, lambda *_: None)
        stream.close()
    except ConfigError as exc:
        return failed(name, str(exc), EXIT_USAGE)
    except Exception as exc:  # PortAudio's own error: no such device, rate not supported
        return failed(name, f"microphone {source.microphone.device!r} does not open ({exc})")
    return passed(name, f"microphone {source.microphone.device!r} opens")


def first_sample(source: SourceConfig, timeout_s: float) -> tuple[str | None, str]:
    """The first frame of the real source, read on a helper thread.

    Returns its description, or None and the source's own last event (camera lost,
    folder empty) or a timeout message.
    """
    stop = threading.Event()
    got: list[str] = []
    events: list[str] = []
    done = threading.Event()

    def record(_source: str | None, _kind: str, message: str, **_details: Any) -> None:
        events.append(message)

    def read() -> None:
        try:
            for frame in make_source(source, record).frames(stop):
                shape = getattr(frame.payload, "shape", None)
                got.append(
                    f"{frame.part_id!r}" + (f" ({'x'.join(map(str, shape))})" if shape else "")
                )
                break
        except Exception as exc:  # the source's own failure is the check's answer
            events.append(str(exc))
        finally:
            done.set()

    threading.Thread(target=read, name=f"check-{source.name}", daemon=True).start()
    done.wait(timeout_s)
    stop.set()
    if got:
        return got[0], ""
    if events:
        return None, events[-1]
    return None, f"no sample within {timeout_s:g} s (check the uri, cabling and --timeout)"


def check_broker(cfg: FlowedgeConfig, timeout_s: float) -> CheckResult:
    """Connect and disconnect with the station's credentials and TLS; show the CONNACK."""
    c = cfg.mqtt
    name = f"broker {c.host}:{c.port}"
    if not c.enabled:
        return passed("broker", "mqtt.enabled is false: decisions stay in the spool")
    protocols = {"5": [mqtt.MQTTv5], "3.1.1": [mqtt.MQTTv311]}.get(
        c.protocol, [mqtt.MQTTv5, mqtt.MQTTv311]
    )
    for protocol in protocols:  # auto: MQTT 5, then 3.1.1 if the broker does not speak 5
        result, reason = _connect_once(cfg, name, protocol, timeout_s)
        if reason is None or reason.value not in UNSUPPORTED_PROTOCOL:
            break
    return result


def _connect_once(
    cfg: FlowedgeConfig, name: str, protocol: int, timeout_s: float
) -> tuple[CheckResult, Any]:
    """One CONNECT: the result and the CONNACK reason code (None without a CONNACK)."""
    c = cfg.mqtt
    version = "MQTT 5" if protocol == mqtt.MQTTv5 else "MQTT 3.1.1"
    client_id = f"{cfg.mqtt_client_id}-check"
    connack: list[Any] = []
    answered = threading.Event()

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:  # noqa: ANN001
        connack.append(reason_code)
        answered.set()

    try:
        client = new_client(c, client_id, protocol)
        client.on_connect = on_connect
        client.connect(c.host, c.port, keepalive=c.keepalive_s)
    except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake/certificates
        return failed(
            name,
            f"cannot connect ({exc}): check mqtt.host, mqtt.port, the firewall and mqtt.tls",
        ), None
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return failed(
                name, f"no CONNACK within {timeout_s:g} s ({version}): is it an MQTT broker?"
            ), None
        reason = connack[0]
        if reason.is_failure:
            hint = (
                f"check mqtt.username / ${c.username_env} and ${c.password_env} and the ACL"
                if reason.value in AUTH_FAILURES
                else "check the broker configuration"
            )
            return failed(name, f"refused ({version}, CONNACK {reason}): {hint}"), reason
        return passed(name, f"connected ({version}, CONNACK {reason}) as {client_id}"), reason
    finally:
        client.disconnect()
        client.loop_stop()


def check_writable(name: str, check: Callable[[], None], detail: str) -> CheckResult:
    try:
        check()
    except FlowedgeError as exc:
        return failed(name, str(exc), exc.exit_code)
    return passed(name, detail)


def run_checks(cfg: FlowedgeConfig, timeout_s: float) -> list[CheckResult]:
    results = check_model(cfg)
    results += [check_source(source, timeout_s) for source in cfg.sources]
    results.append(check_broker(cfg, timeout_s))
    spool = cfg.spool.path
    results.append(
        check_writable(
            "spool", lambda: check_output_file(spool, "spool.path"), f"{spool} can be written"
        )
    )
    if cfg.pipeline.heatmaps != "none":
        folder = cfg.pipeline.heatmap_dir
        results.append(
            check_writable(
                "heatmaps",
                lambda: check_output_dir(folder, "pipeline.heatmap_dir"),
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
