"""Collect concurrent requests into one inference call.

One worker thread takes the first waiting shape, then keeps collecting until `max_batch` shapes
are in or `max_wait_ms` has passed since that first one, and runs one `backend.infer` per point
count in the batch (the graph needs one N per call). A model call costs nearly the same for 1 or 8
small shapes on CPU, so under load this multiplies throughput; when idle a request waits at most
`max_wait_ms`. Callers get a concurrent Future (`submit`) or await `infer` from asyncio.
"""
from __future__ import annotations

import asyncio
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
                 on_batch: Callable[[int, float], None] | None = None):
        """on_batch(batch_size, seconds) is called after each inference (for metrics)."""
        self.backend = backend
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.on_batch = on_batch
        self._using = threading.Lock()  # held while a batch runs, so swap() waits for it
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recon-batcher", daemon=True)
        self._thread.start()

    def submit(self, points: np.ndarray) -> Future:
        """Future of the outputs for one prepared shape [N,3] (each output without the batch axis)."""
        future: Future = Future()
        self._queue.put((np.ascontiguousarray(points, dtype=np.float32), future))
        return future

    async def infer(self, points: np.ndarray) -> dict[str, np.ndarray]:
        return await asyncio.wrap_future(self.submit(points))

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
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
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
            groups: dict[int, list] = {}
            for points, future in items:
                if future.set_running_or_notify_cancel():
                    groups.setdefault(len(points), []).append((points, future))
            for group in groups.values():
                self._infer(group)
            if stop:
                return

    def _infer(self, group: list) -> None:
        t0 = time.perf_counter()
        try:
            with self._using:
                backend = self.backend
                out = backend.infer(np.stack([p for p, _ in group]))
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
