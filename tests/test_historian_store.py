"""The historian's tables in a real PostgreSQL: each decision once by (site, station, sensor,
seq), what is no decision kept apart, and where each sensor's sequence stands."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import decision, encoded  # noqa: E402

pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'flowedge[historian]')")

import psycopg  # noqa: E402

from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.historian.config import DatabaseConfig, load_historian_config  # noqa: E402
from flowedge.historian.rows import parse  # noqa: E402
from flowedge.historian.store import Rejected, Store  # noqa: E402

TOPIC = "flowedge/plant/line1/cam1/decision"
STREAM = ("plant", "line1", "cam1")


def rows(seqs: list[int], resent: bool = False, **fields: object) -> list:
    """Decisions as published (the same bytes each time they are made)."""
    topic = TOPIC + ("/resent" if resent else "")
    fields.setdefault("captured_utc", "2026-11-23T08:00:00.000Z")
    return [parse(topic, encoded(decision(seq, 2.0 + seq, **fields)), "flowedge") for seq in seqs]


def table(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_each_decision_is_stored_once_and_what_is_none_is_kept_apart(pg_dsn: str) -> None:
    store = Store(DatabaseConfig(dsn=pg_dsn))
    written = store.write(rows([1, 2, 3]), [Rejected(TOPIC, "not UTF-8 JSON", b"\xff")])
    assert (written.stored, written.duplicates, written.rejected) == (3, 0, 1)
    assert store.layout == "table"  # no TimescaleDB here
    again = store.write(rows([2, 3, 4], resent=True), [])  # a redelivery, a recovered one
    assert (again.stored, again.duplicates, again.conflicts) == (1, 2, [])
    other = store.write(rows([1], part_id="another part"), [])  # numbering restarted
    assert other.conflicts == ["plant/line1/cam1 #1"] and other.stored == 0
    store.close()
    assert table(pg_dsn, "SELECT seq, resent FROM flowedge_decisions ORDER BY seq") == [
        (1, False),
        (2, False),
        (3, False),
        (4, True),
    ]
    assert table(pg_dsn, "SELECT topic, reason, payload FROM flowedge_rejected") == [
        (TOPIC, "not UTF-8 JSON", b"\xff")
    ]
    doc = table(pg_dsn, "SELECT document->>'part_id', score FROM flowedge_decisions WHERE seq=1")
    assert doc == [("part_0001.png", 3.0)]


def test_where_a_sensor_stands_gaps_included(pg_dsn: str) -> None:
    store = Store(DatabaseConfig(dsn=pg_dsn))
    assert store.known(STREAM, backfill=True).highest == 0
    store.write(rows([3, 4, 7, 10]), [])
    known = store.known(STREAM, backfill=True)
    assert (known.highest, known.gaps) == (10, [(1, 2), (5, 6), (8, 9)])
    assert store.known(STREAM, backfill=False).gaps == [(5, 6), (8, 9)]
    store.close()


def test_a_second_start_finds_the_tables_and_a_password_never_lives_in_the_file(
    pg_dsn: str, tmp_path: Path
) -> None:
    for _ in range(2):
        store = Store(DatabaseConfig(dsn=pg_dsn))
        store.write(rows([1]), [])
        store.close()
    assert table(pg_dsn, "SELECT count(*) FROM flowedge_decisions") == [(1,)]
    config = tmp_path / "historian.yaml"
    config.write_text("database:\n  dsn: host=db user=historian password=hunter2\n")
    with pytest.raises(ConfigError, match="dsn holds a password: remove it"):
        load_historian_config(config)
    config.write_text("mqtt:\n  topic_prefix: 'flowedge/#'\n")
    with pytest.raises(ConfigError, match="mqtt.topic_prefix"):
        load_historian_config(config)
