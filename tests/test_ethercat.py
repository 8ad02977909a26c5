"""The EtherCAT source: PDO decoding from byte buffers, cycles from a scripted bus, a real NIC."""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Sequence

import pytest

from flowedge.core.errors import BadInputError
from flowedge.edge.sources import parse_source
from flowedge.edge.sources.ethercat import (
    EtherCATConfig,
    EtherCATSource,
    EtherCATSourceConfig,
    PDOSignal,
    decode_pdo,
)
from flowedge.modalities.series_cycles import SegmentConfig

SIGNALS = [
    PDOSignal(name="cycle", slave=0, offset=0, type="uint16"),
    PDOSignal(name="current", slave=0, offset=2, type="int16", scale=0.01, unit="A"),
    PDOSignal(name="speed", slave=1, offset=4, type="float32", unit="rad/s"),
]


def pdo(cycle: int, current_raw: int, speed: float) -> list[bytes]:
    """The two slaves' input PDOs as the bus delivers them (little-endian)."""
    return [struct.pack("<Hh", cycle, current_raw), b"\x00" * 4 + struct.pack("<f", speed)]


def test_signals_are_decoded_from_their_slave_offset_and_type_and_scaled() -> None:
    assert decode_pdo(pdo(7, -250, 1.5), SIGNALS) == [7.0, pytest.approx(-2.5), 1.5]
    every_type = [
        PDOSignal(name=t, slave=0, offset=0, type=t)
        for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32")
    ]
    assert decode_pdo([b"\xff\xff\xff\xff"], every_type) == [-1, 255, -1, 65535, -1, 2**32 - 1]


def test_a_signal_outside_the_slaves_pdo_names_the_signal_and_the_fix() -> None:
    beyond = PDOSignal(name="torque", slave=1, offset=6, type="int32")
    with pytest.raises(BadInputError, match="'torque'.*8-byte input PDO.*ethercat.signals"):
        decode_pdo(pdo(1, 0, 0.0), [beyond])
    with pytest.raises(BadInputError, match="0-byte"):
        decode_pdo(pdo(1, 0, 0.0), [PDOSignal(name="x", slave=5, offset=0, type="int8")])


class ScriptedBus:
    """A bus replaying process data images; then it stops answering."""

    def __init__(self, images: Sequence[list[bytes]]) -> None:
        self.images, self.closed = list(images), False

    def exchange(self) -> list[bytes]:
        if not self.images:
            raise ConnectionError("no process data came back (working counter 0)")
        return self.images.pop(0)

    def close(self) -> None:
        self.closed = True


def ethercat_config(block_rows: int = 2) -> EtherCATSourceConfig:
    return EtherCATSourceConfig(
        name="robot1",
        kind="ethercat",
        ethercat=EtherCATConfig(
            interface="eth9", cycle_s=0.001, signals=SIGNALS, block_rows=block_rows
        ),
        segment=SegmentConfig(column="cycle"),
    )


def test_live_samples_are_cut_into_cycles_like_a_tailed_log() -> None:
    images = [pdo(c, 100 * c + i, float(i)) for c in (1, 2, 3) for i in range(3)]
    bus, events, stop = ScriptedBus(images), [], threading.Event()
    source = EtherCATSource(ethercat_config(), lambda *a, **k: events.append(a), lambda s: bus)
    taken = []
    for frame in source.frames(stop):
        taken.append(frame)
        if len(taken) == 2:
            stop.set()
    assert [f.part_id for f in taken] == ["1", "2"]  # cycle 3 never closed
    assert taken[0].payload.columns["current"].tolist() == pytest.approx([1.0, 1.01, 1.02])
    assert taken[1].payload.first_row == 3 and taken[1].payload.signals == ("current", "speed")
    assert taken[1].context["cycle"]["rows"] == 3
    assert bus.closed


def test_a_bus_that_cannot_be_opened_is_a_source_lost_event() -> None:
    events, stop = [], threading.Event()

    def no_nic(settings: EtherCATConfig) -> ScriptedBus:
        stop.set()
        raise ConnectionError(f"could not open interface {settings.interface}")

    source = EtherCATSource(ethercat_config(), lambda *a, **k: events.append(a), no_nic)
    assert list(source.frames(stop)) == []
    assert events[0][1] == "source_lost" and "'eth9' cannot be opened" in events[0][2]


def test_a_missing_ethercat_section_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="ethercat"):
        parse_source({"name": "robot1", "kind": "ethercat"})


@pytest.mark.skipif(
    not os.environ.get("FLOWEDGE_TEST_ETHERCAT_IFACE"),
    reason="needs an EtherCAT bus: set FLOWEDGE_TEST_ETHERCAT_IFACE to its NIC (and run as root)",
)
def test_a_real_bus_delivers_process_data() -> None:
    from flowedge.edge.sources.ethercat import PysoemBus

    iface = os.environ["FLOWEDGE_TEST_ETHERCAT_IFACE"]
    settings = EtherCATConfig(
        interface=iface, signals=[PDOSignal(name="b0", slave=0, offset=0, type="uint8")]
    )
    bus = PysoemBus(settings)
    try:
        assert len(decode_pdo(bus.exchange(), settings.signals)) == 1
    finally:
        bus.close()
