"""A live EtherCAT bus (``kind: ethercat``): process data sampled each cycle, cut into cycles.

The station is the bus master (pysoem, the ``robot`` extra, imported only when such a
source starts). Every ``cycle_s`` one process data exchange is made and the configured
signals are decoded from the slaves' input PDOs (:func:`decode_pdo`, a pure function).
The samples are cut by the source's segmenter exactly like a tailed log's rows, so a
cycle counts once the next one has started, and each cycle is a :class:`Frame`. Live
data cannot be read again: a cycle taken but not answered before a restart is ERROR.
A bus that cannot be opened or stops answering is a ``source_lost`` event and is
opened again with backoff.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from flowedge.core.errors import EXIT_USAGE, BadInputError, ConfigError
from flowedge.core.validation import Strict
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sources.base import EventSink, Frame, SourceBaseConfig, SourceKind
from flowedge.edge.sources.tail import cycle_frame, resume_row
from flowedge.modalities.series_cycles import MAX_CYCLE_ROWS, SegmentConfig, cycle_spans
from flowedge.modalities.series_io import SignalTable

log = logging.getLogger(__name__)


PDOType = Literal["int8", "int16", "int32", "uint8", "uint16", "uint32", "float32"]


class PDOSignal(Strict):
    """One signal in a slave's input process data (little-endian, as EtherCAT sends it)."""

    name: str
    slave: int = Field(ge=0, le=65534, description="0-based position of the slave on the bus")
    offset: int = Field(ge=0, le=65535, description="byte offset in the slave's input PDO")
    type: PDOType
    scale: float = 1.0  # engineering value = raw * scale
    unit: str = ""


class EtherCATConfig(Strict):
    """A live EtherCAT bus (``kind: ethercat``): the NIC, what to decode and how often."""

    interface: str = Field(description="network interface of the bus, e.g. eth1")
    cycle_s: float = Field(0.004, gt=0, le=1.0, description="process data cycle period")
    signals: list[PDOSignal] = Field(min_length=1)
    block_rows: int = Field(
        250, ge=1, le=MAX_CYCLE_ROWS, description="samples gathered before cycles are cut"
    )
    receive_timeout_us: int = Field(2000, ge=1, le=1_000_000)


class EtherCATSourceConfig(SourceBaseConfig):
    kind: Literal["ethercat"] = "ethercat"
    modality: Literal["series"] = "series"  # cycles of named signals
    ethercat: EtherCATConfig
    segment: SegmentConfig | None = None  # how cycles are cut; None: fixed windows


# EtherCAT process data is little-endian
_FORMATS = {
    name: struct.Struct(code)
    for name, code in {
        "int8": "<b",
        "int16": "<h",
        "int32": "<i",
        "uint8": "<B",
        "uint16": "<H",
        "uint32": "<I",
        "float32": "<f",
    }.items()
}


def decode_pdo(inputs: Sequence[bytes], signals: Sequence[PDOSignal]) -> list[float]:
    """The engineering value of each signal from the slaves' input PDOs (``inputs[slave]``)."""
    values = []
    for signal in signals:
        layout = _FORMATS[signal.type]
        data = inputs[signal.slave] if signal.slave < len(inputs) else b""
        if signal.offset + layout.size > len(data):
            raise BadInputError(
                f"PDO signal {signal.name!r}: {signal.type} at byte {signal.offset} of slave "
                f"{signal.slave} lies outside its {len(data)}-byte input PDO "
                f"({len(inputs)} slave(s) on the bus); fix the source's ethercat.signals"
            )
        values.append(layout.unpack_from(data, signal.offset)[0] * signal.scale)
    return values


class Bus(Protocol):
    """An opened EtherCAT master in operational state."""

    def exchange(self) -> Sequence[bytes]:
        """One process data cycle: each slave's input PDO."""

    def close(self) -> None: ...


BusOpener = Callable[[EtherCATConfig], Bus]


def require_pysoem() -> Any:
    """The ``pysoem`` module, or a ConfigError saying what to install (never a traceback)."""
    try:
        import pysoem
    except ImportError:
        raise ConfigError(
            "ethercat sources need the Python package 'pysoem': "
            "pip install 'flowedge[robot]' (or pip install pysoem)"
        ) from None
    return pysoem


class PysoemBus:
    """The bus through pysoem (SOEM): open the NIC, map the PDOs, bring the slaves to OP."""

    def __init__(self, settings: EtherCATConfig) -> None:
        self._pysoem = pysoem = require_pysoem()
        self.timeout_us = settings.receive_timeout_us
        self.master = pysoem.Master()
        self.master.open(settings.interface)  # needs root or CAP_NET_RAW on the NIC
        try:
            if self.master.config_init() <= 0:
                raise ConnectionError(f"no EtherCAT slaves answer on {settings.interface}")
            self.master.config_map()
            self.master.state = pysoem.OP_STATE
            self.master.write_state()
            self.exchange()
            if self.master.state_check(pysoem.OP_STATE, 50_000) != pysoem.OP_STATE:
                raise ConnectionError("the slaves did not reach the operational state")
        except BaseException:
            self.master.close()
            raise

    def exchange(self) -> list[bytes]:
        self.master.send_processdata()
        if self.master.receive_processdata(self.timeout_us) <= 0:
            raise ConnectionError("no process data came back (working counter 0)")
        return [bytes(slave.input) for slave in self.master.slaves]

    def close(self) -> None:
        self.master.state = self._pysoem.INIT_STATE
        self.master.write_state()
        self.master.close()


