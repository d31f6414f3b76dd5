"""Collect concurrent requests into one inference call.

One worker thread takes the first waiting shape, then keeps collecting until `max_batch` shapes
are in or `max_wait_ms` has passed since that first one, and runs one `backend.infer` per point
count and graph in the batch (the graph needs one N per call; segment requests ask for the parts
graph, every other request the smaller global one). A model call costs nearly the same for 1 or 8
small shapes on CPU, so under load this multiplies throughput. The wait is only for requests on
their way: a caller holds `on_the_way()` from the start of its decode/sampling to its submit, and
while no request is on its way a batch runs at once, so a lone request never waits for nobody (at
most `max_wait_ms` when some are). Callers get a concurrent Future (`submit`) or await `infer`.

A lone request (`infer(..., alone=True)`: the only one in the server, the worker idle, nothing queued
or on its way) of at most `inline_max_points` points runs on the caller's thread instead, when the
backend computes in this process: the two thread hand-offs (a wake-up of the worker, then of the event
loop) cost a request a few tenths of a millisecond on 2 cores (`bench/bench_server.py --compare-inline`
measures it). The event loop then waits for one batch-1 model call, which any request arriving
meanwhile would have waited for anyway; requests whose heads arrived meanwhile are not alone, so a
burst still batches.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)
_STOP = object()


class Outputs(dict):
    """One shape's outputs, plus the backend that made them: its version and labels belong to the
    answer even when a deploy swaps the model while the request waits."""

    backend = None


class Batcher:
    def __init__(self, backend, max_batch: int = 16, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None, inline_max_points: int = 0):
        """on_batch(batch_size, seconds) is called after each inference (for metrics); inline_max_points:
        the largest lone request run on the caller's thread (0: every request goes to the worker)."""
        self.backend = backend
        self.inline_max_points = max(0, int(inline_max_points))
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._using = threading.Lock()  # held while a batch runs, so swap() waits for it
        self._lock = threading.Lock()  # a submit's put and its leaving the on-the-way count are one step
        self._coming = 0  # requests on their way to submit (see on_the_way)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recon-batcher", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def on_the_way(self):
        """Hold around a request's way to submit (decode, sampling) and pass what it yields to
        submit: batches being collected wait for it (up to max_wait_ms)."""
        ticket = {"submitted": False}
        with self._lock:
            self._coming += 1
        try:
            yield ticket
        finally:
            with self._lock:
                if not ticket["submitted"]:
                    self._coming -= 1

    def submit(self, points: np.ndarray, parts: bool = False, ticket: dict | None = None) -> Future:
        """Future of the outputs for one prepared shape [N,3] (each output without the batch axis);
        parts=True: with part_logits (see Backend.infer); ticket: from on_the_way."""
        future: Future = Future()
        item = (np.ascontiguousarray(points, dtype=np.float32), bool(parts), future)
        with self._lock:
            self._queue.put(item)
            if ticket is not None and not ticket["submitted"]:
                ticket["submitted"] = True
                self._coming -= 1
        return future

    async def infer(self, points: np.ndarray, parts: bool = False, ticket: dict | None = None,
                    alone: bool = False) -> dict[str, np.ndarray]:
        """submit's outputs, awaited; alone=True: the caller's request is the only one in flight."""
        if alone and len(points) <= self.inline_max_points:
            out = self._run_inline(points, parts, ticket)
            if out is not None:
                return out
        return await asyncio.wrap_future(self.submit(points, parts, ticket))

    def _run_inline(self, points: np.ndarray, parts: bool, ticket: dict | None) -> Outputs | None:
        """One shape's outputs computed on this thread, or None (submit instead) unless the worker is
        idle, nothing is queued and no other request is on its way, and the backend runs in-process."""
        if not getattr(self.backend, "runs_in_process", False):
            return None  # a remote backend (Triton) would block the event loop on the network
        with self._lock:
            mine = ticket is not None and not ticket["submitted"]
            if not self._queue.empty() or self._coming != int(mine) or not self._using.acquire(blocking=False):
                return None
            if mine:
                ticket["submitted"] = True
                self._coming -= 1
        try:
            backend, t0 = self.backend, time.perf_counter()  # swap() waits for _using: this is the one to use
            out = backend.infer(np.ascontiguousarray(points, dtype=np.float32)[None], parts=parts)
        finally:
            self._using.release()
        if self.on_batch:
            self.on_batch(1, time.perf_counter() - t0)
        item = Outputs({k: v[0] for k, v in out.items()})
        item.backend = backend
        return item

    def swap(self, backend):
        """Send later batches to `backend`; returns the old one, no longer in use (close it)."""
        with self._using:
            old, self.backend = self.backend, backend
        return old

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _collect(self, first) -> tuple[list, bool]:
        items, deadline = [first], time.monotonic() + self.max_wait
        while len(items) < self.max_batch:
            remaining = deadline - time.monotonic()
            with self._lock:
                wait = remaining > 0 and self._coming > 0  # else: take what is queued, wait for no one
            try:
                item = self._queue.get(timeout=remaining) if wait else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            items.append(item)
        return items, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items, stop = self._collect(first)
            groups: dict[tuple[int, bool], list] = {}
            for points, parts, future in items:
                if future.set_running_or_notify_cancel():
                    groups.setdefault((len(points), parts), []).append((points, future))
            for (_, parts), group in groups.items():
                self._infer(group, parts)
            if stop:
                return

    def _infer(self, group: list, parts: bool) -> None:
        t0 = time.perf_counter()
        try:
            with self._using:
                backend = self.backend
                out = backend.infer(np.stack([p for p, _ in group]), parts=parts)
        except Exception as e:  # every waiting request gets the fault, the worker lives on
            log.exception("inference failed for a batch of %d", len(group))
            for _, future in group:
                future.set_exception(e)
            return
        if self.on_batch:
            self.on_batch(len(group), time.perf_counter() - t0)
        for i, (_, future) in enumerate(group):
            item = Outputs({k: v[i] for k, v in out.items()})
            item.backend = backend
            future.set_result(item)
