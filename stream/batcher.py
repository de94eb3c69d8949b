"""Dynamic batching: a bounded queue of pending windows and the inference worker thread.

The consumer thread submits :class:`~stream.detector.Pending` groups; the worker takes
them in order, waits at most ``max_wait_ms`` after the oldest for up to
``max_batch_size`` windows, scores them in one go (length-bucketed, fp16 + pinned
transfers on CUDA), and hands each group's alerts to ``on_done``. The queue never drops
and never grows without bound: when it holds more than ``max_queue_windows`` the
consumer stops fetching (see :attr:`InferenceWorker.full`) until it drains.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from stream.detector import Detector, Pending
from stream.metrics import Metrics

log = logging.getLogger(__name__)


class InferenceWorker(threading.Thread):
    """Scores pending windows in micro-batches on its own thread."""

    def __init__(self, detector: Detector, on_done: Callable[[Pending, list[dict]], None], *,
                 max_batch_size: int = 256, max_wait_ms: float = 20.0, max_queue_windows: int = 20_000,
                 metrics: Metrics | None = None) -> None:
        super().__init__(name="seqsentry-inference", daemon=True)
        self.detector = detector
        self.on_done = on_done
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_windows = max_queue_windows
        self.metrics = metrics
        self._queue: deque[Pending] = deque()
        self._queued_windows = 0
        self._in_flight = 0
        self._cv = threading.Condition()
        self._stopping = False
        self.error: BaseException | None = None

    # ---- consumer side -------------------------------------------------------------------
    def submit(self, pending: Pending) -> None:
        """Queue a group of windows (never blocks; the caller pauses on :attr:`full`)."""
        with self._cv:
            self._queue.append(pending)
            self._queued_windows += len(pending)
            self._cv.notify()
        if self.metrics:
            self.metrics.queue_depth.set(self._queued_windows)

    @property
    def queued_windows(self) -> int:
        return self._queued_windows

    @property
    def full(self) -> bool:
        return self._queued_windows >= self.max_queue_windows

    @property
    def drained_enough(self) -> bool:
        """Hysteresis: resume consumption only once the queue is down to half."""
        return self._queued_windows <= self.max_queue_windows // 2

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until everything submitted has been scored and handed on."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while (self._queue or self._in_flight) and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return self.error is None

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()

    # ---- worker ------------------------------------------------------------------------------
    def _take(self) -> list[Pending]:
        with self._cv:
            while not self._queue and not self._stopping:
                self._cv.wait(0.1)
            if not self._queue:
                return []
            first = self._queue[0].enqueued
            while (self._queued_windows < self.max_batch_size and not self._stopping
                   and time.monotonic() - first < self.max_wait):
                self._cv.wait(max(0.0, self.max_wait - (time.monotonic() - first)))
            batch, n = [], 0
            while self._queue and (not batch or n + len(self._queue[0]) <= self.max_batch_size):
                p = self._queue.popleft()
                batch.append(p)
                n += len(p)
            self._queued_windows -= n
            self._in_flight = len(batch)
        if self.metrics:
            self.metrics.queue_depth.set(self._queued_windows)
            self.metrics.batch_wait.observe(time.monotonic() - first)
        return batch

    def run(self) -> None:
        try:
            while True:
                batch = self._take()
                if not batch:
                    if self._stopping:
                        return
                    continue
                for p, found in zip(batch, self.detector.score(batch), strict=True):
                    self.on_done(p, found)
                with self._cv:
                    self._in_flight = 0
                    self._cv.notify_all()
        except BaseException as exc:  # surfaced to the service, which stops without committing
            log.exception("inference worker failed")
            self.error = exc
            with self._cv:
                self._in_flight = 0
                self._cv.notify_all()
