#!/usr/bin/env python3
"""A real OpenTelemetry client for the OTLP/HTTP ingestion test (tests/tests/e2e/otlp.rs).

The OpenTelemetry Python SDK (pinned in tests/otel/requirements.txt, installed
into .venv-otel/ by scripts/test-tools) records a known, deterministic set of
HTTP server requests with the semantic conventions' instruments and exports
them with its OTLP/HTTP protobuf exporter, configured only the way a user
would configure it, by the environment:

    OTEL_EXPORTER_OTLP_METRICS_ENDPOINT   http://…/proxy/metrics/<id>/v1/metrics
                                          (or http://…/v1/metrics)
    OTEL_EXPORTER_OTLP_METRICS_HEADERS    Authorization=Bearer%20<token>
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE   cumulative (default) | delta
    OTEL_EXPORTER_OTLP_METRICS_COMPRESSION              none (default) | gzip

Instruments (https://opentelemetry.io/docs/specs/semconv/http/http-metrics/):
  - http.server.request.duration  histogram, s; http.route,
    http.response.status_code, http.request.method (and url.scheme)
  - http.server.active_requests   up-down counter
  - http.server.request.body.size / http.server.response.body.size  histograms, By
  - e2e.unmapped.requests          a counter the service does not map (it must
                                   be ignored and named in errorMessage)

Requests are recorded in phases, each followed by force_flush() (one export
per phase: the periodic reader's own interval is an hour), so a cumulative
run sends the same series again and again with growing counts and the
service must turn them into deltas. The last phase comes from a second
MeterProvider — a restarted process: same resource, same series, a new
start time — which the service must count in full from its start (a reset).

--aggregation exponential adds a View with ExponentialBucketHistogramAggregation
for the duration histogram; explicit (the default) uses the semantic
conventions' advisory bucket boundaries.

Prints one JSON object to stdout: exactly what was recorded (counts per
status class and per route, bytes, the exact p95 as the interval between the
order statistics around its rank, and for explicit buckets the bucket that
holds it), what was exported (every request's status, partialSuccess,
the exponential histograms' smallest scale) and, with --save-bodies DIR,
the files holding each export's exact bytes and headers (for the test's
retries).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import sys
import time

import requests
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

# The semantic conventions' advisory boundaries for http.server.request.duration (s).
DURATION_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
BODY_BOUNDS = [0, 100, 1000, 10000, 100000, 1000000]

# route, method, median duration (s), status codes with weights
ROUTES = [
    ("/api/users/{id}", "GET", 0.040, [(200, 80), (304, 6), (404, 8), (500, 3), (503, 3)]),
    ("/api/users", "POST", 0.120, [(201, 70), (400, 15), (409, 5), (502, 10)]),
    ("/api/orders/{orderId}", "GET", 0.250, [(200, 85), (301, 5), (404, 5), (504, 5)]),
    ("/health", "GET", 0.002, [(200, 100)]),
    ("/ws", "GET", 0.008, [(101, 90), (426, 10)]),
]
WEIGHTS = [30, 15, 20, 25, 10]  # share of each route
CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"]
# requests per phase (the last from a restarted MeterProvider) and the
# number of requests in flight when each phase is exported
PHASES = [400, 250, 300, 120, 180]
ACTIVE = [3, 9, 4, 6, 2]
Q = 0.95


def status_class(code: int) -> str:
    return f"{code // 100}xx"


class RecordingSession(requests.Session):
    """A requests session (the exporter's `session` parameter) that keeps
    each export's exact bytes, headers and the service's answer."""

    def __init__(self) -> None:
        super().__init__()
        self.exports: list[dict] = []

    def request(self, method, url, **kwargs):  # type: ignore[override]
        response = super().request(method, url, **kwargs)
        data = kwargs.get("data") or b""
        headers = dict(kwargs.get("headers") or {})
        self.exports.append(
            {
                "url": url,
                "headers": {k.lower(): v for k, v in headers.items()},
                "body": bytes(data),
                "status": response.status_code,
                "contentType": response.headers.get("content-type", ""),
                "response": response.content,
            }
        )
        return response


def provider(session: RecordingSession, exponential: bool) -> MeterProvider:
    exporter = OTLPMetricExporter(session=session)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    views = []
    if exponential:
        views.append(
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExponentialBucketHistogramAggregation(),
            )
        )
    resource = Resource.create(
        {"service.name": "e2e-otlp-proxy", "service.instance.id": "e2e-instance-1"}
    )
    return MeterProvider(resource=resource, metric_readers=[reader], views=views)


class Instruments:
    def __init__(self, mp: MeterProvider) -> None:
        meter = mp.get_meter("e2e-otlp", "1.0.0")
        self.duration = meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BOUNDS,
        )
        self.active = meter.create_up_down_counter(
            "http.server.active_requests", unit="{request}", description="Active HTTP server requests."
        )
        self.request_size = meter.create_histogram(
            "http.server.request.body.size",
            unit="By",
            explicit_bucket_boundaries_advisory=BODY_BOUNDS,
        )
        self.response_size = meter.create_histogram(
            "http.server.response.body.size",
            unit="By",
            explicit_bucket_boundaries_advisory=BODY_BOUNDS,
        )
        self.unmapped = meter.create_counter("e2e.unmapped.requests", unit="{request}")
        self.level = 0


def rank_interval(values: list[float], q: float) -> tuple[float, float]:
    """The exact q-quantile as the interval between the order statistics
    around its rank, whichever rank convention a reader uses: q·(n−1)
    interpolated (floor and ceil) or nearest-rank ⌈q·n⌉."""
    s = sorted(values)
    n = len(s)
    ranks = {math.floor(q * (n - 1)), math.ceil(q * (n - 1)), max(0, math.ceil(q * n) - 1)}
    return s[min(ranks)], s[max(ranks)]


def bucket_of(value_s: float, bounds: list[float]) -> tuple[float, float | None]:
    """The explicit bucket (lower, upper] holding value_s: OTLP buckets are
    upper-inclusive; the first is (−∞, b0] (0 for durations), the last
    (b_last, +∞) (None)."""
    lower = 0.0
    for b in bounds:
        if value_s <= b:
            return lower, b
        lower = b
    return lower, None


def summarise(durations: list[float], exponential: bool) -> dict:
    lo, hi = rank_interval(durations, Q)
    out = {"p95LowMs": lo * 1000.0, "p95HighMs": hi * 1000.0}
    if not exponential:
        blo, _ = bucket_of(lo, DURATION_BOUNDS)
        _, bhi = bucket_of(hi, DURATION_BOUNDS)
        out["p95BucketMs"] = [blo * 1000.0, None if bhi is None else bhi * 1000.0]
    return out


def decode_export(export: dict) -> ExportMetricsServiceRequest:
    body = export["body"]
    if export["headers"].get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    return ExportMetricsServiceRequest.FromString(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--aggregation", choices=["explicit", "exponential"], default="explicit")
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--save-bodies", metavar="DIR", help="write each export's bytes and headers there")
    args = parser.parse_args()
    for var in ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"):
        if not os.environ.get(var):
            sys.exit(f"{var} must be set")
    exponential = args.aggregation == "exponential"
    rng = random.Random(args.seed)
    session = RecordingSession()

    durations: list[float] = []
    per_route: dict[str, dict] = {
        r[0]: {"requests": 0, "errors": 0, "statusCounts": dict.fromkeys(CLASSES, 0), "durations": []}
        for r in ROUTES
    }
    status_counts = dict.fromkeys(CLASSES, 0)
    sent = received = 0
    levels: list[int] = []
    exports_per_phase: list[int] = []
    started = time.time()

    mp = provider(session, exponential)
    inst = Instruments(mp)
    for phase, n in enumerate(PHASES):
        if phase == len(PHASES) - 1:
            # A restarted process: the first provider's last export, then a new
            # provider (a new start time) for the same resource and series.
            mp.shutdown()
            mp = provider(session, exponential)
            inst = Instruments(mp)
        for _ in range(n):
            route, method, median, codes = rng.choices(ROUTES, weights=WEIGHTS)[0]
            code = rng.choices([c for c, _ in codes], weights=[w for _, w in codes])[0]
            # log-normal around the route's median, a slow tail for errors;
            # rounded to the microsecond, never 0, at most 9 s (inside the
            # last bounded bucket)
            seconds = median * math.exp(rng.gauss(0.0, 0.8))
            if code >= 500:
                seconds *= 4.0
            seconds = min(max(round(seconds, 6), 0.000001), 9.0)
            req_bytes = 0 if method == "GET" else rng.randint(50, 5000)
            resp_bytes = 0 if code in (101, 204, 304) else rng.randint(20, 200_000)
            attrs = {
                "http.route": route,
                "http.request.method": method,
                "http.response.status_code": code,
                "url.scheme": "https",
            }
            inst.duration.record(seconds, attrs)
            inst.request_size.record(req_bytes, attrs)
            inst.response_size.record(resp_bytes, attrs)
            inst.unmapped.add(1, {"http.route": route})
            cls = status_class(code)
            durations.append(seconds)
            status_counts[cls] += 1
            r = per_route[route]
            r["requests"] += 1
            r["errors"] += int(code >= 500)
            r["statusCounts"][cls] += 1
            r["durations"].append(seconds)
            sent += resp_bytes
            received += req_bytes
        inst.active.add(ACTIVE[phase] - inst.level, {"http.request.method": "GET", "url.scheme": "https"})
        inst.level = ACTIVE[phase]
        levels.append(ACTIVE[phase])
        before = len(session.exports)
        if not mp.force_flush(timeout_millis=30_000):
            sys.exit(f"force_flush of phase {phase} failed")
        exports_per_phase.append(len(session.exports) - before)
        time.sleep(0.05)  # successive exports at distinct instants
    mp.shutdown()  # its final export: a cumulative one repeats the last values

    # What went over the wire: one export per body, its attempts in order
    # (the exporter itself retries a 429 or 503 with the same bytes); the
    # last attempt is the service's answer.
    attempts: list[list[dict]] = []
    for e in session.exports:
        if attempts and attempts[-1][-1]["body"] == e["body"]:
            attempts[-1].append(e)
        else:
            attempts.append([e])
    exports = []
    min_scale = None
    bodies = []
    for i, tries in enumerate(attempts):
        e = tries[-1]
        req = decode_export(e)
        points = 0
        names = set()
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    names.add(m.name)
                    kind = m.WhichOneof("data")
                    points += len(getattr(m, kind).data_points)
                    if kind == "exponential_histogram" and m.name == "http.server.request.duration":
                        for p in m.exponential_histogram.data_points:
                            if p.count:
                                min_scale = p.scale if min_scale is None else min(min_scale, p.scale)
        answer: dict = {"status": e["status"], "contentType": e["contentType"]}
        if e["status"] == 200 and "protobuf" in e["contentType"]:
            resp = ExportMetricsServiceResponse.FromString(e["response"])
            answer["rejectedDataPoints"] = resp.partial_success.rejected_data_points
            answer["errorMessage"] = resp.partial_success.error_message
        else:
            answer["body"] = e["response"][:500].decode("utf-8", "replace")
        exports.append(
            {
                "url": e["url"],
                "contentType": e["headers"].get("content-type"),
                "contentEncoding": e["headers"].get("content-encoding"),
                "bytes": len(e["body"]),
                "dataPoints": points,
                "metrics": sorted(names),
                "attempts": [t["status"] for t in tries],
                "answer": answer,
            }
        )
        if args.save_bodies:
            os.makedirs(args.save_bodies, exist_ok=True)
            path = os.path.join(args.save_bodies, f"export-{i:02}.bin")
            with open(path, "wb") as f:
                f.write(e["body"])
            keep = {k: v for k, v in e["headers"].items() if k in ("content-type", "content-encoding")}
            bodies.append({"path": path, "headers": keep})

    routes_out = {}
    for route, r in per_route.items():
        if r["requests"] == 0:
            continue
        routes_out[route] = {
            "requests": r["requests"],
            "errors": r["errors"],
            "statusCounts": r["statusCounts"],
            **summarise(r["durations"], exponential),
        }
    result = {
        "aggregation": args.aggregation,
        "temporality": os.environ.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative").lower(),
        "startedAt": started,
        "endedAt": time.time(),
        "requests": len(durations),
        "errors": status_counts["5xx"],
        "statusCounts": status_counts,
        **summarise(durations, exponential),
        "durationBoundsMs": [b * 1000.0 for b in DURATION_BOUNDS],
        "minScale": min_scale,
        "dataTransferredBytes": sent,
        "dataReceivedBytes": received,
        "activeLevels": levels,
        "peakActive": max(levels),
        "routes": routes_out,
        "exportsPerPhase": exports_per_phase,
        "exports": exports,
        "bodies": bodies,
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
