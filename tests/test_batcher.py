"""The request batcher with a fake backend: which graph each batch asks for, and when a batch waits."""
from __future__ import annotations

import threading
import time

import numpy as np

from recon_serve.backends.batcher import Batcher


class Fake:
    def __init__(self):
        self.calls, self.threads = [], []

    def infer(self, points, parts=False):
        self.calls.append((len(points), parts))
        self.threads.append(threading.get_ident())
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


class InProcess(Fake):
    runs_in_process = True


def test_a_lone_request_runs_on_the_callers_thread_and_any_company_goes_to_the_worker():
    import asyncio

    fake, remote = InProcess(), Fake()  # Fake has no runs_in_process: a remote backend
    b = Batcher(fake, max_batch=8, max_wait_ms=50, inline_max_points=16)
    x = _points(2)
    caller = threading.get_ident()
    try:
        out = asyncio.run(b.infer(x[0], alone=True))
        np.testing.assert_array_equal(out["embedding"], x[0].sum(0))
        assert fake.threads == [caller]

        asyncio.run(b.infer(x[0]))  # not alone: the worker
        with b.on_the_way():  # alone in the server, but another request is on its way to the batcher
            asyncio.run(b.infer(x[0], alone=True))
        asyncio.run(b.infer(np.zeros((17, 3), np.float32), alone=True))  # more points than inline_max_points
        assert caller not in fake.threads[1:] and len(fake.threads) == 4

        b.swap(remote)
        asyncio.run(b.infer(x[1], alone=True))  # a backend elsewhere never runs on the event loop
        assert remote.calls == [(1, False)] and remote.threads != [caller]
    finally:
        b.close()
