"""A tiny Prometheus text-format registry (counters and one histogram), enough for ``/metrics``."""

from __future__ import annotations

from collections import defaultdict

Labels = tuple[tuple[str, str], ...]

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _fmt(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in labels)
    return "{" + inner + "}"


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[Labels, int] = defaultdict(int)
        self.events: dict[Labels, int] = defaultdict(int)
        self._dur_count: dict[str, int] = defaultdict(int)
        self._dur_sum: dict[str, float] = defaultdict(float)
        self._dur_buckets: dict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(("path", path), ("status", str(status)))] += 1
        self._dur_count[path] += 1
        self._dur_sum[path] += seconds
        buckets = self._dur_buckets[path]
        for i, le in enumerate(BUCKETS):
            if seconds <= le:
                buckets[i] += 1

    def count_event(self, kind: str, outcome: str) -> None:
        self.events[(("kind", kind), ("outcome", outcome))] += 1

    def render(self, domains: dict[str, int] | None) -> str:
        out = ["# HELP zstack_agent_requests_total Agent HTTP requests by path and status.",
               "# TYPE zstack_agent_requests_total counter"]
        out += [f"zstack_agent_requests_total{_fmt(k)} {v}" for k, v in sorted(self.requests.items())]
        out += ["# HELP zstack_agent_request_seconds Agent HTTP request durations.",
                "# TYPE zstack_agent_request_seconds histogram"]
        for path in sorted(self._dur_count):
            for le, n in zip(BUCKETS, self._dur_buckets[path], strict=True):
                labels = (("path", path), ("le", str(le)))
                out.append(f"zstack_agent_request_seconds_bucket{_fmt(labels)} {n}")
            out.append(f"zstack_agent_request_seconds_bucket{_fmt((('path', path), ('le', '+Inf')))} "
                       f"{self._dur_count[path]}")
            out.append(f"zstack_agent_request_seconds_sum{_fmt((('path', path),))} {self._dur_sum[path]:.6f}")
            out.append(f"zstack_agent_request_seconds_count{_fmt((('path', path),))} {self._dur_count[path]}")
        out += ["# HELP zstack_agent_domains Libvirt domains on this host by state.",
                "# TYPE zstack_agent_domains gauge"]
        out += [f"zstack_agent_domains{_fmt((('state', s),))} {n}"
                for s, n in sorted((domains or {}).items())]
        out += ["# HELP zstack_agent_events_total VM events by kind and outcome (reported, swallowed, sent, "
                "dropped).", "# TYPE zstack_agent_events_total counter"]
        out += [f"zstack_agent_events_total{_fmt(k)} {v}" for k, v in sorted(self.events.items())]
        return "\n".join(out) + "\n"
