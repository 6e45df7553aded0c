"""The agent's Prometheus metrics (``prometheus_client``, one registry per agent application).

Label values come from closed sets only: the agent's registered route patterns (``unknown`` for any other
path), HTTP statuses, event kinds and outcomes named in code, and libvirt domain states.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
UNKNOWN = "unknown"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("zstack_agent_requests", "Agent HTTP requests by route and status.",
                                ("path", "status"), registry=self.registry)
        self.duration = Histogram("zstack_agent_request_seconds", "Agent HTTP request durations.", ("path",),
                                  buckets=BUCKETS, registry=self.registry)
        self.domains = Gauge("zstack_agent_domains", "Libvirt domains on this host by state.", ("state",),
                             registry=self.registry)
        self.events = Counter("zstack_agent_events", "VM events by kind and outcome (reported, swallowed, sent, "
                              "refused, dropped).", ("kind", "outcome"), registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """``path`` is a registered route pattern or :data:`UNKNOWN`, never a raw request path."""
        self.requests.labels(path, str(status)).inc()
        self.duration.labels(path).observe(seconds)

    def count_event(self, kind: str, outcome: str) -> None:
        self.events.labels(kind, outcome).inc()

    def render(self, domains: dict[str, int] | None) -> bytes:
        self.domains.clear()
        for state, n in (domains or {}).items():
            self.domains.labels(state).set(n)
        return generate_latest(self.registry)
