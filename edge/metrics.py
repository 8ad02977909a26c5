"""Prometheus metrics of one pipeline, in its own registry (tests run several at once)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from pydantic import Field

from flowedge.core.validation import Strict

log = logging.getLogger(__name__)


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


STAGES = ("capture", "preprocess", "infer", "publish", "end_to_end")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "flowedge_stage_seconds",
            "Per-sample latency of each stage",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.samples = Counter("flowedge_samples_total", "Samples captured", ["source"], registry=r)
        self.decisions = Counter(
            "flowedge_decisions_total", "Decisions made", ["source", "decision"], registry=r
        )
        self.drops = Counter(
            "flowedge_dropped_total",
            "Samples dropped by drop_oldest backpressure",
            ["source"],
            registry=r,
        )
        self.bad_inputs = Counter(
            "flowedge_bad_inputs_total", "Samples refused as bad input", ["source"], registry=r
        )
        self.events = Counter("flowedge_events_total", "Events emitted", ["kind"], registry=r)
        self.queue_depth = Gauge("flowedge_queue_depth", "Items waiting", ["queue"], registry=r)
        self.batch_size = Histogram(
            "flowedge_batch_size",
            "Inference batch sizes",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.spool_messages = Gauge(
            "flowedge_spool_messages", "Messages not yet acknowledged", registry=r
        )
        self.spool_overflow = Counter(
            "flowedge_spool_overflow_total", "Messages lost to the spool size limit", registry=r
        )
        self.sink_failures = Counter(
            "flowedge_sink_failures_total",
            "Attempts in which a sink could not deliver or store its records (they wait in the "
            "spool)",
            ["sink"],
            registry=r,
        )
        self.broker_connected = Gauge(
            "flowedge_broker_connected", "1 while the MQTT broker connection is up", registry=r
        )
        self.source_up = Gauge(
            "flowedge_source_up", "1 while a source delivers", ["source"], registry=r
        )
        self.recipe_decisions = Counter(
            "flowedge_recipe_decisions_total",
            "Decisions made per recipe (stations with recipes)",
            ["recipe", "decision"],
            registry=r,
        )
        self.recipe_switch_seconds = Histogram(
            "flowedge_recipe_switch_seconds",
            "How long the first sample of a new recipe waited for its model",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.models_loaded = Gauge(
            "flowedge_models_loaded", "Recipe models opened and kept", registry=r
        )

    def serve(self, cfg: MetricsConfig) -> int:
        """Start the /metrics endpoint; returns the bound port (port 0 picks a free one)."""
        server, _ = start_http_server(cfg.port, addr=cfg.host, registry=self.registry)
        port = int(server.server_address[1])
        log.info("metrics at http://%s:%d/metrics", cfg.host, port)
        self._server = server
        return port

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
