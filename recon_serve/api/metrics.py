"""Prometheus metrics of one app, in its own registry (two apps in one process never collide)."""
from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGES = ("decode", "sample", "infer", "search", "text")
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("recon_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r)
        self.latency = Histogram("recon_request_seconds", "HTTP request latency by route", ["route"], buckets=_LATENCY, registry=r)
        self.stage = Histogram("recon_stage_seconds", "time per pipeline stage", ["stage"], buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("recon_batch_size", "shapes per model call", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.index_size = Gauge("recon_index_shapes", "shapes in the index", registry=r)
        self._stages = {s: self.stage.labels(s) for s in STAGES}  # labels() takes a lock and builds a key each call

    @contextmanager
    def time_stage(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._stages[stage].observe(time.perf_counter() - t0)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
