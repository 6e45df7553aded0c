"""Prometheus text-format metrics for the controller (no client library needed for a handful of series)."""

from __future__ import annotations

from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.hist: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.sums: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = {}

    def observe(self, api: str, status: int, seconds: float) -> None:
        self.requests[(api, status)] += 1
        h = self.hist[api]
        for i, b in enumerate(BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-1] += 1
        self.sums[api] += seconds

    def render(self) -> str:
        out = ["# HELP zstack_api_requests_total API calls by name and HTTP status.",
               "# TYPE zstack_api_requests_total counter"]
        for (api, status), n in sorted(self.requests.items()):
            out.append(f'zstack_api_requests_total{{api="{api}",status="{status}"}} {n}')
        out += ["# HELP zstack_api_request_duration_seconds API call latency.",
                "# TYPE zstack_api_request_duration_seconds histogram"]
        for api, h in sorted(self.hist.items()):
            for b, n in zip(BUCKETS, h, strict=False):
                out.append(f'zstack_api_request_duration_seconds_bucket{{api="{api}",le="{b}"}} {n}')
            out.append(f'zstack_api_request_duration_seconds_bucket{{api="{api}",le="+Inf"}} {h[-1]}')
            out.append(f'zstack_api_request_duration_seconds_sum{{api="{api}"}} {self.sums[api]:.6f}')
            out.append(f'zstack_api_request_duration_seconds_count{{api="{api}"}} {h[-1]}')
        for name, v in sorted(self.gauges.items()):
            out += [f"# TYPE {name} gauge", f"{name} {v}"]
        return "\n".join(out) + "\n"
