"""Prometheus metrics of the controller (``prometheus_client``, one registry per controller).

Label values come only from a closed set: registered API names, the controller's own route patterns, and
``unknown`` for everything else, so no request can add series or put text of its choosing into
``/metrics`` (prometheus_client escapes label values anyway).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNKNOWN = "unknown"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("zstack_api_requests", "API calls by name and HTTP status.",
                                ("api", "status"), registry=self.registry)
        self.duration = Histogram("zstack_api_request_duration_seconds", "API call latency.", ("api",),
                                  buckets=BUCKETS, registry=self.registry)
        self.queues_busy = Gauge("zstack_work_queues_busy", "Per-resource work queues running a task.",
                                 registry=self.registry)
        # Children by (api, status): the label look-up of prometheus_client is the slow part of observe().
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def observe(self, api: str, status: int, seconds: float) -> None:
        """Count one call; ``api`` must be a registered name, a route pattern or ``unknown``."""
        key = (api, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(api, str(status)), self.duration.labels(api))
        child[0].inc()
        child[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
