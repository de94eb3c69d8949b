"""The consumer side of `seqsentry run`, without a broker: the group consumer's settings and what a stop says."""

from __future__ import annotations

import logging
import threading

import pytest

from stream import kafka
from stream.metrics import Metrics
from stream.runtime.commits import CommitTracker, DetectorFailed
from stream.runtime.config import ServiceConfig
from stream.runtime.consumer import ConsumerLoop
from stream.service import group_consumer
from tests.doubles import partitions


class RecordingConsumer:
    """Stands in for confluent_kafka.Consumer: keeps the configuration it was built with."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def subscribe(self, topics, on_assign=None, on_revoke=None) -> None:
        self.topics = topics

    def commit(self, *, offsets, asynchronous) -> None:
        pass


@pytest.fixture
def built(monkeypatch):
    """The configuration group_consumer() hands librdkafka."""
    monkeypatch.setattr(kafka, "Consumer", RecordingConsumer)
    return lambda cfg: group_consumer(cfg).config


def test_a_new_group_reads_the_whole_topic_by_default(built):
    assert built(ServiceConfig(bootstrap="k:9092"))["auto.offset.reset"] == "earliest"


def test_offset_reset_reaches_the_consumer_config(built):
    assert built(ServiceConfig(bootstrap="k:9092", offset_reset="latest"))["auto.offset.reset"] == "latest"


def test_an_explicit_librdkafka_auto_offset_reset_wins_over_offset_reset(built):
    cfg = ServiceConfig(bootstrap="k:9092", offset_reset="latest", kafka_options={"auto.offset.reset": "earliest"})
    assert built(cfg)["auto.offset.reset"] == "earliest"


def test_the_faust_runtime_reads_first_what_offset_reset_says(tmp_path, monkeypatch):
    from stream import faust_app

    monkeypatch.setattr(faust_app.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    app = faust_app.build_app(ServiceConfig(bootstrap="k:9092", offset_reset="latest"), None, Metrics())
    assert app.conf.consumer_auto_offset_reset == "latest"


class BusyWorker:
    """An inference worker with windows still queued."""

    queued_windows = 1_200
    error = None

    def drain(self, timeout: float) -> bool:
        return True


class BusyOutputs:
    """Outputs with alerts and dead letters the broker has not acknowledged yet."""

    undelivered = 35
    errors = None

    def flush(self, timeout: float) -> int:
        return 0


def test_a_stop_with_a_backlog_says_what_it_waits_for(caplog):
    commits = CommitTracker(Metrics())
    for offset in range(3):
        commits.open({("events", 0): offset})  # consumed batches, none completed yet
    loop = ConsumerLoop(ServiceConfig(bootstrap="k:9092"), RecordingConsumer({}), None, BusyWorker(), BusyOutputs(),
                        commits, partitions(), Metrics())
    stopping = threading.Event()
    stopping.set()  # Ctrl-C before the first turn
    with caplog.at_level(logging.INFO, logger="stream.runtime.consumer"):
        loop.run(stopping)
    assert [r.getMessage() for r in caplog.records] == [
        "stopping: waiting for 1,200 windows queued for scoring and their alerts (35 outputs unacknowledged), "
        "then committing 3 consumed batches"]


class FailedWorker:
    """An inference worker that has failed; records every drain asked of it."""

    queued_windows = 40
    error = RuntimeError("model raised")

    def __init__(self) -> None:
        self.drains: list[float] = []

    def drain(self, timeout: float) -> bool:
        self.drains.append(timeout)
        return False


class QuietOutputs:
    """Outputs with no fatal Kafka error; records every flush asked of them."""

    undelivered = 0

    def __init__(self) -> None:
        self.errors = type("Errors", (), {"fatal": None})()
        self.flushes: list[float] = []

    def fatal_reason(self, error) -> str:
        return str(error)

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        return 0

    def poll(self, timeout: float = 0.0) -> None:
        pass


def test_after_a_failure_the_closes_revoke_finishes_and_commits_nothing():
    commits = CommitTracker(Metrics())
    commits.open({("events", 0): 7})  # a consumed batch its failed worker will never complete
    worker, outputs = FailedWorker(), QuietOutputs()
    loop = ConsumerLoop(ServiceConfig(bootstrap="k:9092"), RecordingConsumer({}), None, worker, outputs,
                        commits, partitions(), Metrics())
    with pytest.raises(DetectorFailed, match="model raised"):
        loop.run(threading.Event())
    loop.finish_in_flight()  # what consumer.close() runs through on_revoke
    assert (worker.drains, outputs.flushes, commits.outstanding) == ([], [], 1)
