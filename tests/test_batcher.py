"""The request batcher with a fake backend: which graph each batch asks for, and when a batch waits."""
from __future__ import annotations

import threading
import time

import numpy as np

from recon_serve.backends.batcher import Batcher


class Fake:
    def __init__(self):
        self.calls = []

    def infer(self, points, parts=False):
        self.calls.append((len(points), parts))
        out = {"embedding": points.sum(1)}
        return {**out, "part_logits": points} if parts else out


def _points(b: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(b, 16, 3)).astype(np.float32)


def test_segment_requests_run_on_the_parts_graph_and_the_rest_on_the_global_one():
    fake = Fake()
    b = Batcher(fake, max_batch=8, max_wait_ms=200)
    try:
        x = _points(3)
        with b.on_the_way() as t0, b.on_the_way() as t1, b.on_the_way() as t2:  # all three in one collection
            futures = [b.submit(x[0], ticket=t0), b.submit(x[1], parts=True, ticket=t1), b.submit(x[2], ticket=t2)]
        outs = [f.result(timeout=10) for f in futures]
    finally:
        b.close()
    assert sorted(fake.calls) == [(1, True), (2, False)]
    assert ["part_logits" in o for o in outs] == [False, True, False]
    np.testing.assert_array_equal(outs[2]["embedding"], x[2].sum(0))


def test_a_lone_request_does_not_wait_but_one_on_its_way_is_waited_for():
    fake = Fake()
    b = Batcher(fake, max_batch=8, max_wait_ms=3000)
    x = _points(2)
    try:
        t0 = time.perf_counter()
        b.submit(x[0]).result(timeout=10)
        assert time.perf_counter() - t0 < 1.0  # nobody on the way: no 3 s window

        with b.on_the_way() as late:  # a request still decoding when the first is submitted
            first = b.submit(x[0])
            threading.Timer(0.3, lambda: b.submit(x[1], ticket=late)).start()
            first.result(timeout=10)
    finally:
        b.close()
    assert fake.calls == [(1, False), (2, False)]  # the second batch held both
