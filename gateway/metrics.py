"""Prometheus metrics of one gateway instance, served on /metrics.

Hot-path counts are plain integers on the router and the server, read when
Prometheus scrapes (a collector), so delivering an event takes no lock. The
delivery latency histogram is observed once per event, from the envelope's
``ts`` to the moment its frame was written to every local recipient.
See docs/gateway.md ("Operations").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.routing import RouterStats


@dataclass
class ServerStats:
    """Counters kept by the server shell."""

    deliveries: int = 0  # frames written to sockets (events, replays, control frames)
    slow_consumers: int = 0  # sockets cut off because their send buffer was full
    overflows: int = 0  # sockets closed because too many live events were held
    resumes: int = 0  # sessions started with positions (client resume)
    repairs: int = 0  # sessions repaired from PostgreSQL after a Pub/Sub break
    replayed: int = 0  # messages sent from PostgreSQL (resume, repair, gap fill)
    gap_fills: int = 0  # out-of-order gaps closed from PostgreSQL
    catch_ups: int = 0  # conversations too far behind: told to use history
    auth_failures: int = 0  # bad or expired tokens, missing hello
    protocol_errors: int = 0  # malformed or unknown client frames


class _Collector(Collector):
    def __init__(self, read: Callable[[], tuple[ServerStats, RouterStats, int, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        server, router, connections, breaks = self.read()
        gauge = GaugeMetricFamily("whatschat_gateway_connections", "Open authenticated sockets")
        gauge.add_metric([], connections)
        yield gauge
        counters = {
            "deliveries": (server.deliveries, "Frames written to sockets"),
            "events": (router.events, "Envelopes read from Redis and routed"),
            "presence_changes": (router.presence, "Presence changes routed"),
            "resumes": (server.resumes, "Sessions that resumed with positions"),
            "repairs": (server.repairs, "Sessions repaired after a Pub/Sub break"),
            "replayed_messages": (server.replayed, "Messages replayed from PostgreSQL"),
            "gap_fills": (server.gap_fills, "Out-of-order gaps filled from PostgreSQL"),
            "catch_ups": (server.catch_ups, "Conversations sent to history (too far behind)"),
            "auth_failures": (server.auth_failures, "Failed or missing authentication"),
            "protocol_errors": (server.protocol_errors, "Malformed or unknown client frames"),
            "pubsub_breaks": (breaks, "Pub/Sub connections lost"),
        }
        for name, (value, help_text) in counters.items():
            family = CounterMetricFamily(f"whatschat_gateway_{name}", help_text)
            family.add_metric([], value)
            yield family
        drops = CounterMetricFamily(
            "whatschat_gateway_drops", "Sockets or events dropped, by reason", labels=["reason"]
        )
        drops.add_metric(["slow_consumer"], server.slow_consumers)
        drops.add_metric(["held_overflow"], server.overflows)
        drops.add_metric(["bad_envelope"], router.dropped)
        yield drops


class Metrics:
    """The registry of one gateway instance."""

    def __init__(self, read: Callable[[], tuple[ServerStats, RouterStats, int, int]]) -> None:
        self.registry = CollectorRegistry()  # this instance's metrics only
        self.registry.register(_Collector(read))
        self.latency = Histogram(
            "whatschat_gateway_delivery_latency_seconds",
            "From the envelope's ts to the frame written to every local recipient",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )  # observed once per routed event

    def routed(self, ts_ms: int, recipients: int) -> None:
        if recipients:
            self.latency.observe(max(0.0, time.time() - ts_ms / 1000))

    def render(self) -> bytes:
        return generate_latest(self.registry)
