"""Inference worker: batches by size and wait, keeps order, signals backpressure, surfaces failures."""

from __future__ import annotations

import threading
import time

import numpy as np

from stream.batcher import InferenceWorker
from stream.detector import Pending
from stream.windows import Windows


def pending(n: int) -> Pending:
    z = np.zeros((n, 4), dtype=np.int64)
    w = Windows([f"u{i}" for i in range(n)], z, z.astype(np.uint16), z.astype(np.uint32), z.astype(np.float32),
                z.astype(np.int8), np.ones(n, dtype=np.int64))
    return Pending(w, ["<other>"], np.zeros(n, dtype=np.int64), [""] * n, [None] * n)


class FakeDetector:
    def __init__(self, delay=0.0, fail=False):
        self.batches = []
        self.delay = delay
        self.fail = fail

    def score(self, pendings):
        if self.fail:
            raise RuntimeError("model exploded")
        time.sleep(self.delay)
        self.batches.append([len(p) for p in pendings])
        return [[] for _ in pendings]


def test_groups_are_batched_up_to_max_batch_size_in_order():
    det, done = FakeDetector(), []
    w = InferenceWorker(det, lambda p, a: done.append(p), max_batch_size=10, max_wait_ms=50)
    groups = [pending(4) for _ in range(6)]
    for g in groups:
        w.submit(g)
    w.start()
    assert w.drain(5)
    w.stop()
    assert done == groups
    assert all(sum(b) <= 10 for b in det.batches) and sum(map(sum, det.batches)) == 24


def test_a_lone_group_waits_at_most_max_wait():
    det, done = FakeDetector(), threading.Event()
    w = InferenceWorker(det, lambda p, a: done.set(), max_batch_size=1000, max_wait_ms=30)
    w.start()
    t0 = time.monotonic()
    w.submit(pending(1))
    assert done.wait(2)
    assert time.monotonic() - t0 < 0.5
    w.stop()


def test_queue_reports_full_and_drained_with_hysteresis():
    w = InferenceWorker(FakeDetector(delay=0.05), lambda p, a: None, max_batch_size=8, max_queue_windows=40)
    for _ in range(10):
        w.submit(pending(5))
    assert w.full and not w.drained_enough
    w.start()
    assert w.drain(10)
    assert not w.full and w.drained_enough
    w.stop()


def test_a_failing_model_is_surfaced_not_swallowed():
    w = InferenceWorker(FakeDetector(fail=True), lambda p, a: None)
    w.start()
    w.submit(pending(2))
    assert not w.drain(5)
    assert isinstance(w.error, RuntimeError)
