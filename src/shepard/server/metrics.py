"""`/metrics`: the server and its flock in Prometheus' text format (version 0.0.4).

What it counts lives in one `Metrics` object per application (never in module globals: one
process may serve several apps, in tests for one): HTTP requests by route and status with a
latency histogram, and submissions (requests and the jobs they registered). The jobs per
status are read from the catalog at each scrape, so they are right whichever process changed
them.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the request latency histogram."""


class Metrics:
    """Counters of one application, safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.latency: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.submissions = 0
        self.submitted_jobs = 0
        self.bundles = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            counts = self.latency.setdefault(route, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.latency_sum[route] += seconds

    def submitted(self, jobs: int, *, bundle: bool = False) -> None:
        with self._lock:
            self.submissions += 1
            self.submitted_jobs += jobs
            self.bundles += bundle

    def render(self, counts: Mapping[str, int]) -> str:
        """The text exposition: `counts` are the flock's jobs per status."""
        out: list[str] = []
        _family(out, "shepard_jobs", "gauge", "Jobs in the catalog, by status.")
        out += [f'shepard_jobs{{status="{s}"}} {n}' for s, n in counts.items()]
        with self._lock:
            _family(out, "shepard_submissions", "counter", "Submit requests that registered jobs.")
            out.append(f"shepard_submissions_total {self.submissions}")
            _family(out, "shepard_submitted_jobs", "counter", "Jobs registered through the API.")
            out.append(f"shepard_submitted_jobs_total {self.submitted_jobs}")
            _family(out, "shepard_bundles", "counter", "Bundles uploaded and registered.")
            out.append(f"shepard_bundles_total {self.bundles}")
            _family(out, "shepard_http_requests", "counter", "HTTP requests answered.")
            for (method, route, status), n in sorted(self.requests.items()):
                labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
                out.append(f"shepard_http_requests_total{{{labels}}} {n}")
            _family(
                out, "shepard_http_request_duration_seconds", "histogram",
                "Time to answer HTTP requests (streamed bodies: until the last byte).",
            )  # fmt: skip
            for route, buckets in sorted(self.latency.items()):
                _histogram(out, route, buckets, self.latency_sum[route])
        return "\n".join(out) + "\n"


def _family(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _histogram(out: list[str], route: str, buckets: list[int], total: float) -> None:
    name, label = "shepard_http_request_duration_seconds", f'route="{_escape(route)}"'
    running = 0
    for bound, n in zip((*BUCKETS, float("inf")), buckets, strict=True):
        running += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f'{name}_bucket{{{label},le="{le}"}} {running}')
    out.append(f"{name}_sum{{{label}}} {total:.6f}")
    out.append(f"{name}_count{{{label}}} {running}")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Timing:
    """ASGI middleware feeding `Metrics.observe` with each request's route template (not its
    path: job ids would make every request a new series), status and duration."""

    def __init__(
        self, app: ASGIApp, metrics: Metrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began, status = self.clock(), 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = getattr(scope.get("route"), "path", None) or "(unmatched)"
            self.metrics.observe(scope["method"], route, status, self.clock() - began)
