"""The server's shared resources for decoding and scoring, without HTTP.

* :class:`PixelBudget`: decoding and preprocessing hold pixels from a fixed budget (the pixel limit), so
  a few large images are decoded one after another instead of together.
* :class:`MicroBatcher`: one thread runs the model; requests that arrive while it is busy, or within a
  few milliseconds of each other, are scored together in one call, heatmaps included (one backward pass
  per batch).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import numpy as np


class PixelBudget:
    """A counting semaphore measured in pixels: at most ``capacity`` pixels being decoded at once.

    A request holds ``min(pixels, capacity)`` while it decodes and preprocesses, so one image at the
    pixel limit is decoded alone, and many small ones together.
    """

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._free = self.capacity
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int | None) -> Iterator[None]:
        """Hold ``pixels`` (all of the budget when unknown) for the block, waiting until they are free."""
        need = self.capacity if pixels is None else max(1, min(int(pixels), self.capacity))
        with self._cond:
            while self._free < need:
                self._cond.wait()
            self._free -= need
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()


class MicroBatcher:
    """Score images one model call at a time, several requests per call.

    One worker thread takes the first waiting image, then every image already waiting, and waits up
    to ``wait_s`` for more, up to ``max_batch``; the engine scores them as one ``(B, S, S)`` batch,
    and the heatmap engine draws the heatmaps of those that asked for one as one batch too (one
    forward and one backward pass per batch and model, not per image).  With ``max_batch=1``
    requests are scored one at a time, in arrival order.  The engines are called from the worker
    thread only (the server's are a :class:`~thyro.use.scoring.Scorer`'s ``score`` and ``explain``,
    which hold its lock, so a heatmap never overlaps a batch).

    Parameters
    ----------
    engine : callable
        ``uint8 (B, S, S) -> probabilities (B,)``.
    max_batch : int
        The most images per call, at least 1 (checked by the settings that give it).
    wait_s : float
        How long a batch waits for company once it has one image (0: only what is already queued).
    heatmap_engine : callable, optional
        ``uint8 (B, S, S) -> heatmaps (B, S, S)``, for images submitted with ``heatmap=True``.
    """

    def __init__(self, engine: Callable[[np.ndarray], np.ndarray], max_batch: int = 8, wait_s: float = 0.005,
                 heatmap_engine: Callable[[np.ndarray], np.ndarray] | None = None):
        self.engine = engine
        self.heatmap_engine = heatmap_engine
        self.max_batch = int(max_batch)
        self.wait_s = max(0.0, float(wait_s))
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="thyro-batcher", daemon=True)
        self._thread.start()
        self.calls = 0
        self.images = 0
        self.heatmap_calls = 0
        self.heatmap_images = 0

    def submit(self, image: np.ndarray, heatmap: bool = False) -> Future:
        """Queue one ``(S, S)`` uint8 image; the future gives its probability, or with ``heatmap``
        ``(probability, heatmap)``."""
        if heatmap and self.heatmap_engine is None:
            raise ValueError("this batcher has no heatmap engine")
        future: Future = Future()
        self._queue.put((np.asarray(image), future, bool(heatmap)))
        return future

    def __call__(self, image: np.ndarray, heatmap: bool = False):
        return self.submit(image, heatmap).result()

    def close(self) -> None:
        """Stop the worker after the images already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _gather(self, first) -> tuple[list, bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first) if self.max_batch > 1 else ([first], False)
            live = [item for item in batch if item[1].set_running_or_notify_cancel()]
            if live:
                try:
                    stack = np.stack([img for img, _, _ in live])
                    want = [k for k, (_, _, cam) in enumerate(live) if cam]
                    probs = np.asarray(self.engine(stack), dtype=float).reshape(-1)
                    cams = self.heatmap_engine(stack[want]) if want else []
                    self.calls += 1
                    self.images += len(live)
                    self.heatmap_calls += bool(want)
                    self.heatmap_images += len(want)
                    heat = dict(zip(want, cams))
                    for k, ((_, fut, cam), p) in enumerate(zip(live, probs)):
                        fut.set_result((float(p), heat[k]) if cam else float(p))
                except BaseException as exc:  # every waiting request gets the error, the worker goes on
                    for _, fut, _ in live:
                        fut.set_exception(exc)
            if stop:
                return
