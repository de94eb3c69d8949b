"""Test doubles shared by the test modules, each pinned to the real class it stands in for.

A double may only have methods the real class has (:func:`mirrors`, checked by
tests/test_doubles.py), so a renamed or removed client method fails the tests instead of
leaving them green against an API that no longer exists. Where a test needs only state, it
gets the real objects (:func:`model_free_artifact`, :func:`partitions`), not a namespace.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from confluent_kafka import Producer

from stream.artifact import Artifact, Meta
from stream.detector import Detector, Pending
from stream.encoding import Vocabulary
from stream.metrics import Metrics
from stream.model import Scorer
from stream.runtime.commits import Ticket
from stream.runtime.config import ServiceConfig
from stream.runtime.rebuild import Partitions
from stream.windows import WindowConfig, Windows


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


class ModelFreeScorer:
    """Stands in for :class:`stream.model.Scorer` where nothing is scored (ingest, model swaps):
    it holds a real :class:`~stream.artifact.Artifact` (:func:`model_free_artifact`)."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact


def model_free_artifact(window: WindowConfig | None = None, vocab: Vocabulary | None = None, *,
                        version: str = "v1", kind: str = "classifier") -> Artifact:
    """A real artifact without a model: for code that reads only its meta, window and vocabulary."""
    meta = Meta(version=version, kind=kind, threshold=0.5, window=asdict(window or WindowConfig()))
    return Artifact(Path(f"model-free-{version}"), meta, vocab or Vocabulary(), model=None)  # type: ignore[arg-type]


def partitions(assigned: int = 0) -> Partitions:
    """Real partition state (a model-free detector makes its stores) with the first ``assigned``
    partitions of ``events`` assigned."""
    from confluent_kafka import TopicPartition

    p = Partitions(ServiceConfig(bootstrap="unused:9092"), Detector(ModelFreeScorer(model_free_artifact())),
                   metrics=Metrics(), finish=lambda: None)
    p.assigned = [TopicPartition("events", i) for i in range(assigned)]
    return p


#: the real classes the doubles above stand in for
PINNED = {FakeProducer: Producer, ModelFreeScorer: Scorer}


def pending(ticket: Ticket) -> Pending:
    """One window of user u1 (topic events, partition 0, offset 42) waiting for scoring under ``ticket``."""
    windows = Windows(user_id=["u1"], ts=np.zeros((1, 1), np.int64), type=np.zeros((1, 1), np.uint16),
                      item=np.zeros((1, 1), np.uint32), price=np.zeros((1, 1), np.float32),
                      label=np.zeros((1, 1), np.int8), length=np.array([1]))
    return Pending(windows=windows, type_names=["view"], event_time=np.array([1_000]), trigger_event=["e"],
                   event_ids=[None], topic="events", partition=0, offsets=np.array([42]),
                   kafka_ts=np.array([1_700_000_000_000]), ticket=ticket)
