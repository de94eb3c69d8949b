"""Test doubles shared by the test modules, each pinned to the real class it stands in for.

A double may only have methods the real class has (:func:`mirrors`, checked by
tests/test_doubles.py), so a renamed or removed client method fails the tests instead of
leaving them green against an API that no longer exists.
"""

from __future__ import annotations

import numpy as np
from confluent_kafka import Producer

from stream.detector import Pending
from stream.runtime.commits import Ticket
from stream.windows import Windows


def mirrors(double: type, real: type) -> list[str]:
    """Public methods of ``double`` that ``real`` does not have (empty when it is pinned)."""
    own = [n for n, v in vars(double).items() if callable(v) and not n.startswith("_")]
    return [n for n in own if not hasattr(real, n)]


class FakeProducer:
    """Records messages; acknowledges them (or fails them) when polled, as librdkafka does."""

    def __init__(self, fail: str | None = None, raises: list[BaseException] | None = None) -> None:
        self.sent: list[dict] = []
        self._callbacks: list = []
        self.fail = fail
        self.raises = list(raises or [])  # raised by the next produce() calls, one each

    def produce(self, topic, value, key, headers=None, on_delivery=None):
        if self.raises:
            raise self.raises.pop(0)
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        self._callbacks.append(on_delivery)

    def poll(self, timeout=0.0):
        callbacks, self._callbacks = self._callbacks, []
        for cb in callbacks:
            cb(self.fail, None)
        return len(callbacks)

    def flush(self, timeout):
        self.poll()
        return 0


#: the real classes the doubles above stand in for
PINNED = {FakeProducer: Producer}


def pending(ticket: Ticket) -> Pending:
    """One window of user u1 (topic events, partition 0, offset 42) waiting for scoring under ``ticket``."""
    windows = Windows(user_id=["u1"], ts=np.zeros((1, 1), np.int64), type=np.zeros((1, 1), np.uint16),
                      item=np.zeros((1, 1), np.uint32), price=np.zeros((1, 1), np.float32),
                      label=np.zeros((1, 1), np.int8), length=np.array([1]))
    return Pending(windows=windows, type_names=["view"], event_time=np.array([1_000]), trigger_event=["e"],
                   event_ids=[None], topic="events", partition=0, offsets=np.array([42]),
                   kafka_ts=np.array([1_700_000_000_000]), ticket=ticket)
