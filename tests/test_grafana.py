"""The historian's documentation runs: the Grafana dashboard loads and each of its queries,
and each query of docs/historian.md, runs against a test database holding decisions; the
schema shown there is the one the historian creates."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import decision, encoded  # noqa: E402

pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'flowedge[historian]')")

import psycopg  # noqa: E402

from flowedge.historian.config import DatabaseConfig  # noqa: E402
from flowedge.historian.rows import parse  # noqa: E402
from flowedge.historian.schema import KEY, TABLE  # noqa: E402
from flowedge.historian.store import Rejected, Store  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
DASHBOARD = DOCS / "grafana" / "flowedge.json"
UNITS = {"s": 1, "m": 60, "h": 3600}


def grafana(sql: str) -> str:
    """The SQL Grafana sends: its macros and the dashboard's variables expanded."""

    def group(match: re.Match) -> str:
        seconds = int(match.group(2)) * UNITS[match.group(3)]
        return f'floor(extract(epoch FROM {match.group(1)}) / {seconds}) * {seconds} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\((\w+), '(\d+)([smh])'\)", group, sql)
    sql = re.sub(
        r"\$__timeFilter\((\w+)\)",
        r"\1 BETWEEN now() - interval '1 day' AND now() + interval '1 minute'",
        sql,
    )
    sql = sql.replace("$site", "'plant'").replace("$station", "'line1'")
    assert "$" not in sql, sql
    return sql


def filled(dsn: str) -> None:
    """Decisions 1..6 of plant/line1/cam1 without 4; 3, 5 and 6 ANOMALY; 6 re-sent."""
    topic = "flowedge/plant/line1/cam1/decision"
    rows = [parse(topic, encoded(decision(seq, 1.0 + seq)), "flowedge") for seq in (1, 2, 3, 5)]
    rows.append(parse(topic + "/resent", encoded(decision(6, 7.0)), "flowedge"))
    store = Store(DatabaseConfig(dsn=dsn))
    store.write(rows, [Rejected(topic, "not UTF-8 JSON", b"\xff")])
    store.close()


def run_all(dsn: str, queries: list[str]) -> list[list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return [conn.execute(sql).fetchall() for sql in queries]


def test_the_dashboard_loads_and_its_queries_run(pg_dsn: str) -> None:
    filled(pg_dsn)
    dashboard = json.loads(DASHBOARD.read_text())
    panels = {panel["title"]: panel["targets"][0]["rawSql"] for panel in dashboard["panels"]}
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert all(
        p["datasource"]["type"] == "grafana-postgresql-datasource" for p in dashboard["panels"]
    )
    results = dict(
        zip(panels, run_all(pg_dsn, [grafana(sql) for sql in panels.values()]), strict=True)
    )
    assert run_all(pg_dsn, [grafana(sql) for sql in variables]) == [[("plant",)], [("line1",)]]
    assert sum(row[2] for row in results["Decisions per minute"]) == 5
    assert results["Alarm rate per station (%)"] == [("line1", 60)]
    assert sorted(row[4] for row in results["Latest anomalies"]) == [3, 5, 6]
    assert results["Recovered by re-send"] == [(1,)] and results["Open gaps"] == [(1,)]
    assert results["Rejected messages"] == [(1,)]
    assert results["Ingest lag p99 (ms)"][0][0] >= 0


def sql_blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", (DOCS / "historian.md").read_text(), re.S)


def test_the_documented_queries_run_and_the_documented_schema_is_the_real_one(pg_dsn: str) -> None:
    filled(pg_dsn)
    schema, *queries = sql_blocks()
    words = " ".join(TABLE.format(key=", ".join(KEY)).replace(" IF NOT EXISTS", "").split())
    assert words in " ".join(schema.split())
    statements = [s for block in queries for s in block.split(";") if s.strip()]
    results = run_all(pg_dsn, statements)
    assert len(results) == 4
    shift, part, gaps, recovered = results
    assert sum(row[3] for row in shift) == 5 and sum(row[4] for row in shift) == 3
    assert [row[:4] for row in part] == [("plant", "line1", "cam1", 1)]
    assert gaps == [("plant", "line1", "cam1", 4, 4)]
    assert recovered == [("plant", "line1", 1, 5)]