class SampleCutter:
    """Samples in, complete cycles out: the tail source's segmenting on rows held in memory."""

    def __init__(self, name: str, signals: Sequence[str], segment: SegmentConfig) -> None:
        self.name, self.names, self.segment = name, list(signals), segment
        cycle_column = segment.column if segment.mode == "cycle_id" else None
        self.inputs = tuple(n for n in self.names if n != cycle_column)
        self.times: list[float] = []
        self.rows: list[list[float]] = []
        self.first_row = 0  # row number (since the source started) of the first row held

    def add(self, time_s: float, values: list[float]) -> None:
        self.times.append(time_s)
        self.rows.append(values)

    def cycles(self) -> Iterator[tuple[str, SignalTable]]:
        """(cycle id, cycle) of each cycle complete so far; its rows are then let go."""
        if not self.rows:
            return
        values = np.asarray(self.rows, dtype=np.float64)
        table = SignalTable(
            name=self.name,
            columns={name: values[:, i] for i, name in enumerate(self.names)},
            time_s=np.asarray(self.times),
            signals=self.inputs,
            first_row=self.first_row,
        )
        taken = 0
        for span in cycle_spans(table, self.segment, complete_only=True):
            taken = resume_row(self.segment, span, len(table))
            yield span.cycle_id, table.rows(span.start, span.stop, f"{self.name}:{span.cycle_id}")
        del self.times[:taken], self.rows[:taken]
        self.first_row += taken


class EtherCATSource:
    """Cycles from the process data of a live EtherCAT bus (``kind: ethercat``)."""

    modality = "series"

    def __init__(
        self, cfg: EtherCATSourceConfig, events: EventSink, open_bus: BusOpener | None = None
    ) -> None:
        self.name, self.cfg, self.settings, self.events = cfg.name, cfg, cfg.ethercat, events
        self.segment = cfg.segment or SegmentConfig(mode="window")
        if open_bus is None:
            require_pysoem()  # at start: a missing package is a setup error, exit 2
        self.open_bus = open_bus or PysoemBus

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        delay = self.cfg.reconnect_min_s
        while not stop.is_set():
            try:
                bus = self.open_bus(self.settings)
            except Exception as exc:  # no such NIC, no permission, no slaves: retry
                self._lost(f"cannot be opened ({exc})", delay)
                stop.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            delay = self.cfg.reconnect_min_s
            try:
                yield from self._sample(bus, stop)
            except Exception as exc:  # the bus stopped answering, or the mapping is wrong
                self._lost(f"failed ({exc})", delay)
                stop.wait(delay)
            finally:
                bus.close()

    def _sample(self, bus: Bus, stop: threading.Event) -> Iterator[Frame]:
        """Exchange process data every ``cycle_s``; cut cycles every ``block_rows`` samples."""
        signals = self.settings.signals
        cutter = SampleCutter(self.name, [s.name for s in signals], self.segment)
        due, fresh = time.monotonic(), 0
        while not stop.is_set():
            cutter.add(time.time(), decode_pdo(bus.exchange(), signals))
            fresh += 1
            if fresh == self.settings.block_rows:
                fresh = 0
                for cycle_id, cycle in cutter.cycles():
                    yield cycle_frame(cycle, cycle_id)
            due += self.settings.cycle_s
            stop.wait(max(0.0, due - time.monotonic()))

    def _lost(self, why: str, delay: float) -> None:
        self.events(
            self.name,
            "source_lost",
            f"EtherCAT bus on {self.settings.interface!r} {why}; retrying in {delay:.1f} s "
            "(check the NIC name, the cable and that the station may open raw sockets)",
            retry_in_s=delay,
        )


def check(cfg: EtherCATSourceConfig, timeout_s: float) -> CheckResult:
    """pysoem is installed and the configured network interface exists on this machine
    (a cycle only comes when the robot runs)."""
    name = f"source {cfg.name}"
    try:
        require_pysoem()
    except ConfigError as exc:
        return failed(name, str(exc), EXIT_USAGE)
    interface = cfg.ethercat.interface
    if not (Path("/sys/class/net") / interface).exists():
        return failed(name, f"network interface {interface!r} not found; check ethercat.interface")
    return passed(name, f"EtherCAT on {interface} (pysoem installed)")


KIND = SourceKind(EtherCATSourceConfig, lambda cfg, ctx: EtherCATSource(cfg, ctx.events), check)
